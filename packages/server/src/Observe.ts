/**
 * What the gateway shows of itself: Prometheus metrics (`GET /metrics`) and the audit log of
 * decisions (kept in memory for the admin API, and written to `server.audit.sink`).
 *
 * Counters and histograms are Effect `Metric` hooks in a registry of the gateway's own, updated from
 * each finished {@link Decision.Decision} in one synchronous call ({@link Service.record}) and
 * exposed in Prometheus' text format by this module (no OpenTelemetry metrics SDK is loaded).
 * Gauges — queue depth, breaker and health state, in flight, budget left — are read from the
 * running generation when scraped. Label values come only from the config (pool, upstream and key
 * ids, provider kinds, configured model names) and from Sluice's own vocabularies (outcomes,
 * exclusion stages, error tags): what clients send never makes a new series.
 */
import type { Decision } from "@sluice/core"
import { Config as SluiceConfig } from "@sluice/core"
import type { Redacted, Scope } from "effect"
import { Clock, Context, Effect, Layer, Metric, Runtime } from "effect"
import type { MetricHook } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import * as Access from "./Access.js"
import * as AdminToken from "./internal/adminToken.js"
import * as Audit from "./internal/audit.js"
import * as MinuteStats from "./internal/minuteStats.js"
import type { Gauge } from "./internal/metrics.js"
import { gaugeLines, Registry } from "./internal/metrics.js"
import * as OtlpMetrics from "./internal/otlpMetrics.js"
import * as Routing from "./Routing.js"
import * as Telemetry from "./Telemetry.js"

/** Buckets of the GenAI duration histograms, in seconds (the semantic conventions' advice). */
const SECONDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
/** Buckets of `gen_ai.client.token.usage` (the semantic conventions' advice). */
const TOKENS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
/** Buckets of the gateway's own overhead, in seconds: tens of microseconds to tens of milliseconds. */
const OVERHEAD = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1]

/** The label value of a model that is not one of the config's model names or aliases. */
export const OTHER_MODEL = "_other"

/** Metrics and the audit log of one gateway. */
export interface Service {
  /**
   * Counts a finished request's decision in the metrics and keeps it in the audit log; `key` is the
   * client key's name. Synchronous and O(attempts + exclusions); call it once per request.
   *
   * With a `status` (0 or more: what the request was answered), the audit file's thread may write
   * the request's JSON access line to standard output (see `Audit.fileSink`): true when it took it,
   * false when the caller is to write it.
   */
  readonly record: (
    decision: Decision.Decision,
    key: string | undefined,
    content?: Audit.Content,
    status?: number
  ) => boolean
  /** Every metric in Prometheus' text format (version 0.0.4). */
  readonly metrics: Effect.Effect<string>
  /** The audit log: query, listen. */
  readonly audit: Audit.Log
  /**
   * Per-minute totals of the last hour (requests, errors, tokens, spend, latency and time-to-first-
   * chunk p50 / p99), oldest minute first, the current one last; kept whatever `server.audit.keep` is.
   */
  readonly stats: Effect.Effect<ReadonlyArray<MinuteStats.Minute>>
}

/** Metrics and the audit log of the gateway. */
export class Observe extends Context.Tag("@sluice/server/Observe")<Observe, Service>() {}

