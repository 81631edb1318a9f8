/**
 * The configuration file schema (YAML or JSON). Decoding reports every problem by path, e.g.
 * `upstreams[1].weight: Expected a positive number, actual -3`. Secrets never appear in the file:
 * an upstream names the environment variable that holds its API key (`apiKeyEnv`).
 */
import { Either, ParseResult, Schema } from "effect"

const PositiveInt = Schema.Number.pipe(Schema.int(), Schema.positive())
const NonNegative = Schema.Number.pipe(Schema.nonNegative())
const Id = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9._:-]*$/, {
    message: () => "expected an id of letters, digits, '.', '_', ':' or '-'"
  })
)

/** The provider kinds Sluice ships. OpenAI-compatible ones share one translation. */
export const ProviderKind = Schema.Literal(
  "openai",
  "openai-compatible",
  "groq",
  "mistral",
  "together",
  "vllm",
  "ollama",
  "lmstudio",
  "simulated"
)
/** The provider kinds Sluice ships. */
export type ProviderKind = typeof ProviderKind.Type

/** Behaviour of an in-process simulated upstream (provider `simulated` without a `baseUrl`). */
export const SimulateOptions = Schema.Struct({
  latencyMs: Schema.optionalWith(NonNegative, { exact: true }),
  ttftMs: Schema.optionalWith(NonNegative, { exact: true }),
  tokensPerSecond: Schema.optionalWith(NonNegative, { exact: true }),
  completionTokens: Schema.optionalWith(PositiveInt, { exact: true }),
  rpm: Schema.optionalWith(PositiveInt, { exact: true }),
  tpm: Schema.optionalWith(PositiveInt, { exact: true }),
  failureRate: Schema.optionalWith(Schema.Number.pipe(Schema.between(0, 1)), { exact: true }),
  resetRate: Schema.optionalWith(Schema.Number.pipe(Schema.between(0, 1)), { exact: true }),
  stallRate: Schema.optionalWith(Schema.Number.pipe(Schema.between(0, 1)), { exact: true }),
  midStreamCutRate: Schema.optionalWith(Schema.Number.pipe(Schema.between(0, 1)), { exact: true }),
  seed: Schema.optionalWith(Schema.Number, { exact: true })
})
/** Behaviour of an in-process simulated upstream. */
export type SimulateOptions = typeof SimulateOptions.Type

/** Per-upstream budgets. Enforced by the rate-limiting stage; absent means unlimited. */
export const Limits = Schema.Struct({
  /** Requests per minute. */
  rpm: Schema.optional(PositiveInt),
  /** Tokens per minute (prompt + reserved completion). */
  tpm: Schema.optional(PositiveInt),
  /** Requests in flight at once. */
  maxConcurrency: Schema.optional(PositiveInt)
})

/** Price in US dollars per million tokens. */
export const Pricing = Schema.Struct({
  inputPerMillion: NonNegative,
  outputPerMillion: NonNegative
})

/** Failure classes a circuit breaker can count. */
export const FailureClass = Schema.Literal("5xx", "timeout", "connection", "protocol", "429")
/** Failure classes a circuit breaker can count. */
export type FailureClass = typeof FailureClass.Type

/** Hard failure classes (`countAs`); 429s are counted apart, see `rateLimitThreshold`. */
export const HardFailureClass = Schema.Literal("5xx", "timeout", "connection", "protocol")

/**
 * Circuit breaker of one upstream: closed → open after `failureThreshold` failures (or a failure
 * ratio of at least `failureRatio` over at least `minimumRequests`) within `windowMs` → half-open
 * after `recoveryMs`, admitting `halfOpenProbes` requests at a time → closed after
 * `successThreshold` successes, open again on a failure. 429s are counted apart from hard failures
 * and open the breaker only past `rateLimitThreshold`.
 */
