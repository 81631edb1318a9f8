import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import { Config, Wire } from "../src/index.js"

/** Provider kinds as a providers package registers them: core knows none of its own. */
const kinds: ReadonlyArray<Config.ProviderKind> = [
  { name: "openai", needsBaseUrl: true },
  { name: "ollama", needsBaseUrl: true },
  {
    name: "simulated",
    needsBaseUrl: false,
    simulated: true,
    options: {
      key: "simulate",
      schema: Schema.Struct({
        latencyMs: Schema.optional(Schema.Number.pipe(Schema.nonNegative())),
        failureRate: Schema.optional(Schema.Number.pipe(Schema.between(0, 1)))
      })
    }
  }
]

/** A config as it comes out of a YAML parser: plain objects, only what the user wrote. */
const valid = () => ({
  upstreams: [
    { id: "openai-1", provider: "openai", baseUrl: "https://api.openai.com/v1", apiKeyEnv: "OPENAI_API_KEY" },
    { id: "sim-1", provider: "simulated", weight: 3, priority: 1, enabled: false, timeoutMs: 5000 }
  ],
  pools: [
    {
      id: "gpt",
      models: ["gpt-4o", "gpt-4o-*"],
      aliases: { fast: "gpt-4o-mini" },
      upstreams: ["openai-1", "sim-1"],
      fallback: "backup"
    },
    { id: "backup", models: ["backup-model"], strategy: "weighted", upstreams: ["sim-1"] }
  ]
})

const problemsOf = (input: unknown, options?: Config.DecodeOptions): ReadonlyArray<string> => {
  const result = Config.decode(input, "config", options)
  if (Either.isRight(result)) throw new Error("expected the config to be rejected")
  return result.left.problems
}

