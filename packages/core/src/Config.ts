/**
 * The configuration file schema (YAML or JSON). Decoding reports every problem by path, e.g.
 * `upstreams[1].weight: Expected a positive number, actual -3`. Secrets never appear in the file:
 * an upstream names the environment variable that holds its API key (`apiKeyEnv`).
 */
import type { Rules as TokenRules } from "./TokenCounter.js"
import { Array as Arr, Config as EnvConfig, Effect, Either, ParseResult, Redacted, Schema } from "effect"
import { deeperThan } from "./internal/deepJson.js"

const PositiveInt = Schema.Number.pipe(Schema.int(), Schema.positive())
const NonNegative = Schema.Number.pipe(Schema.nonNegative())
const Id = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9._:-]*$/, {
    message: () => "expected an id of letters, digits, '.', '_', ':' or '-'"
  })
)

/**
 * The name of an environment variable. The message never repeats the value: a key pasted here by
 * mistake must not end up in an error message or a log.
 */
const EnvironmentVariable = Schema.String.pipe(
  // Upper case only: many providers' keys are letters, digits and '_' too (Groq's `gsk_...`, Mistral's),
  // and a name of that shape would be echoed in "variable ... is not set".
  Schema.pattern(/^[A-Z_][A-Z0-9_]{0,99}$/, {
    message: () =>
      "expected the name of an environment variable (upper-case letters, digits and '_', e.g. OPENAI_API_KEY), not the key itself; the value is not shown"
  })
)

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

/**
 * How good an upstream's answers are, from 0 (worst) to 1 (best), as the operator judges them (an
 * eval score, a leaderboard rank scaled): the `cost` strategy's `minQuality` keeps cheaper upstreams
 * below it out of the pool.
 */
export const Quality = Schema.Number.pipe(
  Schema.between(0, 1, {
    message: (issue) => `expected a quality score from 0 to 1, actual ${JSON.stringify(issue.actual)}`
  })
)

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

/**
 * What a request may need of an upstream: `vision` (image parts), `audio` (audio input), `tools`,
 * `json_schema` (structured output), `n` (more than one choice), `embeddings`, `completions` (the
 * legacy `POST /completions`), `responses` (`POST /responses` served natively, with its stored state),
 * `prefill` (continues a final assistant message: a stream's continuation, see {@link PoolStreamConfig}).
 * `responses` and `prefill` are opt-in ({@link OPT_IN_CAPABILITIES}): only an upstream whose kind or own
 * list names them has them.
 *
 * The finer ones say what a provider's API cannot express even when its model could
 * ({@link REFINEMENTS}): `image_url` (an image by URL, not inline data), `file` (a `file` part such as
 * a PDF), `tool_choice` (forcing a tool call: `required` or a named function), `logprobs`
 * (`logprobs` / `top_logprobs`), `dimensions` (embeddings of a chosen size).
 */
export const Capability = Schema.Literal(
  "vision",
  "audio",
  "tools",
  "json_schema",
  "n",
  "embeddings",
  "completions",
  "responses",
  "prefill",
  "image_url",
  "file",
  "tool_choice",
  "logprobs",
  "dimensions"
)
/** What a request may need of an upstream. */
export type Capability = typeof Capability.Type

/**
 * The `cost` strategy's settings: how the expected cost of a request is traded against latency
 * (`weights`, each term relative to the candidates' mean; default all cost), and the `quality` an
 * upstream needs to be chosen at all (`minQuality`; then every upstream of the pool must state one).
 */
export const CostConfig = Schema.Struct({
  weights: Schema.optional(
    Schema.Struct({
      cost: Schema.optionalWith(NonNegative, { default: () => 0 }),
      latency: Schema.optionalWith(NonNegative, { default: () => 0 })
    }).pipe(Schema.filter((w) => w.cost + w.latency > 0 || "expected a weight above 0 for cost or latency (or both)"))
  ),
  minQuality: Schema.optional(Quality)
})
/** The `cost` strategy's settings. */
export type CostConfig = typeof CostConfig.Type

/**
 * The `consistent-hash` strategy's settings: an upstream takes the requests whose key hashes to it
 * until it carries more than `(1 + epsilon)` × the average load of the candidates; then they spill to
 * the next upstream on the ring.
 */
export const ConsistentHashConfig = Schema.Struct({
  epsilon: Schema.optionalWith(
    Schema.Number.pipe(
      Schema.greaterThan(0, { message: () => "expected a number above 0 (0.25 allows 25% above the average load)" })
    ),
    { default: () => 0.25 }
  )
})
/** The `consistent-hash` strategy's settings. */
export type ConsistentHashConfig = typeof ConsistentHashConfig.Type

/**
 * Capabilities an upstream has only when its kind's or its own list names them: an upstream that
 * lists nothing takes everything else. Few OpenAI-compatible servers serve OpenAI's Responses API,
 * or continue a final assistant message rather than answer after it.
 */
export const OPT_IN_CAPABILITIES: ReadonlyArray<Capability> = ["responses", "prefill"]

/**
 * The finer capabilities and the one each refines (none: it comes with any list). An upstream's own
 * `capabilities` list names the coarse ones; a finer one follows its parent there (a list with
 * `vision` has `image_url` and `file`; one with `tools` has `tool_choice`), while the provider kind's
 * list says which of them its API can express at all.
 */
export const REFINEMENTS: ReadonlyArray<readonly [Capability, Capability | undefined]> = [
  ["image_url", "vision"],
  ["file", "vision"],
  ["tool_choice", "tools"],
  ["logprobs", undefined],
  ["dimensions", "embeddings"]
]

