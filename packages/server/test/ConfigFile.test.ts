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