/** The instruments recorded per request. */
const instruments = (registry: Registry) => ({
  duration: registry.histogram(
    "gen_ai.client.operation.duration",
    "GenAI operation duration in seconds, as the client saw it (OpenTelemetry GenAI semantic conventions).",
    SECONDS,
    ["gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "error.type"],
    true
  ),
  firstChunk: registry.histogram(
    "gen_ai.client.operation.time_to_first_chunk",
    "Time from the request to the first chunk of a streamed answer, in seconds (OpenTelemetry GenAI semantic conventions).",
    SECONDS,
    ["gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model"],
    true
  ),
  tokens: registry.histogram(
    "gen_ai.client.token.usage",
    "Tokens used per request, by gen_ai.token.type input or output (OpenTelemetry GenAI semantic conventions).",
    TOKENS,
    ["gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.token.type"]
  ),
  requests: registry.counter("sluice.requests", "Routed requests by pool, serving upstream and outcome.", [
    "pool",
    "upstream",
    "outcome"
  ]),
  attempts: registry.counter("sluice.attempts", "Attempts on upstreams by pool, upstream and outcome.", [
    "pool",
    "upstream",
    "outcome"
  ]),
  retries: registry.counter("sluice.retries", "Attempts beyond a request's first, by the request's pool.", ["pool"]),
  fallbacks: registry.counter("sluice.fallbacks", "Requests that went to a fallback pool, by first and last pool.", [
    "pool",
    "fallback"
  ]),
  hedgesStarted: registry.counter(
    "sluice.hedges.started",
    "Hedges started: second attempts of a stream whose first content was late, by pool.",
    ["pool"]
  ),
  hedgesWon: registry.counter(
    "sluice.hedges.won",
    "Hedges that delivered first content before the attempt they hedged, and served the stream, by pool.",
    ["pool"]
  ),
  hedgesCancelled: registry.counter(
    "sluice.hedges.cancelled",
    "Attempts of a hedged stream cancelled because the other delivered first content sooner (the hedged attempt or the hedge), by pool.",
    ["pool"]
  ),
  exclusions: registry.counter(
    "sluice.exclusions",
    "Upstreams left out of a request's candidates, by pool, upstream and the stage that excluded them.",
    ["pool", "upstream", "stage"]
  ),
  queueWait: registry.histogram(
    "sluice.queue.wait",
    "Time requests waited in a pool's queue, in seconds.",
    SECONDS,
    ["pool"],
    true
  ),
  overhead: registry.histogram(
    "sluice.gateway.overhead",
    "Routing time not spent in upstream calls, the queue or backoff, in seconds.",
    OVERHEAD,
    [],
    true
  ),
  spend: registry.counter("sluice.spend.usd", "Spend in US dollars (tokens x pricing) by pool, upstream and key.", [
    "pool",
    "upstream",
    "key"
  ])
})

type Instruments = ReturnType<typeof instruments>

/** The model names and aliases of a generation's pools that are their own label values. */
const knownModels = (config: SluiceConfig.ConfigFile): ReadonlySet<string> => {
  const names = new Set<string>()
  for (const pool of config.pools) {
    for (const model of pool.models) if (!model.includes("*")) names.add(model)
    for (const alias of Object.keys(pool.aliases ?? {})) names.add(alias)
  }
  return names
}

/** The error class of a decision's `error` (`RateLimited: ...` → `RateLimited`). */
const errorType = (error: string | undefined): string => {
  if (error === undefined) return "_OTHER"
  const colon = error.indexOf(":")
  return colon === -1 ? "_OTHER" : error.slice(0, colon)
}

/** The series one kind of request updates, found once per pool, upstream, model, operation and result. */
interface Bundle {
  readonly requests: MetricHook.MetricHook.Counter<number>
  readonly duration: MetricHook.MetricHook.Histogram
  readonly firstChunk: MetricHook.MetricHook.Histogram
  readonly input: MetricHook.MetricHook.Histogram
  readonly output: MetricHook.MetricHook.Histogram
  readonly queueWait: MetricHook.MetricHook.Histogram
}

/** The map below `level` for `key`, made when missing. */
const below = <V>(level: Map<string, V>, key: string, make: () => V): V => {
  let next = level.get(key)
  if (next === undefined) level.set(key, (next = make()))
  return next
}

/** The per-request recording: plain synchronous code over the instruments and the running generation. */
const recorder = (routing: Routing.Service, m: Instruments, audit: Audit.Log, minutes: MinuteStats.MinuteStats) => {
  let generationNumber = -1
  let models: ReadonlySet<string> = new Set()
  // pool → upstream → model → operation → result → the request's series; cleared on a new generation
  // (an upstream's provider may change with it).
  let bundles = new Map<string, Map<string, Map<string, Map<string, Map<string, Bundle>>>>>()
  const overhead = m.overhead.at()
  return (d: Decision.Decision, key: string | undefined, content?: Audit.Content, status = -1): boolean => {
    const generation = routing.current()
    if (generationNumber !== generation.number) {
      generationNumber = generation.number
      models = knownModels(generation.config)
      bundles = new Map()
    }
    const upstreams = generation.topology.upstreams
    const served = d.upstream ?? d.attempts[d.attempts.length - 1]?.upstream
    const upstream = served === undefined ? "" : served
    const model = models.has(d.model) ? d.model : OTHER_MODEL
    const result = d.outcome === "error" ? errorType(d.error) : d.outcome
    const byResult = below(
      below(
        below(
          below(bundles, d.pool, () => new Map()),
          upstream,
          () => new Map()
        ),
        model,
        () => new Map()
      ),
      d.operation,
      () => new Map<string, Bundle>()
    )
    let b = byResult.get(result)
    if (b === undefined) {
      const provider = (served === undefined ? undefined : upstreams.get(served)?.provider) ?? "_OTHER"
      b = {
        requests: m.requests.at(d.pool, upstream, d.outcome),
        duration: m.duration.at(d.operation, provider, model, d.outcome === "error" ? result : ""),
        firstChunk: m.firstChunk.at(d.operation, provider, model),
        input: m.tokens.at(d.operation, provider, model, "input"),
        output: m.tokens.at(d.operation, provider, model, "output"),
        queueWait: m.queueWait.at(d.pool)
      }
      byResult.set(result, b)
    }
    b.requests.update(1)
    b.duration.update(d.durationMs / 1000)
    if (d.firstChunkMs !== undefined) b.firstChunk.update(d.firstChunkMs / 1000)
    if (d.inputTokens !== undefined) b.input.update(d.inputTokens)
    if (d.outputTokens !== undefined) b.output.update(d.outputTokens)
    b.queueWait.update(d.queueWaitMs / 1000)
    let upstreamMs = 0
    for (const a of d.attempts) {
      m.attempts.at(a.pool, a.upstream, a.outcome).update(1)
      upstreamMs += a.latencyMs
    }
    if (d.attempts.length > 1) m.retries.at(d.pool).update(d.attempts.length - 1)
    if (d.pools.length > 1) m.fallbacks.at(d.pools[0]!, d.pool).update(1)
    if (d.hedge !== undefined) hedged(m, d, d.hedge)
    for (const e of d.excluded) m.exclusions.at(d.pool, e.upstream, e.stage).update(1)
    overhead.update(Math.max(0, d.durationMs - upstreamMs - d.queueWaitMs - d.backoffMs) / 1000)
    const cost = Access.costOf(upstreams, d)
    if (cost > 0) m.spend.at(d.pool, upstream, key ?? "anonymous").update(cost)
    minutes.add(d, cost)
    return audit.add(d, key, cost, content, status)
  }
}

/**
 * Counts a request's hedges: every one started (a race that failed entirely may be followed by
 * another); won when the hedge of the last race delivered first; cancelled when its loser was cut off
 * for being slower (an attempt interrupted), not when it had failed first. Only the last race can have
 * a winner: an earlier one with a winner would have served the request.
 */
const hedged = (m: Instruments, d: Decision.Decision, hedge: Decision.Hedge): void => {
  m.hedgesStarted.at(d.pool).update(d.hedges)
  if (hedge.winner !== undefined && hedge.winner === hedge.hedge) m.hedgesWon.at(d.pool).update(1)
  if (hedge.loser === undefined) return
  for (let i = d.attempts.length - 1; i >= 0; i--) {
    const attempt = d.attempts[i]!
    if (attempt.upstream !== hedge.loser) continue
    if (attempt.outcome === "interrupted") m.hedgesCancelled.at(d.pool).update(1)
    return
  }
}

const STATES = ["closed", "half-open", "open"] as const

/** The gauges read when scraped, from the running generation. */
const gauges = (routing: Routing.Service) =>
  Effect.gen(function* () {
    const generation = routing.current()
    const now = yield* Clock.currentTimeMillis
    const pools = [...generation.topology.pools.values()]
    const upstreams = [...generation.topology.upstreams.values()]
    const depth = pools.map((p) => [{ pool: p.id }, generation.router.queueDepth?.(p.id) ?? 0] as const)
    const breaker: Array<readonly [Record<string, string>, number]> = []
    const healthy: Array<readonly [Record<string, string>, number]> = []
    const inFlight: Array<readonly [Record<string, string>, number]> = []
    const requestsLeft: Array<readonly [Record<string, string>, number]> = []
    const tokensLeft: Array<readonly [Record<string, string>, number]> = []
    const learned: Array<readonly [Record<string, string>, number]> = []
    const enabled: Array<readonly [Record<string, string>, number]> = []
    for (const u of upstreams) {
      const labels = { upstream: u.id }
      const b = yield* generation.breaker.snapshot(u)
      for (const state of STATES) breaker.push([{ upstream: u.id, state }, b.state === state ? 1 : 0])
      healthy.push([labels, (yield* generation.health.status(u.id)).healthy ? 1 : 0])
      enabled.push([labels, u.enabled ? 1 : 0])
      const budget = yield* generation.limiter.snapshot(u)
      inFlight.push([labels, budget.inFlight])
      if (budget.limits.rpm !== undefined)
        requestsLeft.push([labels, Math.max(0, budget.limits.rpm - budget.requestsUsed)])
      if (budget.limits.tpm !== undefined) tokensLeft.push([labels, Math.max(0, budget.limits.tpm - budget.tokensUsed)])
      learned.push([labels, budget.learnedUntil !== undefined && budget.learnedUntil > now ? 1 : 0])
    }
    const all: ReadonlyArray<Gauge> = [
      { name: "sluice.queue.depth", help: "Requests waiting in a pool's queue.", samples: depth },
      {
        name: "sluice.breaker.state",
        help: "Circuit breaker state of an upstream (1 for its current state).",
        samples: breaker
      },
      { name: "sluice.upstream.healthy", help: "Whether an upstream is healthy (1) or not (0).", samples: healthy },
      {
        name: "sluice.upstream.enabled",
        help: "Whether an upstream is enabled in the config (1) or not (0).",
        samples: enabled
      },
      { name: "sluice.in_flight", help: "Requests in flight on an upstream.", samples: inFlight },
      {
        name: "sluice.budget.requests_left",
        help: "Requests left this minute under an upstream's rpm limit.",
        samples: requestsLeft
      },
      {
        name: "sluice.budget.tokens_left",
        help: "Tokens left this minute under an upstream's tpm limit.",
        samples: tokensLeft
      },
      {
        name: "sluice.learned_hold",
        help: "Whether a limit the upstream reported holds now (1) or not (0).",
        samples: learned
      }
    ]
    return all
  })

/**
 * Sends the metrics over OTLP when the environment asks for it (see `Telemetry.metricsPlan`), every
 * `OTEL_METRIC_EXPORT_INTERVAL` and once more when the scope closes; the encoder is loaded only then.
 */
const exportMetrics = (read: Effect.Effect<OtlpMetrics.Reading>) =>
  Effect.gen(function* () {
    const plan = yield* Telemetry.metricsPlan
    if (plan === undefined) return
    for (const warning of plan.warnings) yield* Effect.logWarning(warning)
    if (plan.url === "") return
    const Serialization = yield* Effect.promise(() => import("@effect/opentelemetry/OtlpSerialization"))
    const serialization = yield* Effect.provide(
      Serialization.OtlpSerialization,
      plan.protocol === "http/json" ? Serialization.layerJson : Serialization.layerProtobuf
    )
    const run = Runtime.runFork(yield* Effect.runtime<never>())
    yield* Effect.logInfo(`exporting metrics over OTLP (${plan.protocol}) to ${plan.url} every ${plan.intervalMs} ms`)
    yield* OtlpMetrics.exportEvery(
      plan.intervalMs,
      read,
      { serviceName: plan.serviceName, serviceVersion: Telemetry.serviceVersion, attributes: plan.resourceAttributes },
      {
        url: plan.url,
        headers: plan.headers,
        encode: (document) => {
          const body = serialization.metrics(document)
          return body._tag === "Uint8Array"
            ? { body: body.body, contentType: body.contentType }
            : { body: JSON.stringify(document), contentType: "application/json" }
        },
        report: (message, failed) => void run(failed ? Effect.logWarning(message) : Effect.logInfo(message))
      }
    )
  })

/** The message of an audit file that cannot be opened. */
const unopened = (error: unknown) =>
  `server.audit.path: cannot open the audit file: ${error instanceof Error ? error.message : String(error)}`

/**
 * Builds the metrics and the audit log over the running config; the audit sink closes with the
 * scope, and follows `server.audit` through reloads (a reloaded file that cannot be opened is logged
 * and the sink in use stays). `adjust` is applied to every `server.audit` (the server keeps no
 * decisions in memory without the admin API). Fails with a `ConfigError` when the audit file cannot
 * be opened.
 */
export const make = (
  settings: SluiceConfig.AuditConfig,
  adjust: (settings: SluiceConfig.AuditConfig) => SluiceConfig.AuditConfig = (s) => s
): Effect.Effect<Service, SluiceConfig.ConfigError, Routing.Routing | Scope.Scope> =>
  Effect.gen(function* () {
    const routing = yield* Routing.Routing
    const registry = new Registry()
    const audit = yield* Effect.acquireRelease(
      Effect.try({
        try: () => new Audit.Log(adjust(settings)),
        catch: (error) => new SluiceConfig.ConfigError({ source: "config", problems: [unopened(error)] })
      }),
      (log) => Effect.sync(() => log.close())
    )
    const run = Runtime.runFork(yield* Effect.runtime<never>())
    yield* routing.watch((generation) => {
      try {
        audit.reconfigure(adjust(generation.config.server.audit))
      } catch (error) {
        run(Effect.logError(`${unopened(error)}; the audit log keeps writing where it did`))
      }
    })
    const minutes = new MinuteStats.MinuteStats()
    const record = recorder(routing, instruments(registry), audit, minutes)
    const stats = Effect.map(Clock.currentTimeMillis, (now) => minutes.minutes(now))
    const read = gauges(routing)
    const metrics = Effect.map(
      read,
      (all) => registry.exposition(Metric.unsafeSnapshot()) + all.map(gaugeLines).join("")
    )
    yield* exportMetrics(
      Effect.map(read, (all) => ({
        pairs: [...registry.registry.snapshot(), ...Metric.unsafeSnapshot()],
        gauges: all,
        unitOf: (name: string) => registry.unitOf(name)
      }))
    )
    return { record, metrics, audit, stats }
  })

/** {@link Observe} from `server.audit`. */
export const layer = (
  settings: SluiceConfig.AuditConfig,
  adjust?: (settings: SluiceConfig.AuditConfig) => SluiceConfig.AuditConfig
): Layer.Layer<Observe, SluiceConfig.ConfigError, Routing.Routing> => Layer.scoped(Observe, make(settings, adjust))

/** A JSON error answer of the endpoints behind the admin token. */
const refuse = (res: ServerResponse, verdict: "missing" | "wrong") => {
  const body = JSON.stringify(
    verdict === "missing"
      ? { _tag: "Unauthorized", message: "this endpoint needs the admin token: send 'Authorization: Bearer <token>'" }
      : { _tag: "Forbidden", message: "the token is not the admin token" }
  )
  res.writeHead(verdict === "missing" ? 401 : 403, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    ...(verdict === "missing" ? { "www-authenticate": "Bearer" } : {})
  })
  res.end(body)
}