/** One upstream deployment: a provider endpoint serving one model. */
export const UpstreamConfig = Schema.Struct(
  {
    id: Id,
    name: Schema.optional(Schema.String),
    /** Provider kind, as registered by the package that implements it ({@link ProviderKind}). */
    provider: Schema.NonEmptyString,
    /** Base URL including the API prefix, e.g. `https://api.openai.com/v1`. Optional for kinds that need none. */
    baseUrl: Schema.optional(
      Schema.String.pipe(Schema.pattern(/^https?:\/\/.+/, { message: () => "expected an http(s) URL" }))
    ),
    /** The model name sent upstream; defaults to the model the client asked for. */
    model: Schema.optional(Schema.String),
    /** Name of the environment variable holding the API key. */
    apiKeyEnv: Schema.optional(EnvironmentVariable),
    weight: Schema.optionalWith(PositiveInt, { default: () => 1 }),
    /** Lower is preferred: the priority strategy uses the lowest tier that has a candidate. */
    priority: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.nonNegative()), { default: () => 0 }),
    enabled: Schema.optionalWith(Schema.Boolean, { default: () => true }),
    limits: Schema.optional(Limits),
    /** Context window in tokens; requests whose prompt + max_tokens exceed it never go here. */
    contextWindow: Schema.optional(PositiveInt),
    /**
     * What this upstream's model can take, narrowing its provider's ({@link ProviderKind.capabilities}):
     * a text-only model behind a server that takes images lists none of `vision`. A request that needs
     * a capability an upstream lacks is never sent there. Absent: everything its provider takes.
     */
    capabilities: Schema.optional(Schema.Array(Capability)),
    pricing: Schema.optional(Pricing),
    /** How good its answers are, 0 to 1 ({@link Quality}); read by the `cost` strategy's `minQuality`. */
    quality: Schema.optional(Quality),
    /** Time allowed for the whole upstream call (non-streaming) or until the first byte (streaming). */
    timeoutMs: Schema.optionalWith(PositiveInt, { default: () => 60_000 }),
    /** Extra headers sent upstream with every request. */
    headers: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String })),
    /** Circuit breaker; on by default with the defaults of {@link CircuitBreakerConfig}. */
    circuitBreaker: Schema.optional(CircuitBreakerConfig),
    healthCheck: Schema.optional(HealthCheckConfig),
    passiveHealth: Schema.optional(PassiveHealthConfig),
    stream: Schema.optional(StreamTimeoutsConfig)
  },
  // Any other key is a setting of the upstream's provider kind (`simulate:` of `simulated`), carried
  // as written: {@link decode} checks it against the kind when given the kinds, else nobody does here.
  Schema.Record({ key: Schema.String, value: Schema.Unknown })
)
/** One upstream as written in the config file; keys beyond core's are its provider kind's settings. */
export type UpstreamConfig = typeof UpstreamConfig.Type

/**
 * A pool's streams. `resume`: when an upstream fails after content reached the client, another
 * upstream of the pool that can continue an assistant message (capability `prefill`: Anthropic,
 * vLLM, Ollama) is asked to continue from the text already sent, and the client receives one
 * uninterrupted stream; where none can, the in-band error stays. Off by default.
 */
export const PoolStreamConfig = Schema.Struct({
  resume: Schema.optionalWith(Schema.Boolean, { default: () => false })
})

/**
 * Hedged streams: when a stream's first content has not come `afterMs` after its attempt was
 * admitted (or by the `afterPercentile` of the pool's recent time to first content), a second
 * attempt starts on another upstream of the pool, admitted like any other; the first to deliver
 * content wins and the other is cancelled. Hedges never pass `maxExtraPercent` of the pool's
 * requests. Set exactly one of `afterMs` and `afterPercentile`.
 *
 * An upstream that keeps losing races is ejected from the pool for a while (as Envoy's outlier
 * detection ejects by errors): a hedge caps the tail of one stream, but only a pool that stops
 * sending first attempts to a slowed upstream keeps the hedge budget for the rest. After
 * `ejectAfterLosses` races lost in a row (its attempt slower to first content than the hedge that
 * started after it), it gets no new attempt for `ejectMs`, never more than `maxEjectedPercent` of
 * the pool's upstreams at once; see `Hedge`.
 */
export const HedgeConfig = Schema.Struct({
  /** Milliseconds after the first attempt was admitted. */
  afterMs: Schema.optionalWith(PositiveInt, { exact: true }),
  /**
   * A percentile (e.g. 95) of the pool's recent times to first content (its last 256 streams on
   * this instance); no hedge until it has seen 20.
   */
  afterPercentile: Schema.optionalWith(
    Schema.Number.pipe(
      Schema.filter((n) => n > 0 && n < 100, {
        message: (issue) => `expected a percentile between 0 and 100 (exclusive), e.g. 95; got ${String(issue.actual)}`
      })
    ),
    { exact: true }
  ),
  /** Hedges at most this percentage of the pool's requests of the last minute (a sliding window). Default 10. */
  maxExtraPercent: Schema.optionalWith(
    Schema.Number.pipe(
      Schema.filter((n) => n > 0 && n <= 100, {
        message: (issue) => `expected a percentage above 0 and at most 100, e.g. 10; got ${String(issue.actual)}`
      })
    ),
    { default: () => 10 }
  ),
  /**
   * Races to first content an upstream loses in a row before it is ejected from the pool: its
   * attempt was slower than the hedge that started after it. A stream of its whose first content
   * comes in time (no hedge needed, or it won the race) resets the count; a hedge that loses counts
   * nothing, nor does a failure (the circuit breaker's business). 0 ejects nothing. Default 3.
   */
  ejectAfterLosses: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.nonNegative()), { exact: true }),
  /**
   * Milliseconds an ejected upstream gets no new attempt in the pool. Ejected again without a stream
   * in time between, it stays out twice as long as the time before, at most ten times this.
   * Default 30000.
   */
  ejectMs: Schema.optionalWith(PositiveInt, { exact: true }),
  /**
   * The most of the pool's enabled upstreams ejected at once, in percent, rounded down; never the
   * last one. An ejected upstream still serves when no other upstream of the pool can. Default 50.
   */
  maxEjectedPercent: Schema.optionalWith(
    Schema.Number.pipe(
      Schema.filter((n) => n > 0 && n <= 100, {
        message: (issue) => `expected a percentage above 0 and at most 100, e.g. 50; got ${String(issue.actual)}`
      })
    ),
    { exact: true }
  )
})
/** Hedging settings. */
export type HedgeConfig = typeof HedgeConfig.Type

