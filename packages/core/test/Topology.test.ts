import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Option, Redacted, Schema } from "effect"
import { inspect } from "node:util"
import { Config, Topology } from "../src/index.js"

const SECRET = "sk-test-0123456789abcdef"

/** Provider kinds as a providers package registers them. */
const providers: ReadonlyArray<Config.ProviderKind> = [
  { name: "openai", needsBaseUrl: true },
  { name: "groq", needsBaseUrl: true },
  { name: "simulated", needsBaseUrl: false, simulated: true, options: { key: "simulate", schema: Schema.Struct({}) } }
]

const config = Either.getOrThrow(
  Config.decode(
    {
      upstreams: [
        { id: "openai-1", provider: "openai", baseUrl: "https://api.openai.com/v1/", apiKeyEnv: "OPENAI_API_KEY" },
        { id: "groq-1", provider: "groq", baseUrl: "https://api.groq.com/openai/v1", apiKeyEnv: "GROQ_API_KEY" },
        { id: "sim-1", provider: "simulated", weight: 2, contextWindow: 8192 }
      ],
      pools: [
        { id: "gpt", models: ["gpt-4o"], upstreams: ["openai-1", "groq-1"], fallback: "sim" },
        { id: "sim", models: ["sim-model"], upstreams: ["sim-1"], maxAttempts: 5 }
      ]
    },
    "config",
    { providers }
  )
)

const environment = (vars: Record<string, string>) =>
  Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(vars))))

/** As the server calls it: the URLs of the simulators it started, and the kinds. */
const started = { baseUrls: new Map([["sim-1", "http://127.0.0.1:4001/v1"]]), providers }