export const CircuitBreakerConfig = Schema.Struct({
  enabled: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  failureThreshold: Schema.optionalWith(PositiveInt, { default: () => 5 }),
  failureRatio: Schema.optionalWith(Schema.Number.pipe(Schema.greaterThan(0), Schema.lessThanOrEqualTo(1)), {
    exact: true
  }),
  minimumRequests: Schema.optionalWith(PositiveInt, { default: () => 10 }),
  windowMs: Schema.optionalWith(PositiveInt, { default: () => 60_000 }),
  recoveryMs: Schema.optionalWith(PositiveInt, { default: () => 30_000 }),
  halfOpenProbes: Schema.optionalWith(PositiveInt, { default: () => 1 }),
  successThreshold: Schema.optionalWith(PositiveInt, { default: () => 1 }),
  /** Which hard failures count toward `failureThreshold` / `failureRatio` (408 counts as a timeout). */
  countAs: Schema.optionalWith(Schema.Array(HardFailureClass), { default: () => ["5xx", "timeout", "connection"] }),
  /** 429s within the window that open the breaker; absent: 429s never open it. */
  rateLimitThreshold: Schema.optionalWith(PositiveInt, { exact: true })
})
/** Circuit breaker settings, defaults applied. */
export type CircuitBreakerConfig = typeof CircuitBreakerConfig.Type

/**
 * Active health check of one upstream, run every `intervalMs` as a background fiber. `http`: GET
 * `path` (absolute paths are taken from the base URL's origin, relative ones from the base URL) and
 * expect `expectStatus`; `tcp`: connect to the base URL's host and port; `inference`: a tiny chat
 * request (`max_tokens: 1`) that must return a completion. Unhealthy after `unhealthyThreshold`
 * consecutive failures, healthy again after `healthyThreshold` consecutive successes.
 */
export const HealthCheckConfig = Schema.Struct({
  type: Schema.Literal("http", "tcp", "inference"),
  path: Schema.optionalWith(Schema.String, { default: () => "/health" }),
  expectStatus: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.between(100, 599)), { default: () => 200 }),
  intervalMs: Schema.optionalWith(PositiveInt, { default: () => 10_000 }),
  timeoutMs: Schema.optionalWith(PositiveInt, { default: () => 2_000 }),
  healthyThreshold: Schema.optionalWith(PositiveInt, { default: () => 2 }),
  unhealthyThreshold: Schema.optionalWith(PositiveInt, { default: () => 3 })
})
/** Active health check settings, defaults applied. */
export type HealthCheckConfig = typeof HealthCheckConfig.Type

/**
 * Passive health: `unhealthyAfter` consecutive failures of real traffic mark an upstream unhealthy.
 * It is healthy again when an active check passes, or, without active checks, after `recoveryMs`.
 */
export const PassiveHealthConfig = Schema.Struct({
  unhealthyAfter: Schema.optionalWith(PositiveInt, { default: () => 5 }),
  recoveryMs: Schema.optionalWith(PositiveInt, { default: () => 30_000 })
})
/** Passive health settings, defaults applied. */
export type PassiveHealthConfig = typeof PassiveHealthConfig.Type

/** Stream stall detection: a stream that is silent longer than these fails (and fails over if nothing was sent). */
export const StreamTimeoutsConfig = Schema.Struct({
  /** Time to the first content event. Default: the upstream's `timeoutMs`. */
  firstChunkTimeoutMs: Schema.optionalWith(PositiveInt, { exact: true }),
  /** Longest silence between two events once streaming. */
  interChunkTimeoutMs: Schema.optionalWith(PositiveInt, { default: () => 30_000 })
})
/** Stream stall detection settings. */
export type StreamTimeoutsConfig = typeof StreamTimeoutsConfig.Type

/** A request that no upstream can take now waits here (per pool), highest priority first, FIFO within one. */
export const QueueConfig = Schema.Struct({
  /** Requests waiting at once; one more is answered 429 at once. 0 disables waiting. */
  maxSize: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.nonNegative()), { default: () => 100 }),
  /** Longest wait; a request that would wait longer is answered 429 with Retry-After. */
  maxWaitMs: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.nonNegative()), { default: () => 30_000 })
})
/** Queue settings. */
export type QueueConfig = typeof QueueConfig.Type