/** A pool: a set of upstreams serving a family of model names. */
export const PoolConfig = Schema.Struct({
  id: Id,
  name: Schema.optional(Schema.String),
  /** Model names this pool serves; `*` matches any run of characters (`gpt-4o*`). */
  models: Schema.Array(Schema.String.pipe(Schema.minLength(1))).pipe(Schema.minItems(1)),
  /** Alias → model name: a request for the alias is routed here as the named model. */
  aliases: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), { default: () => ({}) }),
  /**
   * Strategy name: round-robin, weighted, random, priority, least-connections, latency, p2c,
   * least-tokens, cost, headroom, consistent-hash, or a custom one registered in code.
   */
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
  /** Hedged streams (opt-in); see {@link HedgeConfig}. */
  hedge: Schema.optional(HedgeConfig),
  /** Settings of the `cost` strategy; see {@link CostConfig}. */
  cost: Schema.optional(CostConfig),
  /** Settings of the `consistent-hash` strategy; see {@link ConsistentHashConfig}. */
  consistentHash: Schema.optional(ConsistentHashConfig),
  /** Completion tokens reserved against TPM budgets when a request sets no `max_tokens`. */
  defaultMaxTokens: Schema.optionalWith(PositiveInt, { default: () => 1024 }),
  /** How the pool's streams are served. */
  stream: Schema.optional(PoolStreamConfig)
})
/** A pool as written in the config file. */
export type PoolConfig = typeof PoolConfig.Type

/** A client key's own budgets, over a sliding minute; absent means unlimited. */
export const ClientLimits = Schema.Struct({
  /** Requests per minute. */
  rpm: Schema.optional(PositiveInt),
  /** Tokens per minute, counted from the usage upstreams report (prompt + completion). */
  tpm: Schema.optional(PositiveInt)
})

/** A client key's spend limits in US dollars, from usage × the serving upstream's `pricing`. */
export const SpendBudget = Schema.Struct({
  /** Per UTC day. */
  dailyUsd: Schema.optional(Schema.Number.pipe(Schema.positive())),
  /** Per UTC calendar month. */
  monthlyUsd: Schema.optional(Schema.Number.pipe(Schema.positive()))
})

/**
 * One gateway (client) key. The key itself is never in the file: either `keyEnv` names the
 * environment variable holding it, or `sha256` is the hex SHA-256 digest of it (`printf %s "$KEY" |
 * sha256sum`). Exactly one of the two.
 */
export const ClientKeyConfig = Schema.Struct({
  /** Names the key in logs, metrics and the admin API (the key itself never appears). */
  name: Id,
  keyEnv: Schema.optional(EnvironmentVariable),
  sha256: Schema.optional(
    Schema.String.pipe(
      Schema.pattern(/^[0-9a-f]{64}$/, { message: () => "expected 64 lower-case hex digits (a SHA-256 digest)" })
    )
  ),
  /** Pool ids this key may use; absent: every pool. */
  pools: Schema.optional(Schema.Array(Id)),
  /** Model names (with `*` wildcards) this key may ask for; absent: every model. */
  models: Schema.optional(Schema.Array(Schema.String.pipe(Schema.minLength(1)))),
  limits: Schema.optional(ClientLimits),
  budget: Schema.optional(SpendBudget),
  /** Queue priority of this key's requests: higher waits ahead. */
  priority: Schema.optionalWith(Schema.Number.pipe(Schema.int()), { default: () => 0 }),
  /** Whether this key may set its own priority per request with the `x-sluice-priority` header. */
  priorityHeader: Schema.optionalWith(Schema.Boolean, { default: () => false })
})
/** One client key as written in the config file. */
export type ClientKeyConfig = typeof ClientKeyConfig.Type

/**
 * Client authentication. With keys, every `/v1` request must bear one (`Authorization: Bearer`).
 * Without keys the gateway is open, which it accepts only on a loopback address unless `open: true`.
 */
export const AuthConfig = Schema.Struct({
  /** Serve without keys on a non-loopback address, on purpose. */
  open: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  keys: Schema.optionalWith(Schema.Array(ClientKeyConfig), { default: () => [] })
})
/** Client authentication settings. */
export type AuthConfig = typeof AuthConfig.Type

/** CORS for browser apps: the origins allowed (`*` for any); off when absent. */
export const CorsConfig = Schema.Struct({
  origins: Schema.Array(Schema.String.pipe(Schema.minLength(1))).pipe(Schema.minItems(1)),
  /** How long a browser may cache a preflight answer, in seconds. */
  maxAgeSeconds: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.nonNegative()), { default: () => 600 })
})
/** CORS settings. */
export type CorsConfig = typeof CorsConfig.Type