/**
 * Whether a request may read what is behind the admin token (`/metrics`); answers
 * 401 / 403 itself when not. Open when `token` is undefined (no `server.admin`).
 */
export const guard = (
  token: Redacted.Redacted<string> | undefined
): ((req: IncomingMessage, res: ServerResponse) => boolean) => {
  if (token === undefined) return () => true
  const check = AdminToken.checker(token)
  return (req, res) => {
    const verdict = AdminToken.verdictOf(check, req.headers["authorization"])
    if (verdict === "ok") return true
    refuse(res, verdict)
    return false
  }
}

/**
 * Who may read `/metrics`, which names client keys and their spend: with `server.admin`, the admin
 * token's holder; else, on an address other machines can reach (`host`), a client that `access`
 * lets through to `/v1` (any valid key; anyone when the gateway is open on purpose); else anyone, as
 * a loopback gateway trusts its machine. A refused client gets `/v1`'s 401 in OpenAI's envelope.
 */
export const metricsGuard = (
  token: Redacted.Redacted<string> | undefined,
  host: string,
  access: Access.Service
): ((req: IncomingMessage, res: ServerResponse) => boolean) => {
  if (token !== undefined || Access.isLoopback(host)) return guard(token)
  return (req, res) => {
    const client = access.authenticate(req.headers)
    if (!(client instanceof Access.Refusal)) return true
    res.writeHead(client.status, {
      ...client.headers,
      "content-type": "application/json",
      "content-length": Buffer.byteLength(client.body)
    })
    res.end(client.body)
    return false
  }
}

/** The `GET /metrics` handler: Prometheus' text format, to the requests `allowed` lets through. */
export const metricsHandler = (allowed: (req: IncomingMessage, res: ServerResponse) => boolean) =>
  Effect.gen(function* () {
    const observe = yield* Observe
    const run = Runtime.runFork(yield* Effect.runtime<never>())
    return (req: IncomingMessage, res: ServerResponse): void => {
      if (!allowed(req, res)) return
      run(
        Effect.map(observe.metrics, (text) => {
          res.writeHead(200, {
            "content-type": "text/plain; version=0.0.4; charset=utf-8",
            "content-length": Buffer.byteLength(text)
          })
          res.end(text)
        })
      )
    }
  })
