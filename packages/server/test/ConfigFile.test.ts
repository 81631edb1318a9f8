import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import * as ConfigFile from "../src/ConfigFile.js"

const shipped = (name: string) => fileURLToPath(new URL(`../config/${name}`, import.meta.url))

describe("config files", () => {
  it.effect("the embedded default decodes: simulated upstreams only, no API key needed", () =>
    Effect.gen(function* () {
      const config = yield* ConfigFile.load(ConfigFile.defaultPath)
      expect(config.upstreams.every((u) => u.provider === "simulated" && u.apiKeyEnv === undefined)).toBe(true)
      expect(config.server.port).toBe(8080)
    })
  )

  it("the documented example with real providers decodes, every stage setting included", () => {
    const result = ConfigFile.parse(readFileSync(shipped("example.yaml"), "utf8"), "example.yaml")
    expect(Either.isRight(result)).toBe(true)
    const config = Either.getOrThrow(result)
    const smart = config.pools.find((p) => p.id === "smart")!
    expect(smart.retry?.initialBackoffMs).toBe(200)
    expect(smart.sticky?.key).toBe("header")
    expect(config.upstreams.find((u) => u.id === "local-ollama")?.healthCheck?.type).toBe("http")
  })

  it("lists an unknown strategy with the other problems, by path, and accepts custom names when told them", () => {
    const yaml = [
      "upstreams:",
      "  - { id: u, provider: openai }",
      "pools:",
      "  - { id: a, models: [x], strategy: cheapest, upstreams: [u, w] }"
    ].join("\n")
    const result = ConfigFile.parse(yaml, "my.yaml")
    expect(Either.isLeft(result) && result.left.problems).toEqual([
      "upstreams[0].baseUrl: required for provider 'openai'",
      "pools[0].strategy: unknown strategy 'cheapest'; known: round-robin, weighted, random, priority",
      "pools[0].upstreams[1]: unknown upstream 'w'; known: u"
    ])
    const custom = ConfigFile.parse(
      yaml.replace("provider: openai", "provider: simulated").replace(", w]", "]"),
      "my.yaml",
      {
        strategies: ["round-robin", "cheapest"]
      }
    )
    expect(Either.isRight(custom)).toBe(true)
  })

  it("reports YAML syntax errors as a config problem, not a crash", () => {
    const result = ConfigFile.parse("pools: [unclosed", "broken.yaml")
    expect(Either.isLeft(result) && result.left.problems[0]).toMatch(/^\(file\): not valid YAML or JSON/)
  })

  it.effect("PORT and HOST from the environment override the file", () =>
    Effect.gen(function* () {
      process.env["PORT"] = "9191"
      process.env["HOST"] = "0.0.0.0"
      const config = yield* ConfigFile.load(ConfigFile.defaultPath).pipe(
        Effect.ensuring(
          Effect.sync(() => {
            delete process.env["PORT"]
            delete process.env["HOST"]
          })
        )
      )
      expect(config.server).toMatchObject({ port: 9191, host: "0.0.0.0" })
    })
  )
})