describe("Config.decode", () => {
  it("decodes a valid config and applies the documented defaults", () => {
    const config = Either.getOrThrow(Config.decode(valid()))
    expect(config.server).toEqual({
      host: "127.0.0.1",
      port: 8080,
      maxBodyBytes: 4 * 1024 * 1024,
      priorities: [],
      auth: { open: false, keys: [] },
      audit: { sink: "off", maxBytes: 10 * 1024 * 1024, files: 5, keep: 1000, content: false },
      log: { level: "info", format: "pretty", access: true },
      tracing: { healthChecks: 0 },
      drainMs: 30_000
    })
    expect(config.upstreams[0]).toEqual({
      id: "openai-1",
      provider: "openai",
      baseUrl: "https://api.openai.com/v1",
      apiKeyEnv: "OPENAI_API_KEY",
      weight: 1,
      priority: 0,
      enabled: true,
      timeoutMs: 60_000
    })
    // Values the user wrote win over defaults.
    expect(config.upstreams[1]).toMatchObject({ weight: 3, priority: 1, enabled: false, timeoutMs: 5000 })
    expect(config.pools[0]).toMatchObject({ strategy: "round-robin", aliases: { fast: "gpt-4o-mini" } })
    expect(config.pools[1]).toMatchObject({ strategy: "weighted", aliases: {} })
  })

  it("keeps server settings the user wrote and defaults the rest", () => {
    const config = Either.getOrThrow(Config.decode({ ...valid(), server: { port: 9000 } }))
    expect(config.server).toMatchObject({
      host: "127.0.0.1",
      port: 9000,
      maxBodyBytes: 4 * 1024 * 1024,
      priorities: []
    })
  })

  it("reports every schema problem by path in one ConfigError, and nothing else", () => {
    const input = valid()
    const result = Config.decode(
      {
        ...input,
        upstreams: [input.upstreams[0], { id: "sim-1", provider: "simulated", weight: -3 }],
        pools: [{ id: "gpt", upstreams: ["openai-1"], bogus: true }]
      },
      "sluice.yaml"
    )
    if (Either.isRight(result)) throw new Error("expected the config to be rejected")
    const error = result.left
    expect(error._tag).toBe("ConfigError")
    expect(error.source).toBe("sluice.yaml")
    expect(error.problems).toContain("upstreams[1].weight: Expected a positive number, actual -3")
    expect(error.problems).toContain("pools[0].models: is missing")
    expect(error.problems).toContainEqual(expect.stringMatching(/^pools\[0\]\.bogus: is unexpected/))
    // One line per problem: no "Expected undefined" echo of the optional field's other alternative.
    expect(error.problems).toHaveLength(3)
    // The message names the source and lists each problem on its own line.
    expect(error.message).toContain("invalid configuration in sluice.yaml")
    for (const problem of error.problems) expect(error.message).toContain(`  - ${problem}`)
  })

  it("reports problems in nested optional sections at their own path", () => {
    const input = valid()
    const problems = problemsOf({
      ...input,
      server: { port: 70_000 },
      upstreams: [{ ...input.upstreams[0], limits: { rpm: 0 }, contextWindow: -1 }, input.upstreams[1]]
    })
    expect(problems).toEqual([
      "server.port: Expected a number between 0 and 65535, actual 70000",
      "upstreams[0].limits.rpm: Expected a positive number, actual 0",
      "upstreams[0].contextWindow: Expected a positive number, actual -1"
    ])
  })

  it("decodes a pool's hedge, defaulting maxExtraPercent to 10, and explains every wrong setting by path", () => {
    const input = valid()
    const withHedge = (hedge: unknown) => ({ ...input, pools: [{ ...input.pools[0], hedge }, input.pools[1]] })
    const decoded = Config.decode(withHedge({ afterPercentile: 95 }))
    if (Either.isLeft(decoded)) throw decoded.left
    expect(decoded.right.pools[0]?.hedge).toEqual({ afterPercentile: 95, maxExtraPercent: 10 })
    expect(decoded.right.pools[1]?.hedge).toBeUndefined()
    expect(Either.isRight(Config.decode(withHedge({ afterMs: 500, maxExtraPercent: 5 })))).toBe(true)
    const both =
      "pools[0].hedge: set exactly one of afterMs (a fixed delay, e.g. 500) or afterPercentile (of the pool's recent time to first content, e.g. 95)"
    expect(problemsOf(withHedge({ afterMs: 500, afterPercentile: 95 }))).toEqual([both])
    expect(problemsOf(withHedge({}))).toEqual([both])
    expect(problemsOf(withHedge({ afterPercentile: 100, maxExtraPercent: 0 }))).toEqual([
      "pools[0].hedge.afterPercentile: expected a percentile between 0 and 100 (exclusive), e.g. 95; got 100",
      "pools[0].hedge.maxExtraPercent: expected a percentage above 0 and at most 100, e.g. 10; got 0"
    ])
    expect(problemsOf(withHedge({ afterMs: -1, after: 3 }))).toEqual([
      'pools[0].hedge.after: is unexpected, expected: "afterMs" | "afterPercentile" | "maxExtraPercent" | "ejectAfterLosses" | "ejectMs" | "maxEjectedPercent"',
      "pools[0].hedge.afterMs: Expected a positive number, actual -1"
    ])
  })

  it("decodes a pool's hedge ejection settings, absent unless written (the router's defaults apply), and explains wrong ones by path", () => {
    const input = valid()
    const withHedge = (hedge: unknown) => ({ ...input, pools: [{ ...input.pools[0], hedge }, input.pools[1]] })
    const decoded = Config.decode(
      withHedge({ afterMs: 400, ejectAfterLosses: 0, ejectMs: 60_000, maxEjectedPercent: 34 })
    )
    if (Either.isLeft(decoded)) throw decoded.left
    expect(decoded.right.pools[0]?.hedge).toEqual({
      afterMs: 400,
      maxExtraPercent: 10,
      ejectAfterLosses: 0,
      ejectMs: 60_000,
      maxEjectedPercent: 34
    })
    expect(problemsOf(withHedge({ afterMs: 400, ejectAfterLosses: 1.5, ejectMs: 0, maxEjectedPercent: 0 }))).toEqual([
      "pools[0].hedge.ejectAfterLosses: Expected an integer, actual 1.5",
      "pools[0].hedge.ejectMs: Expected a positive number, actual 0",
      "pools[0].hedge.maxEjectedPercent: expected a percentage above 0 and at most 100, e.g. 50; got 0"
    ])
    expect(problemsOf(withHedge({ afterMs: 400, ejectAfterLosses: -1, maxEjectedPercent: 101 }))).toEqual([
      "pools[0].hedge.ejectAfterLosses: Expected a non-negative number, actual -1",
      "pools[0].hedge.maxEjectedPercent: expected a percentage above 0 and at most 100, e.g. 50; got 101"
    ])
  })

  it("reports an unknown key at the root", () => {
    expect(problemsOf({ ...valid(), listen: 8080 })).toEqual([
      expect.stringMatching(/^listen: is unexpected, expected: "server" \| "upstreams" \| "pools"$/)
    ])
  })

  it("reports a pool that references an unknown upstream, listing the known ones", () => {
    const input = valid()
    const problems = problemsOf({
      ...input,
      pools: [{ ...input.pools[0], upstreams: ["openai-1", "openai-2"] }, input.pools[1]]
    })
    expect(problems).toEqual(["pools[0].upstreams[1]: unknown upstream 'openai-2'; known: openai-1, sim-1"])
  })

  it("reports a fallback to an unknown pool", () => {
    const input = valid()
    const problems = problemsOf({ ...input, pools: [{ ...input.pools[0], fallback: "nowhere" }, input.pools[1]] })
    expect(problems).toEqual(["pools[0].fallback: unknown pool 'nowhere'; known: gpt, backup"])
  })

  it("reports a fallback cycle a -> b -> a on every pool of the cycle", () => {
    const input = valid()
    const problems = problemsOf({
      ...input,
      pools: [input.pools[0], { ...input.pools[1], fallback: "gpt" }]
    })
    expect(problems).toEqual([
      "pools[0].fallback: fallback chain has a cycle: gpt -> backup -> gpt",
      "pools[1].fallback: fallback chain has a cycle: backup -> gpt -> backup"
    ])
  })

  it("reports a pool that falls back to itself, and every pool whose chain runs into it", () => {
    const input = valid()
    const problems = problemsOf({ ...input, pools: [input.pools[0], { ...input.pools[1], fallback: "backup" }] })
    expect(problems).toEqual([
      "pools[0].fallback: fallback chain has a cycle: gpt -> backup -> backup",
      "pools[1].fallback: fallback chain has a cycle: backup -> backup"
    ])
  })

  it("reports duplicate upstream and pool ids by path", () => {
    const input = valid()
    const problems = problemsOf({
      ...input,
      upstreams: [...input.upstreams, { id: "sim-1", provider: "simulated" }],
      pools: [...input.pools, { id: "gpt", models: ["other"], upstreams: ["sim-1"] }]
    })
    expect(problems).toContain("upstreams[2].id: duplicate upstream id 'sim-1'")
    expect(problems).toContain("pools[2].id: duplicate pool id 'gpt'")
  })

  it("requires a baseUrl for the provider kinds that need one, and only for those", () => {
    const problems = problemsOf(
      {
        upstreams: [
          { id: "a", provider: "openai" },
          { id: "b", provider: "ollama" },
          { id: "c", provider: "simulated" }
        ],
        pools: [{ id: "p", models: ["m"], upstreams: ["a", "b", "c"] }]
      },
      { providers: kinds }
    )
    expect(problems).toEqual([
      "upstreams[0].baseUrl: required for provider 'openai'",
      "upstreams[1].baseUrl: required for provider 'ollama'"
    ])
  })

  it("reports an unknown provider kind by path, listing the known kinds", () => {
    const input = valid()
    const problems = problemsOf(
      { ...input, upstreams: [{ ...input.upstreams[0], provider: "opneai" }, input.upstreams[1]] },
      { providers: kinds }
    )
    expect(problems).toEqual(["upstreams[0].provider: unknown provider 'opneai'; known: openai, ollama, simulated"])
  })

  it("decodes a kind's settings with its schema, reporting each problem by path with the other problems", () => {
    const input = valid()
    const simulated = { id: "sim-1", provider: "simulated", simulate: { latencyMs: -1, failureRate: 2, jitter: 1 } }
    // Well-formed otherwise: the settings are the only problems.
    expect(problemsOf({ ...input, upstreams: [input.upstreams[0], simulated] }, { providers: kinds })).toEqual([
      'upstreams[1].simulate.jitter: is unexpected, expected: "latencyMs" | "failureRate"',
      "upstreams[1].simulate.latencyMs: Expected a non-negative number, actual -1",
      "upstreams[1].simulate.failureRate: Expected a number between 0 and 1, actual 2"
    ])
    // With schema problems and broken references elsewhere: all of them in one pass.
    const problems = problemsOf(
      {
        ...input,
        upstreams: [
          { ...input.upstreams[0], weight: 0 },
          { ...simulated, simulate: { failureRate: 2 } }
        ],
        pools: [{ ...input.pools[0], upstreams: ["openai-1", "gone"] }, input.pools[1]]
      },
      { providers: kinds }
    )
    expect(problems).toEqual([
      "upstreams[0].weight: Expected a positive number, actual 0",
      "upstreams[1].simulate.failureRate: Expected a number between 0 and 1, actual 2",
      "pools[0].upstreams[1]: unknown upstream 'gone'; known: openai-1, sim-1"
    ])
  })

  it("rejects a key that is neither core's nor the upstream's kind's, naming the provider", () => {
    const input = valid()
    const problems = problemsOf(
      {
        ...input,
        upstreams: [
          { ...input.upstreams[0], simulate: { latencyMs: 5 } },
          { ...input.upstreams[1], wieght: 3 }
        ]
      },
      { providers: kinds }
    )
    expect(problems).toEqual([
      expect.stringMatching(
        /^upstreams\[0\]\.simulate: is unexpected for provider 'openai', expected: "id" \| "name" \| /
      ),
      expect.stringMatching(
        /^upstreams\[1\]\.wieght: is unexpected for provider 'simulated', expected: .*\| "simulate"$/
      )
    ])
  })

  it("without the kinds, checks no provider kind and carries other keys as written", () => {
    const config = Either.getOrThrow(
      Config.decode({
        upstreams: [{ id: "x", provider: "acme", simulate: { anything: true } }],
        pools: [{ id: "p", models: ["m"], upstreams: ["x"] }]
      })
    )
    expect(config.upstreams[0]).toMatchObject({ provider: "acme", simulate: { anything: true } })
    expect(config.upstreams[0]!.baseUrl).toBeUndefined()
  })

  it("requires the provider to be a non-empty string", () => {
    const input = valid()
    const problems = problemsOf(
      { ...input, upstreams: [{ ...input.upstreams[0], provider: "" }, input.upstreams[1]] },
      { providers: kinds }
    )
    expect(problems).toEqual([expect.stringMatching(/^upstreams\[0\]\.provider: Expected a non empty string/)])
  })

  it("decodes one upstream's settings for whoever uses them: the value, none when absent, or the problems by path", () => {
    const options = kinds[2]!.options!
    expect(Config.decodeProviderOptions(options, { simulate: { latencyMs: 5 } }, 3)).toEqual(
      Either.right({ latencyMs: 5 })
    )
    expect(Config.decodeProviderOptions(options, {}, 3)).toEqual(Either.right(undefined))
    expect(Config.decodeProviderOptions(options, { simulate: { failureRate: 2 } }, 3)).toEqual(
      Either.left(["upstreams[3].simulate.failureRate: Expected a number between 0 and 1, actual 2"])
    )
  })

  it("rejects a baseUrl that is not an http(s) URL", () => {
    const input = valid()
    const problems = problemsOf({
      ...input,
      upstreams: [{ ...input.upstreams[0], baseUrl: "api.openai.com/v1" }, input.upstreams[1]]
    })
    expect(problems).toEqual(["upstreams[0].baseUrl: expected an http(s) URL"])
  })

  it("reports schema problems, provider kinds and broken references together, and a bad literal once with the choices", () => {
    const result = Config.decode(
      {
        upstreams: [
          { id: "a", provider: "openai", weight: -3 },
          { id: "a", provider: "nope", baseUrl: "http://x/v1", healthCheck: { type: "icmp" } }
        ],
        pools: [{ id: "p", models: ["m"], upstreams: ["a", "zz"], fallback: "q" }]
      },
      "test",
      { providers: kinds }
    )
    expect(Either.isLeft(result) && result.left.problems).toEqual([
      "upstreams[0].weight: Expected a positive number, actual -3",
      'upstreams[1].healthCheck.type: Expected one of "http", "tcp", "inference", actual "icmp"',
      "upstreams[0].baseUrl: required for provider 'openai'",
      "upstreams[1].id: duplicate upstream id 'a'",
      "upstreams[1].provider: unknown provider 'nope'; known: openai, ollama, simulated",
      "pools[0].upstreams[1]: unknown upstream 'zz'; known: a",
      "pools[0].fallback: unknown pool 'q'; known: p"
    ])
  })
})

