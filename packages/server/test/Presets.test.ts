/** Provider presets: a cloud's endpoint, auth header and quirks from nothing but `provider:` and a key. */
import { describe, expect, it } from "@effect/vitest"
import { Topology } from "@sluice/core"
import { Providers } from "@sluice/providers"
import { Effect, Either } from "effect"
import type { IncomingHttpHeaders } from "node:http"
import * as ConfigFile from "../src/ConfigFile.js"
import { completionJson, simulatedConfig, startGateway, startUpstream } from "./harness.js"

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

interface Seen {
  readonly url: string
  readonly headers: IncomingHttpHeaders
  readonly body: Record<string, unknown>
}

/** A stand-in OpenAI-compatible upstream that records what it receives and answers "ok". */
const recording = Effect.gen(function* () {
  const seen: Array<Seen> = []
  const { baseUrl } = yield* startUpstream((request, body, response) => {
    const parsed = JSON.parse(body) as Record<string, unknown>
    seen.push({ url: request.url ?? "", headers: request.headers, body: parsed })
    const chunk = (delta: object, finish: string | null = null) =>
      `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", created: 1, model: "m", choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`
    if (parsed["stream"] === true) {
      response.writeHead(200, { "content-type": "text/event-stream" })
      return response.end(chunk({ role: "assistant", content: "ok" }) + chunk({}, "stop") + "data: [DONE]\n\n")
    }
    response.writeHead(200, { "content-type": "application/json" })
    response.end(completionJson(1, 1))
  })
  return { origin: baseUrl.replace(/\/v1$/, ""), seen }
})

describe("provider presets", () => {
  it.effect("gives an upstream that sets no baseUrl its cloud's endpoint", () =>
    Effect.gen(function* () {
      const yaml = [
        "upstreams:",
        "  - { id: g, provider: groq, model: llama-3.3-70b-versatile }",
        "  - { id: c, provider: anthropic }",
        "  - { id: m, provider: gemini }",
        "  - { id: o, provider: ollama }",
        "pools:",
        "  - { id: p, models: [x], upstreams: [g, c, m, o] }"
      ].join("\n")
      const config = ConfigFile.parse(yaml, "presets.yaml")
      expect(Either.isRight(config)).toBe(true)
      const topology = yield* Topology.fromConfig(Either.getOrThrow(config), { providers: Providers.kinds })
      expect([...topology.upstreams.values()].map((u) => u.baseUrl)).toEqual([
        "https://api.groq.com/openai/v1",
        "https://api.anthropic.com/v1",
        "https://generativelanguage.googleapis.com/v1beta",
        "http://localhost:11434"
      ])
    })
  )

  it.live("calls Azure OpenAI at its deployment URL with api-version and the api-key header", () =>
    Effect.gen(function* () {
      const upstream = yield* recording
      const gateway = yield* startGateway(
        simulatedConfig(
          [
            {
              id: "azure",
              provider: "azure",
              baseUrl: `${upstream.origin}/openai/deployments/gpt-4o?api-version=2024-10-21`,
              apiKeyEnv: "SLUICE_TEST_AZURE_KEY"
            }
          ],
          [{ id: "chat", models: ["gpt-4o"], upstreams: ["azure"] }]
        ),
        { env: { SLUICE_TEST_AZURE_KEY: "azure-key-0123456789" } }
      )
      yield* promise(() =>
        gateway.client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "Hi" }] })
      )
      expect(upstream.seen[0]?.url).toBe("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21")
      expect(upstream.seen[0]?.headers["api-key"]).toBe("azure-key-0123456789")
      expect(upstream.seen[0]?.headers["authorization"]).toBeUndefined()
    }).pipe(Effect.scoped)
  )

  it.live("leaves stream_options out of what goes to Mistral, which refuses it", () =>
    Effect.gen(function* () {
      const upstream = yield* recording
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "mistral", provider: "mistral", baseUrl: `${upstream.origin}/v1` }],
          [{ id: "chat", models: ["mistral-small"], upstreams: ["mistral"] }]
        )
      )
      const stream = yield* promise(() =>
        gateway.client.chat.completions.create({
          model: "mistral-small",
          messages: [{ role: "user", content: "Hi" }],
          stream: true,
          stream_options: { include_usage: true }
        })
      )
      let content = ""
      yield* promise(async () => {
        for await (const chunk of stream) content += chunk.choices[0]?.delta.content ?? ""
      })
      expect(content).toBe("ok")
      expect(upstream.seen[0]?.body).toMatchObject({ stream: true })
      expect(upstream.seen[0]?.body["stream_options"]).toBeUndefined()
    }).pipe(Effect.scoped)
  )
})