/** Retries: exponential backoff between attempts (0 = none), honouring an upstream's Retry-After. */
export const RetryConfig = Schema.Struct({
  /** Attempts per request in this pool (each on a different upstream when one can serve). */
  maxAttempts: Schema.optionalWith(PositiveInt, { exact: true }),
  initialBackoffMs: Schema.optionalWith(NonNegative, { default: () => 0 }),
  maxBackoffMs: Schema.optionalWith(NonNegative, { default: () => 5_000 }),
  multiplier: Schema.optionalWith(Schema.Number.pipe(Schema.greaterThanOrEqualTo(1)), { default: () => 2 }),
  /** Randomise each backoff between 50% and 100% of its value. */
  jitter: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** Longest total time spent on one request's retries; past it the last error is returned. */
  maxTotalMs: Schema.optionalWith(PositiveInt, { default: () => 120_000 })
})
/** Retry settings. */
export type RetryConfig = typeof RetryConfig.Type

/** Session affinity: requests with the same session key go to the same upstream while it can serve. */
export const StickyConfig = Schema.Struct({
  /** Where the session key comes from: a request header, the body's `user` field, or the API key. */
  key: Schema.optionalWith(Schema.Literal("header", "user", "api-key"), { default: () => "header" as const }),
  /** The header for `key: header`. */
  header: Schema.optionalWith(Schema.String, { default: () => "x-session-id" }),
  /** How long an affinity lasts since its last use. */
  ttlMs: Schema.optionalWith(PositiveInt, { default: () => 30 * 60_000 })
})
/** Sticky session settings. */
export type StickyConfig = typeof StickyConfig.Type

/** One upstream deployment: a provider endpoint serving one model. */
export const UpstreamConfig = Schema.Struct({
  id: Id,
  name: Schema.optional(Schema.String),
  provider: ProviderKind,
  /** Base URL including the API prefix, e.g. `https://api.openai.com/v1`. Optional only for `simulated`. */
  baseUrl: Schema.optional(
    Schema.String.pipe(Schema.pattern(/^https?:\/\/.+/, { message: () => "expected an http(s) URL" }))
  ),
  /** The model name sent upstream; defaults to the model the client asked for. */
  model: Schema.optional(Schema.String),
  /** Name of the environment variable holding the API key. */
  apiKeyEnv: Schema.optional(Schema.String),
  weight: Schema.optionalWith(PositiveInt, { default: () => 1 }),
  /** Lower is preferred: the priority strategy uses the lowest tier that has a candidate. */
  priority: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.nonNegative()), { default: () => 0 }),
  enabled: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  limits: Schema.optional(Limits),
  /** Context window in tokens; requests whose prompt + max_tokens exceed it never go here. */
  contextWindow: Schema.optional(PositiveInt),
  pricing: Schema.optional(Pricing),
  /** Time allowed for the whole upstream call (non-streaming) or until the first byte (streaming). */
  timeoutMs: Schema.optionalWith(PositiveInt, { default: () => 60_000 }),
  /** Extra headers sent upstream with every request. */
  headers: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String })),
  simulate: Schema.optional(SimulateOptions),
  /** Circuit breaker; on by default with the defaults of {@link CircuitBreakerConfig}. */
  circuitBreaker: Schema.optional(CircuitBreakerConfig),
  healthCheck: Schema.optional(HealthCheckConfig),
  passiveHealth: Schema.optional(PassiveHealthConfig),
  stream: Schema.optional(StreamTimeoutsConfig)
})
/** One upstream as written in the config file. */
export type UpstreamConfig = typeof UpstreamConfig.Type

/** A pool: a set of upstreams serving a family of model names. */
export const PoolConfig = Schema.Struct({
  id: Id,
  name: Schema.optional(Schema.String),
  /** Model names this pool serves; `*` matches any run of characters (`gpt-4o*`). */
  models: Schema.Array(Schema.String.pipe(Schema.minLength(1))).pipe(Schema.minItems(1)),
  /** Alias → model name: a request for the alias is routed here as the named model. */
  aliases: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), { default: () => ({}) }),
  /** Strategy name: round-robin, weighted, random, priority, or a custom one registered in code. */
  strategy: Schema.optionalWith(Schema.String, { default: () => "round-robin" }),
  /** Upstream ids, in order. */
  upstreams: Schema.Array(Id).pipe(Schema.minItems(1)),
  /** Pool id to try when every upstream of this one is excluded or failed. */
  fallback: Schema.optional(Id),
  /** Attempts per request within this pool (each on a different upstream when possible). */
  maxAttempts: Schema.optional(PositiveInt),
  queue: Schema.optional(QueueConfig),
  retry: Schema.optional(RetryConfig),
  sticky: Schema.optional(StickyConfig),
  /** Completion tokens reserved against TPM budgets when a request sets no `max_tokens`. */
  defaultMaxTokens: Schema.optionalWith(PositiveInt, { default: () => 1024 })
})
/** A pool as written in the config file. */
export type PoolConfig = typeof PoolConfig.Type