describe("Config.formatIssues", () => {
  it("describes a value nested 100,000 deep instead of quoting it, without overflowing the stack", () => {
    let deep: unknown = []
    for (let i = 1; i < 100_000; i++) deep = [deep]
    const decoded = Schema.decodeUnknownEither(Wire.ChatCompletionRequest, { errors: "all" })({
      model: "gpt-4o",
      messages: [{ role: "user", content: [deep] }]
    })
    if (Either.isRight(decoded)) throw new Error("expected the request to be rejected")
    expect(Config.formatIssues(decoded.left)).toEqual([
      {
        path: ["messages", 0, "content", 0],
        at: "messages[0].content[0]",
        message: "Expected ContentPart, actual a value nested deeper than 32 levels"
      }
    ])
    // A shallow value is still quoted.
    const shallow = Schema.decodeUnknownEither(Wire.ChatCompletionRequest, { errors: "all" })({
      model: "gpt-4o",
      messages: [{ role: "user", content: [[[1]]] }]
    })
    if (Either.isRight(shallow)) throw new Error("expected the request to be rejected")
    expect(Config.formatIssues(shallow.left).map((issue) => issue.message)).toEqual([
      "Expected ContentPart, actual [[1]]"
    ])
  })

  it("reports a config value nested 100,000 deep by its path", () => {
    let deep: unknown = []
    for (let i = 1; i < 100_000; i++) deep = [deep]
    const problems = problemsOf({ ...valid(), upstreams: [deep] })
    expect(problems).toEqual([
      "upstreams[0]: Expected Struct (Encoded side), actual a value nested deeper than 32 levels"
    ])
  })
})