describe("Topology.fromConfig", () => {
  it.effect("reads each apiKeyEnv variable as a Redacted API key", () =>
    Effect.gen(function* () {
      const topology = yield* Topology.fromConfig(config, started)
      const openai = topology.upstreams.get("openai-1")!
      expect(Option.map(openai.apiKey, Redacted.value)).toEqual(Option.some(SECRET))
      expect(Option.map(topology.upstreams.get("groq-1")!.apiKey, Redacted.value)).toEqual(Option.some("gsk-other"))
      expect(Option.isNone(topology.upstreams.get("sim-1")!.apiKey)).toBe(true)
    }).pipe(environment({ OPENAI_API_KEY: SECRET, GROQ_API_KEY: "gsk-other" }))
  )

  it.effect(
    "gives an upstream's own capabilities list the finer ones its coarse ones imply, within what its kind can express",
    () =>
      Effect.gen(function* () {
        const kinds: ReadonlyArray<Config.ProviderKind> = [
          { name: "openai", needsBaseUrl: true },
          { name: "local", needsBaseUrl: true, capabilities: ["vision", "tools", "json_schema"] }
        ]
        const listed = Either.getOrThrow(
          Config.decode(
            {
              upstreams: [
                { id: "seeing", provider: "openai", baseUrl: "https://a.test/v1", capabilities: ["vision", "tools"] },
                { id: "text", provider: "openai", baseUrl: "https://b.test/v1", capabilities: [] },
                { id: "local", provider: "local", baseUrl: "https://c.test/v1", capabilities: ["vision", "tools"] },
                { id: "open", provider: "openai", baseUrl: "https://d.test/v1" }
              ],
              pools: [{ id: "p", models: ["m"], upstreams: ["seeing", "text", "local", "open"] }]
            },
            "config",
            { providers: kinds }
          )
        )
        const topology = yield* Topology.fromConfig(listed, { baseUrls: new Map(), providers: kinds })
        const capabilities = (id: string) => topology.upstreams.get(id)!.capabilities
        expect(capabilities("seeing")).toEqual(["vision", "tools", "image_url", "file", "tool_choice", "logprobs"])
        expect(capabilities("text")).toEqual(["logprobs"])
        // The kind cannot express an image by URL, a file part, a forced tool call or logprobs.
        expect(capabilities("local")).toEqual(["vision", "tools"])
        expect(capabilities("open")).toBeUndefined()
      })
  )

  it.effect("never shows the API key when an upstream or the topology is printed, serialized or inspected", () =>
    Effect.gen(function* () {
      const topology = yield* Topology.fromConfig(config, started)
      const openai = topology.upstreams.get("openai-1")!
      const renderings = [
        String(openai),
        `${Option.getOrThrow(openai.apiKey)}`,
        JSON.stringify(openai),
        JSON.stringify({ pools: [...topology.pools.values()], upstreams: [...topology.upstreams.values()] }),
        inspect(openai, { depth: 10 }),
        inspect(topology, { depth: 10 })
      ]
      for (const text of renderings) expect(text).not.toContain(SECRET)
      expect(JSON.stringify(openai)).toContain("<redacted>")
    }).pipe(environment({ OPENAI_API_KEY: SECRET, GROQ_API_KEY: "gsk-other" }))
  )

  it.effect("fails naming upstreams[i].apiKeyEnv and the variable for every key that is not set", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Topology.fromConfig(config, started))
      expect(error._tag).toBe("ConfigError")
      expect(error.source).toBe("environment")
      expect(error.problems).toEqual([
        "upstreams[0].apiKeyEnv: environment variable OPENAI_API_KEY is not set",
        "upstreams[1].apiKeyEnv: environment variable GROQ_API_KEY is not set"
      ])
    }).pipe(environment({}))
  )

  it.effect("resolves pools with their upstreams, defaults and fallbacks", () =>
    Effect.gen(function* () {
      const topology = yield* Topology.fromConfig(config, started)
      const gpt = topology.pools.get("gpt")!
      expect(gpt.upstreams.map((u) => u.id)).toEqual(["openai-1", "groq-1"])
      expect(gpt).toMatchObject({ name: "gpt", strategy: "round-robin", fallback: "sim", maxAttempts: 2 })
      expect(topology.pools.get("sim")!.maxAttempts).toBe(5)
      // The trailing slash is dropped so paths can be appended.
      expect(gpt.upstreams[0]!.baseUrl).toBe("https://api.openai.com/v1")
      expect(gpt.upstreams[0]).toMatchObject({ name: "openai-1", weight: 1, priority: 0, enabled: true })
      expect(gpt.upstreams[0]).toMatchObject({ timeoutMs: 60_000, headers: {}, limits: {}, simulated: false })
      const sim = topology.upstreams.get("sim-1")!
      expect(sim).toMatchObject({ baseUrl: "http://127.0.0.1:4001/v1", weight: 2, contextWindow: 8192 })
      expect(sim.simulated).toBe(true)
    }).pipe(environment({ OPENAI_API_KEY: SECRET, GROQ_API_KEY: "gsk-other" }))
  )

  it.effect("fails when an upstream has neither a baseUrl in the config nor one supplied for it", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Topology.fromConfig(config, { providers }))
      expect(error.problems).toEqual(["upstreams[2].baseUrl: 'sim-1' has no URL; set one in the config"])
    }).pipe(environment({ OPENAI_API_KEY: SECRET, GROQ_API_KEY: "gsk-other" }))
  )

  it.effect("marks an upstream simulated only when its provider kind says so, not by its name", () =>
    Effect.gen(function* () {
      const told = yield* Topology.fromConfig(config, started)
      expect([...told.upstreams.values()].map((u) => [u.id, u.simulated])).toEqual([
        ["openai-1", false],
        ["groq-1", false],
        ["sim-1", true]
      ])
      const untold = yield* Topology.fromConfig(config, { baseUrls: started.baseUrls })
      expect([...untold.upstreams.values()].every((u) => !u.simulated)).toBe(true)
      // The kind's description decides, whatever its name.
      const renamed = yield* Topology.fromConfig(config, {
        ...started,
        providers: [
          { name: "openai", needsBaseUrl: true },
          { name: "groq", needsBaseUrl: true, simulated: true },
          { name: "simulated", needsBaseUrl: false }
        ]
      })
      expect(renamed.upstreams.get("sim-1")!.simulated).toBe(false)
      expect(renamed.upstreams.get("groq-1")!.simulated).toBe(true)
    }).pipe(environment({ OPENAI_API_KEY: SECRET, GROQ_API_KEY: "gsk-other" }))
  )
})