/** HTTP server settings. Environment `PORT` / `HOST` override them. */
export const ServerConfig = Schema.Struct({
  host: Schema.optionalWith(Schema.String, { default: () => "127.0.0.1" }),
  port: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.between(0, 65535)), { default: () => 8080 }),
  /** Largest request body accepted, in bytes; larger bodies are answered 413. */
  maxBodyBytes: Schema.optionalWith(PositiveInt, { default: () => 4 * 1024 * 1024 }),
  /**
   * Queue priority by client API key: requests bearing the key held in `apiKeyEnv` wait ahead of
   * lower priorities. Without a match the `x-sluice-priority` header decides, else 0.
   */
  priorities: Schema.optionalWith(
    Schema.Array(Schema.Struct({ apiKeyEnv: Schema.String, priority: Schema.Number.pipe(Schema.int()) })),
    { default: () => [] }
  )
})

/** The whole configuration file. */
export const ConfigFile = Schema.Struct({
  server: Schema.optionalWith(ServerConfig, { default: () => ServerConfig.make({}) }),
  upstreams: Schema.Array(UpstreamConfig).pipe(Schema.minItems(1)),
  pools: Schema.Array(PoolConfig).pipe(Schema.minItems(1))
})
/** The whole configuration file, decoded. */
export type ConfigFile = typeof ConfigFile.Type

/** Configuration that failed to decode or is inconsistent; `problems` lists every one by path. */
export class ConfigError extends Schema.TaggedError<ConfigError>()("ConfigError", {
  source: Schema.String,
  problems: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `invalid configuration in ${this.source}:\n${this.problems.map((p) => `  - ${p}`).join("\n")}`
  }
}

const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (acc, key) => (typeof key === "number" ? `${acc}[${key}]` : acc === "" ? String(key) : `${acc}.${String(key)}`),
    ""
  )

/** What {@link decode} checks beyond the schema. */
export interface DecodeOptions {
  /**
   * The strategy names pools may use (the built-in ones plus any custom ones the pipeline is given).
   * When set, an unknown name is one more problem at `pools[i].strategy`; otherwise names are left
   * to the `Strategy` layer to check when it is built.
   */
  readonly strategies?: ReadonlyArray<string>
}

const crossCheck = (config: ConfigFile, options: DecodeOptions): Array<string> => {
  const problems: Array<string> = []
  const upstreamIds = new Set<string>()
  config.upstreams.forEach((u, i) => {
    if (upstreamIds.has(u.id)) problems.push(`upstreams[${i}].id: duplicate upstream id '${u.id}'`)
    upstreamIds.add(u.id)
    if (u.provider !== "simulated" && u.baseUrl === undefined) {
      problems.push(`upstreams[${i}].baseUrl: required for provider '${u.provider}'`)
    }
  })
  const poolIds = new Set<string>()
  config.pools.forEach((p, i) => {
    if (poolIds.has(p.id)) problems.push(`pools[${i}].id: duplicate pool id '${p.id}'`)
    poolIds.add(p.id)
  })
  config.pools.forEach((p, i) => {
    const known = options.strategies
    if (known !== undefined && p.strategy !== undefined && !known.includes(p.strategy)) {
      problems.push(`pools[${i}].strategy: unknown strategy '${p.strategy}'; known: ${known.join(", ")}`)
    }
    p.upstreams.forEach((id, j) => {
      if (!upstreamIds.has(id)) {
        problems.push(`pools[${i}].upstreams[${j}]: unknown upstream '${id}'; known: ${[...upstreamIds].join(", ")}`)
      }
    })
    if (p.fallback !== undefined && !poolIds.has(p.fallback)) {
      problems.push(`pools[${i}].fallback: unknown pool '${p.fallback}'; known: ${[...poolIds].join(", ")}`)
    }
  })
  const byId = new Map(config.pools.map((p) => [p.id, p]))
  config.pools.forEach((p, i) => {
    const seen = [p.id]
    let next = p.fallback
    while (next !== undefined && byId.has(next)) {
      if (seen.includes(next)) {
        problems.push(`pools[${i}].fallback: fallback chain has a cycle: ${[...seen, next].join(" -> ")}`)
        break
      }
      seen.push(next)
      next = byId.get(next)!.fallback
    }
  })
  return problems
}

