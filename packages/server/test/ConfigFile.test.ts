import { describe, expect, it } from "@effect/vitest"
import { Config, StateStore, Topology } from "@sluice/core"
import { Providers } from "@sluice/providers"
import { ConfigProvider, Context, Effect, Either, Layer, Option, Redacted } from "effect"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import * as ConfigFile from "../src/ConfigFile.js"
import * as Access from "../src/Access.js"
import * as Sluice from "../src/Sluice.js"

const shipped = (name: string) => fileURLToPath(new URL(`../config/${name}`, import.meta.url))

/** Exactly these variables as the environment: nothing leaks in from the machine running the tests. */
const onlyEnvironment = (vars: Readonly<Record<string, string>>) =>
  Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(vars))))

/** The variables the example's header says to set on its run line (`NAME=... npx sluice serve ...`). */
const documentedVariables = (text: string): ReadonlyArray<string> => {
  const line = /^#\s+((?:[A-Z_]+=\.\.\. )+)npx sluice serve --config \S+$/m.exec(text)
  if (line === null) throw new Error("example.yaml has no run line in its header")
  return line[1]!
    .trim()
    .split(" ")
    .map((assignment) => assignment.split("=")[0]!)
}

/** The access rules of a config, with the keys its environment holds (as the server builds them). */
const accessOf = (config: Config.ConfigFile) =>
  Effect.gen(function* () {
    const environment = yield* Config.readEnvironment(config)
    if (environment.problems.length > 0)
      return yield* new Config.ConfigError({ source: "environment", problems: environment.problems })
    const store = yield* StateStore.makeMemory
    return Access.make({
      server: config.server,
      environment,
      local: store.local,
      poolOf: () => undefined,
      upstreams: new Map()
    })
  })

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

  it.scoped("the example runs with just the variables its header documents: topology and gateway options build", () =>
    Effect.gen(function* () {
      const text = readFileSync(shipped("example.yaml"), "utf8")
      const documented = documentedVariables(text)
      const env = Object.fromEntries(documented.map((name) => [name, `key-of-${name}`]))
      const config = yield* ConfigFile.load(shipped("example.yaml")).pipe(onlyEnvironment(env))
      // Every variable the file names is on the run line, and nothing more is needed.
      const named = [
        ...config.server.priorities.map((p) => p.apiKeyEnv),
        ...config.upstreams.flatMap((u) => (u.apiKeyEnv === undefined ? [] : [u.apiKeyEnv]))
      ]
      expect([...new Set(named)].sort()).toEqual([...documented].sort())
      // As the server builds it: with the provider kinds, whose endpoints fill in a missing baseUrl.
      const topology = yield* Topology.fromConfig(config, { providers: Providers.kinds }).pipe(onlyEnvironment(env))
      const keyOf = (id: string) => Option.map(topology.upstreams.get(id)!.apiKey, Redacted.value)
      expect(keyOf("openai-4o")).toEqual(Option.some("key-of-OPENAI_API_KEY"))
      expect(keyOf("groq-llama")).toEqual(Option.some("key-of-GROQ_API_KEY"))
      expect(keyOf("claude-sonnet")).toEqual(Option.some("key-of-ANTHROPIC_API_KEY"))
      expect(topology.upstreams.get("claude-sonnet")?.baseUrl).toBe("https://api.anthropic.com/v1")
      expect(topology.upstreams.get("local-ollama")?.capabilities).toEqual(["tools", "json_schema"])
      expect(keyOf("local-ollama")).toEqual(Option.none())
      expect(topology.pools.get("smart")?.upstreams.map((u) => u.id)).toEqual([
        "openai-4o",
        "groq-llama",
        "local-ollama",
        "local-vllm"
      ])
      const access = yield* accessOf(config).pipe(onlyEnvironment(env))
      expect(access.required).toBe(false)
    })
  )

  it.scoped("the example's commented-out priorities work once uncommented, and need their variable", () =>
    Effect.gen(function* () {
      const text = readFileSync(shipped("example.yaml"), "utf8")
        .replace("  # priorities:", "  priorities:")
        .replace("  #   - { apiKeyEnv: SLUICE_PRIORITY_KEY", "    - { apiKeyEnv: SLUICE_PRIORITY_KEY")
      const config = Either.getOrThrow(ConfigFile.parse(text, "example.yaml"))
      expect(config.server.priorities).toEqual([{ apiKeyEnv: "SLUICE_PRIORITY_KEY", priority: 10 }])
      const keys = { OPENAI_API_KEY: "o", GROQ_API_KEY: "g", ANTHROPIC_API_KEY: "a", GEMINI_API_KEY: "m" }
      const missing = yield* Effect.flip(accessOf(config).pipe(onlyEnvironment(keys)))
      expect(missing.problems).toEqual([
        "server.priorities[0].apiKeyEnv: environment variable SLUICE_PRIORITY_KEY is not set"
      ])
      const access = yield* accessOf(config).pipe(onlyEnvironment({ ...keys, SLUICE_PRIORITY_KEY: "vip-client-key" }))
      const priorityOf = (key: string) => {
        const client = access.authenticate({ authorization: `Bearer ${key}` })
        return client instanceof Access.Refusal ? undefined : access.priority(client, {})
      }
      expect(priorityOf("vip-client-key")).toBe(10)
      expect(priorityOf("someone-else")).toBeUndefined()
    })
  )

  it.effect("reports every missing variable of upstreams and priorities together, by path, without values", () =>
    Effect.gen(function* () {
      const config = Either.getOrThrow(
        Config.decode({
          server: {
            priorities: [
              { apiKeyEnv: "TEAM_A_KEY", priority: 5 },
              { apiKeyEnv: "TEAM_B_KEY", priority: 1 }
            ]
          },
          upstreams: [
            { id: "a", provider: "openai", baseUrl: "https://api.openai.com/v1", apiKeyEnv: "OPENAI_KEY" },
            { id: "b", provider: "groq", baseUrl: "https://api.groq.com/openai/v1", apiKeyEnv: "GROQ_KEY" }
          ],
          pools: [{ id: "p", models: ["m"], upstreams: ["a", "b"] }]
        })
      )
      const env = { TEAM_A_KEY: "team-a-secret", GROQ_KEY: "" }
      const expected = [
        "server.priorities[1].apiKeyEnv: environment variable TEAM_B_KEY is not set",
        "upstreams[0].apiKeyEnv: environment variable OPENAI_KEY is not set",
        "upstreams[1].apiKeyEnv: environment variable GROQ_KEY is empty"
      ]
      // Whichever layer the gateway builds first, it names them all.
      const fromTopology = yield* Effect.flip(Topology.fromConfig(config).pipe(onlyEnvironment(env)))
      expect(fromTopology.problems).toEqual(expected)
      const fromGateway = yield* Effect.flip(accessOf(config).pipe(onlyEnvironment(env)))
      expect(fromGateway.problems).toEqual(expected)
      expect(fromGateway.message).not.toContain("team-a-secret")
    })
  )

  it("lists an unknown strategy with the other problems, by path, and accepts custom names when told them", () => {
    const yaml = [
      "upstreams:",
      "  - { id: u, provider: azure }",
      "pools:",
      "  - { id: a, models: [x], strategy: cheapest, upstreams: [u, w] }"
    ].join("\n")
    const result = ConfigFile.parse(yaml, "my.yaml")
    expect(Either.isLeft(result) && result.left.problems).toEqual([
      "upstreams[0].baseUrl: required for provider 'azure'",
      "pools[0].strategy: unknown strategy 'cheapest'; known: round-robin, weighted, random, priority, least-connections, latency, p2c, least-tokens, cost, headroom, consistent-hash",
      "pools[0].upstreams[1]: unknown upstream 'w'; known: u"
    ])
    const custom = ConfigFile.parse(
      yaml.replace("provider: azure", "provider: simulated").replace(", w]", "]"),
      "my.yaml",
      {
        strategies: ["round-robin", "cheapest"]
      }
    )
    expect(Either.isRight(custom)).toBe(true)
  })

  it("checks upstreams against the shipped provider kinds: unknown kinds and bad simulate settings by path, with the rest", () => {
    const yaml = [
      "upstreams:",
      "  - { id: a, provider: opneai, baseUrl: https://api.openai.com/v1 }",
      "  - { id: b, provider: simulated, simulate: { failureRate: 2, latencyMs: 5 } }",
      "  - { id: c, provider: openai-compatible, weight: -1 }",
      "pools:",
      "  - { id: p, models: [x], upstreams: [a, b, c, d] }"
    ].join("\n")
    const result = ConfigFile.parse(yaml, "my.yaml")
    expect(Either.isLeft(result) && result.left.problems).toEqual([
      "upstreams[2].weight: Expected a positive number, actual -1",
      `upstreams[0].provider: unknown provider 'opneai'; known: ${Providers.kinds.map((k) => k.name).join(", ")}`,
      "upstreams[1].simulate.failureRate: Expected a number between 0 and 1, actual 2",
      "upstreams[2].baseUrl: required for provider 'openai-compatible'",
      "pools[0].upstreams[3]: unknown upstream 'd'; known: a, b, c"
    ])
    expect(Providers.kinds.map((k) => k.name)).toEqual([
      "openai",
      "openai-compatible",
      "azure",
      "groq",
      "mistral",
      "together",
      "deepseek",
      "openrouter",
      "fireworks",
      "cerebras",
      "xai",
      "cohere",
      "vllm",
      "lmstudio",
      "ollama",
      "anthropic",
      "gemini",
      "simulated"
    ])
  })

  it("accepts a custom provider kind when told it, keeping the shipped kinds and strategies checked", () => {
    const yaml = [
      "upstreams:",
      "  - { id: a, provider: acme }",
      "  - { id: b, provider: openai-compatible }",
      "pools:",
      "  - { id: p, models: [x], strategy: fastest, upstreams: [a, b] }"
    ].join("\n")
    const result = ConfigFile.parse(yaml, "my.yaml", {
      providers: [...Providers.kinds, { name: "acme", needsBaseUrl: false }]
    })
    expect(Either.isLeft(result) && result.left.problems).toEqual([
      "upstreams[1].baseUrl: required for provider 'openai-compatible'",
      "pools[0].strategy: unknown strategy 'fastest'; known: round-robin, weighted, random, priority, least-connections, latency, p2c, least-tokens, cost, headroom, consistent-hash"
    ])
  })

  it.scopedLive(
    "starts the simulators of the embedded default from their simulate settings, marked simulated by their kind",
    () =>
      Effect.gen(function* () {
        const config = yield* ConfigFile.load(ConfigFile.defaultPath)
        const context = yield* Layer.build(Sluice.layerTopology(config))
        const topology = Context.get(context, Topology.Topology)
        const simulators = Context.get(context, Sluice.Simulators)
        expect(simulators.map((s) => s.upstream)).toEqual(config.upstreams.map((u) => u.id))
        expect([...topology.upstreams.values()].every((u) => u.simulated)).toBe(true)
        const first = config.upstreams[0]!
        expect(first["simulate"]).toMatchObject({ latencyMs: 20 })
        expect(simulators[0]!.simulator.options()).toMatchObject({ name: first.id, latencyMs: 20 })
      })
  )

  it.effect("refuses to start simulators from settings that were never checked, naming each by path", () =>
    Effect.gen(function* () {
      // Decoded without the provider kinds, as code may: nothing checked the settings yet.
      const config = Either.getOrThrow(
        Config.decode({
          upstreams: [
            { id: "a", provider: "simulated", simulate: { failureRate: 2 } },
            { id: "b", provider: "simulated", simulate: { rpm: 0, jitter: true } }
          ],
          pools: [{ id: "p", models: ["m"], upstreams: ["a", "b"] }]
        })
      )
      const error = yield* Effect.flip(Effect.scoped(Sluice.startSimulators(config)))
      expect(error).toMatchObject({
        _tag: "ConfigError",
        problems: [
          "upstreams[0].simulate.failureRate: Expected a number between 0 and 1, actual 2",
          expect.stringMatching(/^upstreams\[1\]\.simulate\.jitter: is unexpected, expected: /),
          "upstreams[1].simulate.rpm: Expected a positive number, actual 0"
        ]
      })
    })
  )

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