/** The admin API (`/admin`): off unless its token's variable is named. */
export const AdminConfig = Schema.Struct({
  /** The environment variable holding the admin token (sent as `Authorization: Bearer`). */
  tokenEnv: EnvironmentVariable
})
/** Admin API settings. */
export type AdminConfig = typeof AdminConfig.Type

/**
 * The audit log of decisions (`server.audit`): one JSON line per request to `sink`, and the last
 * `keep` decisions in memory for the admin API. It never holds prompt or completion text.
 */
export const AuditConfig = Schema.Struct({
  /** Where each decision goes as a JSON line: nowhere (`off`, the default), `stdout`, or a `file`. */
  sink: Schema.optionalWith(Schema.Literal("off", "stdout", "file"), { default: () => "off" }),
  /** The file of the `file` sink; rotated to `<path>.1` ... `<path>.<files>` past `maxBytes`. */
  path: Schema.optional(Schema.String.pipe(Schema.minLength(1))),
  /** Size of the audit file at which it is rotated, in bytes. */
  maxBytes: Schema.optionalWith(PositiveInt, { default: () => 10 * 1024 * 1024 }),
  /** Rotated audit files kept besides the current one. */
  files: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.nonNegative()), { default: () => 5 }),
  /** Decisions kept in memory for `GET /admin/decisions` (0 keeps none; none without the admin API). */
  keep: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.nonNegative()), { default: () => 1000 }),
  /**
   * Also keep the request body and, for a whole (not streamed) chat answer, the response with each
   * entry. Off by default: prompts and completions are the users' data.
   */
  content: Schema.optionalWith(Schema.Boolean, { default: () => false })
})
/** Audit log settings. */
export type AuditConfig = typeof AuditConfig.Type

/** Logging (`server.log`); `LOG_LEVEL` in the environment overrides `level`. */
export const LogConfig = Schema.Struct({
  level: Schema.optionalWith(Schema.Literal("trace", "debug", "info", "warning", "error", "fatal", "none"), {
    default: () => "info"
  }),
  /** `pretty` for people (the default), `json` for log collectors: one object per line. */
  format: Schema.optionalWith(Schema.Literal("pretty", "json"), { default: () => "pretty" }),
  /** One `info` line per answered `/v1` request (id, pool, upstream, status, latency, tokens). */
  access: Schema.optionalWith(Schema.Boolean, { default: () => true })
})
/** Logging settings. */
export type LogConfig = typeof LogConfig.Type

/** Tracing beyond the standard `OTEL_*` variables (`server.tracing`). */
export const TracingConfig = Schema.Struct({
  /**
   * The share of health checks traced, 0 to 1: each check is a trace of its own per upstream, so
   * they are off (0) by default rather than flooding the tracing backend.
   */
  healthChecks: Schema.optionalWith(Schema.Number.pipe(Schema.between(0, 1)), { default: () => 0 })
})
/** Tracing settings. */
export type TracingConfig = typeof TracingConfig.Type

/** HTTP server settings. Environment `PORT` / `HOST` override them. */
export const ServerConfig = Schema.Struct({
  host: Schema.optionalWith(Schema.String, { default: () => "127.0.0.1" }),
  port: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.between(0, 65535)), { default: () => 8080 }),
  /** Largest request body accepted, in bytes; larger bodies are answered 413. */
  maxBodyBytes: Schema.optionalWith(PositiveInt, { default: () => 4 * 1024 * 1024 }),
  /**
   * Queue priority by client API key (the older form of `auth.keys[].priority`, refused beside
   * `auth.keys`): requests bearing the key held in `apiKeyEnv` wait ahead of lower priorities;
   * others get 0. The `x-sluice-priority` header counts only for a key with `priorityHeader: true`.
   */
  priorities: Schema.optionalWith(
    Schema.Array(Schema.Struct({ apiKeyEnv: EnvironmentVariable, priority: Schema.Number.pipe(Schema.int()) })),
    { default: () => [] }
  ),
  /** Client keys; see {@link AuthConfig}. */
  auth: Schema.optionalWith(AuthConfig, { default: () => AuthConfig.make({}) }),
  cors: Schema.optional(CorsConfig),
  admin: Schema.optional(AdminConfig),
  /** The audit log of decisions; see {@link AuditConfig}. */
  audit: Schema.optionalWith(AuditConfig, { default: () => AuditConfig.make({}) }),
  /** Log level and format, and the access log; see {@link LogConfig}. */
  log: Schema.optionalWith(LogConfig, { default: () => LogConfig.make({}) }),
  /** Tracing settings; see {@link TracingConfig}. */
  tracing: Schema.optionalWith(TracingConfig, { default: () => TracingConfig.make({}) }),
  /**
   * On `SIGTERM` / `SIGINT`, how long requests and streams in flight may take to finish before what
   * is left is ended (streams with the in-band error), in milliseconds.
   */
  drainMs: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.nonNegative()), { default: () => 30_000 })
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

/** A path as users write it: `upstreams[1].weight`; empty for the document itself. */
export const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (acc, key) => (typeof key === "number" ? `${acc}[${key}]` : acc === "" ? String(key) : `${acc}.${String(key)}`),
    ""
  )

/** One problem of a failed decode. */
export interface Issue {
  /** The keys leading to the bad value (empty for the document itself). */
  readonly path: ReadonlyArray<PropertyKey>
  /** {@link path} as users write it: `messages[0].content[1].type`; empty for the document itself. */
  readonly at: string
  readonly message: string
}

const ALTERNATIVE = /^Expected (.+), actual (.*)$/s