/** {@link crossCheck} on a document that failed to decode: only the entries shaped well enough to check. */
const crossCheckRaw = (input: unknown, options: DecodeOptions): Array<string> => {
  if (typeof input !== "object" || input === null) return []
  const doc = input as { upstreams?: unknown; pools?: unknown }
  const isEntry = (u: unknown): u is Record<string, unknown> & { id: string } =>
    typeof u === "object" && u !== null && typeof (u as { id?: unknown }).id === "string"
  const upstreams = Array.isArray(doc.upstreams) ? doc.upstreams : []
  const pools = Array.isArray(doc.pools) ? doc.pools : []
  if (!upstreams.every(isEntry) || !pools.every(isEntry)) return []
  const sane = {
    upstreams: upstreams.map((u) => ({
      ...u,
      provider: typeof u["provider"] === "string" ? u["provider"] : "simulated"
    })),
    pools: pools.map((p) => ({
      ...p,
      upstreams: Array.isArray(p["upstreams"]) ? p["upstreams"].filter((id) => typeof id === "string") : [],
      fallback: typeof p["fallback"] === "string" ? p["fallback"] : undefined,
      strategy: typeof p["strategy"] === "string" ? p["strategy"] : undefined
    }))
  }
  return crossCheck(sane as unknown as ConfigFile, options)
}

/**
 * Decodes a parsed config document (from YAML or JSON). Fails with a {@link ConfigError} that lists
 * every schema error and every broken reference (unknown upstream, unknown or cyclic fallback,
 * duplicate id, and an unknown strategy when `options.strategies` names the known ones) by path.
 */
export const decode = (
  input: unknown,
  source = "config",
  options: DecodeOptions = {}
): Either.Either<ConfigFile, ConfigError> => {
  const decoded = Schema.decodeUnknownEither(ConfigFile, { errors: "all", onExcessProperty: "error" })(input)
  if (Either.isLeft(decoded)) {
    const issues = ParseResult.ArrayFormatter.formatErrorSync(decoded.left)
    // Optional fields decode as `T | undefined`, so a bad value also fails the `undefined` member
    // ("Expected undefined, actual -3"); that only misleads when the real issue is reported at or below the path.
    const within = (inner: ReadonlyArray<PropertyKey>, outer: ReadonlyArray<PropertyKey>) =>
      inner.length >= outer.length && outer.every((key, i) => inner[i] === key)
    const kept = issues.filter(
      (issue) =>
        !issue.message.startsWith("Expected undefined, actual ") ||
        !issues.some((other) => other !== issue && within(other.path, issue.path))
    )
    // A literal union fails once per member; say it once: Expected one of "a", "b", actual "x".
    const problems: Array<string> = []
    const literal = /^Expected ("[^"]*"), actual (.*)$/
    const merged = new Map<string, { expected: Array<string>; actual: string; at: number }>()
    for (const issue of kept) {
      const path = formatPath(issue.path) || "(root)"
      const match = literal.exec(issue.message)
      if (match === null) {
        problems.push(`${path}: ${issue.message}`)
        continue
      }
      const entry = merged.get(path)
      if (entry === undefined) {
        merged.set(path, { expected: [match[1]!], actual: match[2]!, at: problems.length })
        problems.push("")
      } else entry.expected.push(match[1]!)
    }
    for (const [path, entry] of merged) {
      problems[entry.at] =
        entry.expected.length === 1
          ? `${path}: Expected ${entry.expected[0]}, actual ${entry.actual}`
          : `${path}: Expected one of ${entry.expected.join(", ")}, actual ${entry.actual}`
    }
    // References can be checked on the raw document too, so one pass reports both kinds of problem.
    problems.push(...crossCheckRaw(input, options))
    return Either.left(new ConfigError({ source, problems }))
  }
  const problems = crossCheck(decoded.right, options)
  return problems.length > 0 ? Either.left(new ConfigError({ source, problems })) : Either.right(decoded.right)
}
