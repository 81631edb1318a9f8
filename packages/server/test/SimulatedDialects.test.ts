/**
 * `simulate: { dialect }` in a config file: a simulated upstream the gateway starts in process speaks
 * Anthropic's, Gemini's or Ollama's own API and is called as that provider — so a config alone runs
 * a pool of differently shaped upstreams, with no real provider and no key.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either, Effect } from "effect"
import { Topology } from "@sluice/core"
import { ConfigFile } from "../src/index.js"
import { startGateway, streamed } from "./harness.js"

const yaml = (dialect: string) =>
  [
    "upstreams:",
    `  - { id: sim, provider: simulated, simulate: { dialect: ${dialect}, completionTokens: 3 } }`,
    "pools:",
    "  - { id: chat, models: [gpt-4o-mini], upstreams: [sim] }"
  ].join("\n")

const paths = { anthropic: "/v1/messages", gemini: "/v1beta/models/gpt-4o-mini:generateContent", ollama: "/api/chat" }

describe.each(["anthropic", "gemini", "ollama"] as const)("simulate.dialect: %s in a config file", (dialect) => {
  it.live("runs a simulator of that API, called as that provider, whole and streamed", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(Either.getOrThrow(ConfigFile.parse(yaml(dialect), "dialect.yaml")))
      const answer = yield* Effect.promise(() =>
        gateway.client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
      )
      expect(answer.choices[0]?.message.content).toBe("[sim] lorem ipsum")
      const sim = gateway.simulator("sim")
      expect(sim.options().dialect).toBe(dialect)
      expect(sim.requests().at(-1)?.path).toBe(paths[dialect])
      const stream = yield* streamed(gateway.client)
      expect(stream).toMatchObject({ upstream: "sim", content: "[sim] lorem ipsum", finishReason: "stop" })
      // Called as its dialect's provider, and still shown as simulated.
      expect(gateway.service(Topology.Topology).upstreams.get("sim")).toMatchObject({
        provider: dialect,
        simulated: true
      })
    }).pipe(Effect.scoped)
  )
})

describe("simulate.dialect checks", () => {
  it("refuses an unknown dialect by path, naming the choices", () => {
    const result = ConfigFile.parse(yaml("cohere"), "dialect.yaml")
    expect(Either.isLeft(result) && result.left.problems).toEqual([
      'upstreams[0].simulate.dialect: Expected one of "openai", "anthropic", "gemini", "ollama", actual "cohere"'
    ])
  })
})