/** Values nested deeper than this are described in a message, not quoted: quoting them recurses as deep. */
const MAX_QUOTED_LEVELS = 32

/**
 * `issue` with every value too deep to quote described instead. The rebuilt tree follows the
 * schema's nesting, not the value's; only the branches that change are copied.
 */
const quotable = (issue: ParseResult.ParseIssue): ParseResult.ParseIssue => {
  switch (issue._tag) {
    case "Type":
      return issue.message === undefined && deeperThan(issue.actual, MAX_QUOTED_LEVELS)
        ? new ParseResult.Type(
            issue.ast,
            issue.actual,
            `Expected ${String(issue.ast)}, actual a value nested deeper than ${MAX_QUOTED_LEVELS} levels`
          )
        : issue
    case "Pointer": {
      const inner = quotable(issue.issue)
      return inner === issue.issue ? issue : new ParseResult.Pointer(issue.path, issue.actual, inner)
    }
    case "Refinement": {
      const inner = quotable(issue.issue)
      return inner === issue.issue ? issue : new ParseResult.Refinement(issue.ast, issue.actual, issue.kind, inner)
    }
    case "Transformation": {
      const inner = quotable(issue.issue)
      return inner === issue.issue ? issue : new ParseResult.Transformation(issue.ast, issue.actual, issue.kind, inner)
    }
    case "Composite": {
      if (!Array.isArray(issue.issues)) {
        const inner = quotable(issue.issues as ParseResult.ParseIssue)
        return inner === issue.issues ? issue : new ParseResult.Composite(issue.ast, issue.actual, inner, issue.output)
      }
      const issues = issue.issues as Arr.NonEmptyReadonlyArray<ParseResult.ParseIssue>
      const inner = Arr.map(issues, quotable)
      return inner.every((each, i) => each === issues[i])
        ? issue
        : new ParseResult.Composite(issue.ast, issue.actual, inner, issue.output)
    }
    // Missing, Unexpected and Forbidden quote no value.
    default:
      return issue
  }
}

/**
 * The problems of a failed decode, readable. Decode with `errors: "all"` so that every problem is
 * there; then:
 *
 * - a member of a union that the value did not even start to match is dropped where another member
 *   got further (an issue below the path, or a refinement at it): a content array with a bad part is
 *   reported at the part, not as "Expected string";
 * - `Expected undefined` (the "absent" member of an optional field) is dropped whenever anything
 *   else is said about the path;
 * - the members left at one path are one issue: `Expected one of "text", "json_object", actual "yaml"`;
 * - a value nested deeper than 32 levels is described (`actual a value nested deeper than 32
 *   levels`), not quoted: the documents come from outside and may nest as deep as they like.
 *
 * Issues keep the order of their first appearance.
 */
export const formatIssues = (error: ParseResult.ParseError): ReadonlyArray<Issue> => {
  const issues = ParseResult.ArrayFormatter.formatIssueSync(quotable(error.issue))
  // What is said at or below each path, in one pass: comparing every issue with every other would
  // let one hostile body of many bad parts stall the gateway.
  const below = new Map<string, { count: number; deeper: boolean; nonType: number }>()
  const keysOf = (path: ReadonlyArray<PropertyKey>): Array<string> => {
    const keys: Array<string> = [""]
    let key = ""
    for (const part of path) {
      key += `\u0000${typeof part === "number" ? `#${part}` : String(part)}`
      keys.push(key)
    }
    return keys
  }
  for (const issue of issues) {
    const keys = keysOf(issue.path)
    for (let depth = 0; depth < keys.length; depth++) {
      const entry = below.get(keys[depth]!) ?? { count: 0, deeper: false, nonType: 0 }
      entry.count++
      if (depth < issue.path.length) entry.deeper = true
      if (issue._tag !== "Type") entry.nonType++
      below.set(keys[depth]!, entry)
    }
  }
  const kept = issues.filter((issue) => {
    if (issue._tag !== "Type") return true
    const absent = issue.message.startsWith("Expected undefined, actual ")
    const here = below.get(keysOf(issue.path).at(-1)!)!
    return absent ? here.count <= 1 : !here.deeper && here.nonType === 0
  })
  // Per path, either one message or the expected members of a union that all failed on `actual`.
  const out: Array<{
    path: ReadonlyArray<PropertyKey>
    at: string
    message?: string
    expected: Array<string>
    actual: string
  }> = []
  const alternatives = new Map<string, (typeof out)[number]>()
  for (const issue of kept) {
    const at = formatPath(issue.path)
    const match = issue._tag === "Type" ? ALTERNATIVE.exec(issue.message) : null
    if (match === null) {
      out.push({ path: issue.path, at, message: issue.message, expected: [], actual: "" })
      continue
    }
    const key = `${at} ${match[2]}`
    const entry = alternatives.get(key)
    if (entry !== undefined) entry.expected.push(match[1]!)
    else {
      const created = { path: issue.path, at, expected: [match[1]!], actual: match[2]! }
      alternatives.set(key, created)
      out.push(created)
    }
  }
  return out.map(({ path, at, message, expected, actual }) => ({
    path,
    at,
    message:
      message ??
      (expected.length === 1
        ? `Expected ${expected[0]}, actual ${actual}`
        : `Expected one of ${expected.join(", ")}, actual ${actual}`)
  }))
}

/**
 * A provider kind as the package that implements it registers it (`@sluice/providers` exports the
 * kinds it ships as `Providers.kinds`). Core names none: {@link decode} checks upstreams against
 * the kinds it is given.
 */