describe("Config.decode: client keys, CORS and the admin API", () => {
  it("decodes keys with their limits, budgets and priority, defaulting the rest", () => {
    const digest = "a".repeat(64)
    const config = Either.getOrThrow(
      Config.decode({
        ...valid(),
        server: {
          auth: {
            keys: [
              { name: "team-a", keyEnv: "TEAM_A_KEY", pools: ["gpt"], limits: { rpm: 10 }, budget: { dailyUsd: 5 } },
              { name: "team-b", sha256: digest, priority: 5, priorityHeader: true }
            ]
          },
          cors: { origins: ["https://app.example"] },
          admin: { tokenEnv: "SLUICE_ADMIN_TOKEN" },
          drainMs: 1000
        }
      })
    )
    expect(config.server.auth.keys[0]).toMatchObject({ name: "team-a", priority: 0, priorityHeader: false })
    expect(config.server.auth.keys[1]).toMatchObject({ sha256: digest, priority: 5, priorityHeader: true })
    expect(config.server.cors).toEqual({ origins: ["https://app.example"], maxAgeSeconds: 600 })
    expect(config.server.drainMs).toBe(1000)
  })

  it("lists every problem of the keys by path: no secret source or two, duplicates, unknown pools, a bad digest", () => {
    expect(
      problemsOf({
        ...valid(),
        server: {
          priorities: [{ apiKeyEnv: "OLD_KEY", priority: 1 }],
          auth: {
            keys: [
              { name: "a" },
              { name: "a", keyEnv: "A_KEY", sha256: "b".repeat(64), pools: ["nope"] },
              { name: "c", sha256: "not-a-digest" }
            ]
          }
        }
      })
    ).toEqual(["server.auth.keys[2].sha256: expected 64 lower-case hex digits (a SHA-256 digest)"])
    expect(
      problemsOf({
        ...valid(),
        server: {
          priorities: [{ apiKeyEnv: "OLD_KEY", priority: 1 }],
          auth: { keys: [{ name: "a" }, { name: "a", keyEnv: "A_KEY", sha256: "b".repeat(64), pools: ["nope"] }] }
        }
      })
    ).toEqual([
      "server.auth.keys[0]: set exactly one of keyEnv (a variable holding the key) or sha256 (its digest)",
      "server.auth.keys[1]: set exactly one of keyEnv (a variable holding the key) or sha256 (its digest)",
      "server.auth.keys[1].name: duplicate key name 'a'",
      "server.auth.keys[1].pools[0]: unknown pool 'nope'; known: gpt, backup",
      "server.priorities: not used once server.auth.keys are set; give each key its priority in server.auth.keys[].priority"
    ])
  })

  it("names the variables of client keys and the admin token among the config's secrets", () => {
    expect(
      Config.apiKeyVariables({
        ...valid(),
        server: { auth: { keys: [{ name: "a", keyEnv: "A_KEY" }] }, admin: { tokenEnv: "ADMIN_TOKEN" } }
      })
    ).toEqual([
      { at: "upstreams[0].apiKeyEnv", variable: "OPENAI_API_KEY" },
      { at: "server.auth.keys[0].keyEnv", variable: "A_KEY" },
      { at: "server.admin.tokenEnv", variable: "ADMIN_TOKEN" }
    ])
  })
})