export interface ProviderKind {
  /** What upstreams write as `provider:`, e.g. `openai`. */
  readonly name: string
  /**
   * Whether an upstream of this kind must have a `baseUrl` (false where one can be supplied at start,
   * or where the kind has a {@link defaultBaseUrl}).
   */
  readonly needsBaseUrl: boolean
  /** The base URL of an upstream of this kind that sets none (a cloud's public endpoint). */
  readonly defaultBaseUrl?: string
  /** What the kind's API can take at all; absent, every {@link Capability}. An upstream may narrow it. */
  readonly capabilities?: ReadonlyArray<Capability>
  /**
   * How upstreams of this kind count prompt tokens, when not by OpenAI's tiktoken rule for the
   * model's name (the default): see `TokenCounter.Rules`. The context-window check and the token
   * budgets of such an upstream use it, and the decision marks its count as an estimate.
   */
  readonly tokens?: TokenRules
  /** Upstreams of this kind only pretend to be a provider (`Topology.Upstream.simulated`). Default false. */
  readonly simulated?: boolean
  /** The kind's own settings, if it has any. */
  readonly options?: ProviderOptions
}

/** The settings of a provider kind: the upstream key that holds them and the schema that decodes them. */
export interface ProviderOptions<S extends Schema.Schema.AnyNoContext = Schema.Schema.AnyNoContext> {
  /** The key in the upstream, e.g. `simulate`. */
  readonly key: string
  readonly schema: S
}

/** What {@link decode} checks beyond the schema. */
export interface DecodeOptions {
  /**
   * The strategy names pools may use (the built-in ones plus any custom ones the pipeline is given).
   * When set, an unknown name is one more problem at `pools[i].strategy`; otherwise names are left
   * to the `Strategy` layer to check when it is built.
   */
  readonly strategies?: ReadonlyArray<string>
  /**
   * The provider kinds upstreams may name (the ones the pipeline is given). When set, each upstream
   * is checked against its kind: an unknown kind, a missing `baseUrl` the kind needs, keys that are
   * neither core's nor the kind's settings, and the settings against the kind's schema, each a
   * problem by path. Otherwise no kind is checked and other keys are carried unread.
   */
  readonly providers?: ReadonlyArray<ProviderKind>
}

/** The keys core defines on an upstream; any other is a setting of its provider kind. */
const upstreamKeys: ReadonlyArray<string> = Object.keys(UpstreamConfig.fields)

const decodeSettings = (schema: Schema.Schema.AnyNoContext) =>
  Schema.decodeUnknownEither(schema, { errors: "all", onExcessProperty: "error" })

/**
 * The settings `upstreams[index]` holds for its kind (`upstream[options.key]`), decoded with the
 * kind's schema; `undefined` when it has none. `Left` lists every problem by path
 * (`upstreams[0].simulate.failureRate: Expected a number between 0 and 1, actual 2`). {@link decode}
 * checks them when given the kinds; whatever uses the settings decodes them with this, since a
 * config may have been decoded without.
 */
export const decodeProviderOptions = <S extends Schema.Schema.AnyNoContext>(
  options: ProviderOptions<S>,
  upstream: { readonly [key: string]: unknown },
  index: number
): Either.Either<Schema.Schema.Type<S> | undefined, ReadonlyArray<string>> => {
  const value = upstream[options.key]
  if (value === undefined) return Either.right(undefined)
  return Either.mapLeft(decodeSettings(options.schema)(value), (error) =>
    formatIssues(error).map(
      (issue) => `${formatPath(["upstreams", index, options.key, ...issue.path])}: ${issue.message}`
    )
  )
}

/**
 * What is wrong with `upstreams[index]` for its kind. Works on a decoded upstream and on a raw one
 * (a document that failed to decode): a `provider` that is not a non-empty string is the schema's
 * to report.
 */
const kindProblems = (
  upstream: { readonly [key: string]: unknown },
  index: number,
  kinds: ReadonlyMap<string, ProviderKind>
): Array<string> => {
  const provider = upstream["provider"]
  if (typeof provider !== "string" || provider === "") return []
  const kind = kinds.get(provider)
  if (kind === undefined) {
    return [`upstreams[${index}].provider: unknown provider '${provider}'; known: ${[...kinds.keys()].join(", ")}`]
  }
  const problems: Array<string> = []
  if (kind.needsBaseUrl && upstream["baseUrl"] === undefined) {
    problems.push(`upstreams[${index}].baseUrl: required for provider '${provider}'`)
  }
  const allowed = kind.options === undefined ? upstreamKeys : [...upstreamKeys, kind.options.key]
  for (const key of Object.keys(upstream)) {
    if (!allowed.includes(key)) {
      const expected = allowed.map((k) => JSON.stringify(k)).join(" | ")
      problems.push(
        `${formatPath(["upstreams", index, key])}: is unexpected for provider '${provider}', expected: ${expected}`
      )
    }
  }
  if (kind.options !== undefined) {
    const settings = decodeProviderOptions(kind.options, upstream, index)
    if (Either.isLeft(settings)) problems.push(...settings.left)
  }
  return problems
}

/** The shape {@link crossCheck} reads: a decoded config, or the well-shaped parts of a raw document. */
interface Checked {
  readonly upstreams: ReadonlyArray<{ readonly id: string; readonly [key: string]: unknown }>
  readonly pools: ReadonlyArray<{
    readonly id: string
    readonly strategy?: string | undefined
    readonly upstreams: ReadonlyArray<string>
    readonly fallback?: string | undefined
  }>
}

const crossCheck = (config: Checked, options: DecodeOptions): Array<string> => {
  const problems: Array<string> = []
  const kinds = options.providers === undefined ? undefined : new Map(options.providers.map((k) => [k.name, k]))
  const upstreamIds = new Set<string>()
  config.upstreams.forEach((u, i) => {
    if (upstreamIds.has(u.id)) problems.push(`upstreams[${i}].id: duplicate upstream id '${u.id}'`)
    upstreamIds.add(u.id)
    if (kinds !== undefined) problems.push(...kindProblems(u, i, kinds))
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

/** What is wrong with the client keys of a decoded config: their secret's source, names, pools. */
const serverProblems = (config: ConfigFile): Array<string> => {
  const problems: Array<string> = []
  const keys = config.server.auth.keys
  const pools = config.pools.map((p) => p.id)
  const names = new Set<string>()
  keys.forEach((key, i) => {
    const at = `server.auth.keys[${i}]`
    if ((key.keyEnv === undefined) === (key.sha256 === undefined))
      problems.push(`${at}: set exactly one of keyEnv (a variable holding the key) or sha256 (its digest)`)
    if (names.has(key.name)) problems.push(`${at}.name: duplicate key name '${key.name}'`)
    names.add(key.name)
    key.pools?.forEach((pool, j) => {
      if (!pools.includes(pool)) problems.push(`${at}.pools[${j}]: unknown pool '${pool}'; known: ${pools.join(", ")}`)
    })
  })
  if (keys.length > 0 && config.server.priorities.length > 0)
    problems.push(
      "server.priorities: not used once server.auth.keys are set; give each key its priority in server.auth.keys[].priority"
    )
  problems.push(...qualityProblems(config))
  if (config.server.audit.sink === "file" && config.server.audit.path === undefined)
    problems.push("server.audit.path: required when server.audit.sink is 'file'; name the audit file")
  return problems
}

/** What is wrong with the pools' hedging settings beyond their schema. */
const hedgeProblems = (config: ConfigFile): Array<string> =>
  config.pools.flatMap((p, i) =>
    p.hedge !== undefined && (p.hedge.afterMs === undefined) === (p.hedge.afterPercentile === undefined)
      ? [
          `pools[${i}].hedge: set exactly one of afterMs (a fixed delay, e.g. 500) or afterPercentile (of the pool's recent time to first content, e.g. 95)`
        ]
      : []
  )

/** A pool's `cost.minQuality` needs a `quality` on every upstream of the pool, or it could not be judged. */
const qualityProblems = (config: ConfigFile): Array<string> => {
  const problems: Array<string> = []
  const quality = new Map(config.upstreams.map((u) => [u.id, u.quality]))
  config.pools.forEach((pool, i) => {
    if (pool.cost?.minQuality === undefined) return
    const unrated = pool.upstreams.filter((id) => quality.has(id) && quality.get(id) === undefined)
    if (unrated.length > 0)
      problems.push(
        `pools[${i}].cost.minQuality: upstream${unrated.length > 1 ? "s" : ""} ${unrated.map((id) => `'${id}'`).join(", ")} of the pool state${unrated.length > 1 ? "" : "s"} no quality; give each a quality from 0 to 1, or remove minQuality`
      )
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
  return crossCheck(
    {
      upstreams,
      pools: pools.map((p) => ({
        id: p.id,
        upstreams: Array.isArray(p["upstreams"]) ? p["upstreams"].filter((id) => typeof id === "string") : [],
        fallback: typeof p["fallback"] === "string" ? p["fallback"] : undefined,
        strategy: typeof p["strategy"] === "string" ? p["strategy"] : undefined
      }))
    },
    options
  )
}

/**
 * Decodes a parsed config document (from YAML or JSON). Fails with a {@link ConfigError} that lists
 * every schema error and every broken reference (unknown upstream, unknown or cyclic fallback,
 * duplicate id, an unknown strategy when `options.strategies` names the known ones, and what is
 * wrong with an upstream for its provider kind when `options.providers` lists the kinds) by path.
 * Provider settings are checked, not transformed: they are carried as written
 * ({@link decodeProviderOptions} decodes them for their user).
 */
export const decode = (
  input: unknown,
  source = "config",
  options: DecodeOptions = {}
): Either.Either<ConfigFile, ConfigError> => {
  const decoded = Schema.decodeUnknownEither(ConfigFile, { errors: "all", onExcessProperty: "error" })(input)
  if (Either.isLeft(decoded)) {
    const problems = formatIssues(decoded.left).map((issue) => `${issue.at || "(root)"}: ${issue.message}`)
    // References can be checked on the raw document too, so one pass reports both kinds of problem.
    problems.push(...crossCheckRaw(input, options))
    return Either.left(new ConfigError({ source, problems }))
  }
  const problems = [
    ...crossCheck(decoded.right, options),
    ...serverProblems(decoded.right),
    ...hedgeProblems(decoded.right)
  ]
  return problems.length > 0 ? Either.left(new ConfigError({ source, problems })) : Either.right(decoded.right)
}

/** The key of one `server.priorities` entry, read from the environment. */
export interface PriorityKey {
  readonly apiKey: Redacted.Redacted<string>
  readonly priority: number
}

/** What a config reads from the environment: every `apiKeyEnv` (upstreams and `server.priorities`). */
export interface Environment {
  /** API keys by upstream id; upstreams without `apiKeyEnv` (or whose variable is missing) have none. */
  readonly upstreamKeys: ReadonlyMap<string, Redacted.Redacted<string>>
  /** The keys of `server.priorities` that are set, in config order. */
  readonly priorityKeys: ReadonlyArray<PriorityKey>
  /** Client keys read from `server.auth.keys[].keyEnv`, by key name. */
  readonly clientKeys: ReadonlyMap<string, Redacted.Redacted<string>>
  /** The admin token, when `server.admin.tokenEnv` names a variable that is set. */
  readonly adminToken: Redacted.Redacted<string> | undefined
  /**
   * Every variable that is not set or is empty, by path:
   * `upstreams[0].apiKeyEnv: environment variable OPENAI_API_KEY is not set`. Names only, never a value.
   */
  readonly problems: ReadonlyArray<string>
}

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null

const isVariable = Schema.is(EnvironmentVariable)

/** Reads one variable as a secret; `Left` is the problem, by path. */
const readKey = (at: string, variable: string): Effect.Effect<Either.Either<Redacted.Redacted<string>, string>> =>
  Effect.map(Effect.either(EnvConfig.redacted(variable)), (read) =>
    Either.isLeft(read)
      ? Either.left(`${at}: environment variable ${variable} is not set`)
      : Redacted.value(read.right).trim() === ""
        ? Either.left(`${at}: environment variable ${variable} is empty`)
        : Either.right(read.right)
  )

/**
 * Reads every API key a decoded config names from the environment (Effect's `ConfigProvider`,
 * `process.env` by default) in one pass, as `Redacted` secrets. It never fails: the variables that
 * are not set are all in `problems`, for the caller to report with whatever else it found.
 */
export const readEnvironment = (config: ConfigFile): Effect.Effect<Environment> =>
  Effect.gen(function* () {
    const problems: Array<string> = []
    const priorityKeys: Array<PriorityKey> = []
    const upstreamKeys = new Map<string, Redacted.Redacted<string>>()
    for (const [i, entry] of config.server.priorities.entries()) {
      const key = yield* readKey(`server.priorities[${i}].apiKeyEnv`, entry.apiKeyEnv)
      if (Either.isLeft(key)) problems.push(key.left)
      else priorityKeys.push({ apiKey: key.right, priority: entry.priority })
    }
    for (const [i, upstream] of config.upstreams.entries()) {
      if (upstream.apiKeyEnv === undefined) continue
      const key = yield* readKey(`upstreams[${i}].apiKeyEnv`, upstream.apiKeyEnv)
      if (Either.isLeft(key)) problems.push(key.left)
      else upstreamKeys.set(upstream.id, key.right)
    }
    const clientKeys = new Map<string, Redacted.Redacted<string>>()
    for (const [i, client] of config.server.auth.keys.entries()) {
      if (client.keyEnv === undefined) continue
      const key = yield* readKey(`server.auth.keys[${i}].keyEnv`, client.keyEnv)
      if (Either.isLeft(key)) problems.push(key.left)
      else clientKeys.set(client.name, key.right)
    }
    let adminToken: Redacted.Redacted<string> | undefined
    if (config.server.admin !== undefined) {
      const token = yield* readKey("server.admin.tokenEnv", config.server.admin.tokenEnv)
      if (Either.isLeft(token)) problems.push(token.left)
      else adminToken = token.right
    }
    return { upstreamKeys, priorityKeys, clientKeys, adminToken, problems }
  })

/**
 * The secret variables a config (or a document not yet decoded) names where it names one well, by
 * path: `server.priorities`, upstreams' `apiKeyEnv`, then client keys' `keyEnv` and the admin
 * `tokenEnv`. Names only, never values.
 */
export const apiKeyVariables = (input: unknown): Array<{ readonly at: string; readonly variable: string }> => {
  const out: Array<{ at: string; variable: string }> = []
  if (!isRecord(input)) return out
  const collect = (entries: unknown, prefix: string) => {
    if (!Array.isArray(entries)) return
    entries.forEach((entry, i) => {
      if (isRecord(entry) && isVariable(entry["apiKeyEnv"]))
        out.push({ at: `${prefix}[${i}].apiKeyEnv`, variable: entry["apiKeyEnv"] })
    })
  }
  const server = input["server"]
  if (isRecord(server)) collect(server["priorities"], "server.priorities")
  collect(input["upstreams"], "upstreams")
  if (isRecord(server) && isRecord(server["auth"]) && Array.isArray(server["auth"]["keys"]))
    server["auth"]["keys"].forEach((entry: unknown, i) => {
      if (isRecord(entry) && isVariable(entry["keyEnv"]))
        out.push({ at: `server.auth.keys[${i}].keyEnv`, variable: entry["keyEnv"] })
    })
  if (isRecord(server) && isRecord(server["admin"]) && isVariable(server["admin"]["tokenEnv"]))
    out.push({ at: "server.admin.tokenEnv", variable: server["admin"]["tokenEnv"] })
  return out
}

/**
 * {@link decode}, and every `apiKeyEnv` variable the document names checked against the environment
 * in the same pass: fails with one {@link ConfigError} listing the schema problems, the broken
 * references and the variables that are not set, each by path. `sluice validate` and
 * `sluice serve` load files through this, so a user fixes a config in one round.
 */
export const decodeWithEnvironment = (
  input: unknown,
  source = "config",
  options: DecodeOptions = {}
): Effect.Effect<ConfigFile, ConfigError> =>
  Effect.gen(function* () {
    const decoded = decode(input, source, options)
    const missing: Array<string> = []
    for (const { at, variable } of apiKeyVariables(input)) {
      const key = yield* readKey(at, variable)
      if (Either.isLeft(key)) missing.push(key.left)
    }
    if (Either.isRight(decoded) && missing.length === 0) return decoded.right
    const problems = [...(Either.isLeft(decoded) ? decoded.left.problems : []), ...missing]
    return yield* new ConfigError({ source, problems })
  })
