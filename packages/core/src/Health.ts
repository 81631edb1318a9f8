/**
 * Health: active and passive health of upstreams, as a {@link Guard.Guard} named "health".
 *
 * Active checks run as background fibers, one per enabled upstream with a `healthCheck`, every
 * `intervalMs` for as long as the layer's scope lives (the router's lifetime): an `http` GET, a
 * `tcp` connect or a one-token `inference` request, each bounded by `timeoutMs`. An upstream disabled
 * in the config is never checked: it serves no traffic, and an inference check costs money. An upstream turns
 * unhealthy after `unhealthyThreshold` consecutive failed checks and healthy again after
 * `healthyThreshold` consecutive passes.
 *
 * Passive health counts real traffic: with `passiveHealth`, `unhealthyAfter` consecutive retryable
 * failures mark the upstream unhealthy; a success resets the count. It is healthy again once its
 * active check passes `healthyThreshold` times, or, without an active check, `recoveryMs` after it
 * was marked.
 *
 * State lives in the {@link StateStore.StateStore} under `health:<upstream id>` and changes only
 * through pure reducers; the guard runs them synchronously with `StateStore.local.modify` at the
 * time of its {@link Guard.Step} and leaves its log lines on the step. All time comes from `Clock`.
 */
// Per module, not the barrel: the barrel loads every platform module (its API-docs pages alone are
// ~20 MB of strings in a running gateway).
import * as HttpClient from "@effect/platform/HttpClient"
import type * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { Cause, Clock, Context, Duration, Effect, Layer, Option, Redacted, Schedule } from "effect"
import type { Scope } from "effect"
import * as Net from "node:net"
import type { HealthCheckConfig, PassiveHealthConfig } from "./Config.js"
import type { Exclusion, UpstreamError } from "./Errors.js"
import * as Guard from "./Guard.js"
import * as Provider from "./Provider.js"
import * as RateLimiter from "./RateLimiter.js"
import * as StateStore from "./StateStore.js"
import * as Topology from "./Topology.js"
import type { ChatCompletion } from "./Wire.js"

/** The health of one upstream as the guard sees it now. */
export interface Status {
  readonly healthy: boolean
  /** Epoch milliseconds (Clock) of the last transition, or of when health tracking began. */
  readonly since: number
  /** Failed active checks in a row. */
  readonly consecutiveFailures: number
  /** Passed active checks in a row. */
  readonly consecutiveSuccesses: number
  /** Retryable failures of real traffic in a row (passive health). */
  readonly consecutiveTrafficFailures: number
  /** The most recent failure, of a check or of real traffic. */
  readonly lastError?: string
  /** Epoch milliseconds (Clock) when the last active check ended. */
  readonly lastCheckAt?: number
  /** What made the last transition: an active check or real traffic. */
  readonly source?: "active" | "passive"
}

/** Health of upstreams. */
export interface Service {
  /** The guard (name "health"): excludes unhealthy upstreams and counts real traffic for passive health. */
  readonly guard: Guard.Guard
  /** The health of an upstream; an unknown id reads as healthy. */
  readonly status: (upstreamId: string) => Effect.Effect<Status>
  /**
   * Runs one active check of the upstream now and records it (it counts towards the thresholds).
   * Does nothing for an unknown upstream, one without a `healthCheck` or one disabled in the config.
   */
  readonly checkNow: (upstreamId: string) => Effect.Effect<void>
}

/** Health of upstreams. */
export class Health extends Context.Tag("@sluice/core/Health")<Health, Service>() {}

/** What is stored under `health:<id>`; JSON-serialisable. */
interface State {
  readonly healthy: boolean
  readonly since: number
  readonly source?: "active" | "passive"
  /** Why it is unhealthy, without the "unhealthy: " prefix; set while unhealthy. */
  readonly cause?: string
  readonly checkFailures: number
  readonly checkSuccesses: number
  readonly lastCheckAt?: number
  readonly lastCheckError?: string
  readonly trafficFailures: number
  readonly lastTrafficError?: string
  readonly lastError?: string
}

/** A transition the caller logs. */
type Transition = "unhealthy" | "healthy" | undefined

const keyOf = (upstreamId: string): string => `health:${upstreamId}`

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? "" : "s"}`

/** Describes a provider error the way an operator reads it (HTTP errors already start with "HTTP <status>:"). */
const describeUpstreamError = (error: UpstreamError): string => {
  const what = error.kind === "http" ? `HTTP ${error.status ?? "error"}` : error.kind
  return error.message.startsWith(what) ? error.message : `${what}: ${error.message}`
}

const checkCause = (check: HealthCheckConfig, failures: number, lastError: string | undefined): string =>
  `${plural(failures, `failed ${check.type} check`)} (last: ${lastError ?? "unknown"})`

/**
 * Without an active check nothing else can bring an unhealthy upstream back, so it recovers
 * `recoveryMs` after it was marked (at once when it has no passive settings any more).
 */
const recoveryAt = (upstream: Topology.Upstream, state: State): number | undefined =>
  state.healthy || upstream.healthCheck !== undefined
    ? undefined
    : state.since + (upstream.passiveHealth?.recoveryMs ?? 0)

/** Applies time-based passive recovery. Pure. */
const recover = (upstream: Topology.Upstream, state: State, now: number): readonly [State, Transition] => {
  const at = recoveryAt(upstream, state)
  if (at === undefined || now < at) return [state, undefined]
  const { cause: _cause, ...rest } = state
  return [{ ...rest, healthy: true, since: at, trafficFailures: 0, checkFailures: 0, checkSuccesses: 0 }, "healthy"]
}

/** Records one active check. Pure. */
const recordCheck = (
  check: HealthCheckConfig,
  state: State,
  error: string | undefined,
  now: number
): readonly [State, Transition] => {
  if (error === undefined) {
    const successes = state.checkSuccesses + 1
    const next: State = { ...state, checkSuccesses: successes, checkFailures: 0, lastCheckAt: now }
    if (!state.healthy && successes >= check.healthyThreshold) {
      const { cause: _cause, ...rest } = next
      return [{ ...rest, healthy: true, since: now, source: "active", trafficFailures: 0 }, "healthy"]
    }
    return [next, undefined]
  }
  const failures = state.checkFailures + 1
  const next: State = {
    ...state,
    checkFailures: failures,
    checkSuccesses: 0,
    lastCheckAt: now,
    lastCheckError: error,
    lastError: error
  }
  if (failures < check.unhealthyThreshold) return [next, undefined]
  // Past the threshold the check is the freshest account of why the upstream is down.
  const marked: State = { ...next, healthy: false, source: "active", cause: checkCause(check, failures, error) }
  return state.healthy ? [{ ...marked, since: now }, "unhealthy"] : [marked, undefined]
}

/** Records one outcome of real traffic. Pure. */
const recordTraffic = (
  passive: PassiveHealthConfig,
  state: State,
  outcome: Guard.Outcome,
  now: number
): readonly [State, Transition] => {
  if (outcome._tag === "Success") {
    return state.trafficFailures === 0 ? [state, undefined] : [{ ...state, trafficFailures: 0 }, undefined]
  }
  // Interruptions and the request's own faults (non-retryable) say nothing about the upstream, and
  // a 429 says it is busy, not sick: the rate limiter holds it back, the breaker counts it apart.
  if (outcome._tag !== "Failure" || !outcome.error.retryable || outcome.error.status === 429) return [state, undefined]
  const error = describeUpstreamError(outcome.error)
  const failures = state.trafficFailures + 1
  const next: State = { ...state, trafficFailures: failures, lastTrafficError: error, lastError: error }
  if (!state.healthy || failures < passive.unhealthyAfter) return [next, undefined]
  return [
    {
      ...next,
      healthy: false,
      since: now,
      source: "passive",
      cause: `${plural(failures, "consecutive failure")} of real traffic (last: ${error})`,
      // Recovery by active check needs fresh passes after the mark.
      checkSuccesses: 0
    },
    "unhealthy"
  ]
}

const toStatus = (state: State): Status => ({
  healthy: state.healthy,
  since: state.since,
  consecutiveFailures: state.checkFailures,
  consecutiveSuccesses: state.checkSuccesses,
  consecutiveTrafficFailures: state.trafficFailures,
  ...(state.lastError !== undefined ? { lastError: state.lastError } : {}),
  ...(state.lastCheckAt !== undefined ? { lastCheckAt: state.lastCheckAt } : {}),
  ...(state.source !== undefined ? { source: state.source } : {})
})

/** The earliest the upstream may serve again, in milliseconds from `now`, when that can be told. */
const retryAfterOf = (upstream: Topology.Upstream, state: State, now: number): number | undefined => {
  const check = upstream.healthCheck
  if (check !== undefined) {
    const nextCheck =
      state.lastCheckAt === undefined ? check.intervalMs : Math.max(0, state.lastCheckAt + check.intervalMs - now)
    const passesLeft = Math.max(1, check.healthyThreshold - state.checkSuccesses)
    return Math.max(1, nextCheck + (passesLeft - 1) * check.intervalMs)
  }
  const at = recoveryAt(upstream, state)
  return at === undefined ? undefined : Math.max(1, at - now)
}

/** Why a check failed. */
class CheckFailed {
  readonly _tag = "CheckFailed"
  constructor(readonly message: string) {}
}

/** A check not made this round: the upstream's budget is spent, which says nothing of its health. */
class CheckSkipped {
  readonly _tag = "CheckSkipped"
}

/** Tokens an inference check reserves: a one-word prompt with its framing, and one completion token. */
const PING_PROMPT_TOKENS = 8

/** The URL an `http` check GETs: absolute paths from the base URL's origin, relative ones under the base URL. */
const checkUrl = (upstream: Topology.Upstream, path: string): string =>
  path.startsWith("/") ? new URL(upstream.baseUrl).origin + path : `${upstream.baseUrl}/${path}`

const headersOf = (upstream: Topology.Upstream): Record<string, string> => {
  const headers: Record<string, string> = { ...upstream.headers }
  if (Option.isSome(upstream.apiKey)) headers["authorization"] = `Bearer ${Redacted.value(upstream.apiKey.value)}`
  return headers
}

/**
 * Runs a call admitted by the rate limiter and hands its outcome (usage, rate-limit headers, error or
 * interruption) to `release`.
 */
const releasedWith = (
  call: Effect.Effect<Provider.Answer<ChatCompletion>, UpstreamError>,
  release: (outcome: Guard.Outcome) => Effect.Effect<void>
): Effect.Effect<Provider.Answer<ChatCompletion>, UpstreamError> =>
  Effect.clockWith((clock) => {
    const started = clock.unsafeCurrentTimeMillis()
    const latencyMs = () => Math.max(0, clock.unsafeCurrentTimeMillis() - started)
    return Effect.onExit(call, (exit) => {
      if (exit._tag === "Success") {
        const usage = exit.value.value.usage
        return release({
          _tag: "Success",
          latencyMs: latencyMs(),
          inputTokens: usage?.prompt_tokens,
          outputTokens: usage?.completion_tokens,
          rateLimits: exit.value.rateLimits
        })
      }
      const failure = Cause.failureOption(exit.cause)
      return release(
        Option.isSome(failure)
          ? { _tag: "Failure", latencyMs: latencyMs(), error: failure.value, rateLimits: failure.value.rateLimits }
          : { _tag: "Interrupted", latencyMs: latencyMs() }
      )
    })
  })

/** Opens and closes a TCP connection; the socket is destroyed if the check is interrupted (timeout). */
const connect = (host: string, port: number): Effect.Effect<void, CheckFailed> =>
  Effect.async<void, CheckFailed>((resume) => {
    const socket = Net.connect({ host, port })
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.void)
    })
    socket.once("error", (error) => {
      socket.destroy()
      resume(Effect.fail(new CheckFailed(`connection to ${host}:${port} failed: ${error.message}`)))
    })
    return Effect.sync(() => socket.destroy())
  })

/**
 * Where the health of every upstream is kept: the store (read and changed synchronously through
 * `local`) and the state of an upstream it holds nothing for yet. Made once by {@link make}.
 */
interface Ledger {
  readonly store: StateStore.Service
  readonly initial: State
}

/** What active checks call: the HTTP client, the provider and, when assembled, the rate limiter. */
interface Probes {
  /** Scoped: closing a check's scope aborts its request. */
  readonly client: HttpClient.HttpClient.With<HttpClientError.HttpClientError, Scope.Scope>
  readonly provider: Provider.Service
  /**
   * With a rate limiter in the same assembly, inference checks spend the upstream's budget like any
   * request (and wait a round when it is spent), so they never cause the upstream's own 429s.
   */
  readonly limiter: Option.Option<RateLimiter.Service>
}

/** The log line of a transition, annotated with the upstream and what made it. */
const logTransition = (upstream: Topology.Upstream, state: State, transition: Transition): Effect.Effect<void> =>
  (transition === "unhealthy"
    ? Effect.logWarning(`upstream ${upstream.id} is unhealthy: ${state.cause ?? "unknown"}`)
    : transition === "healthy"
      ? Effect.logInfo(`upstream ${upstream.id} is healthy again`)
      : Effect.void
  ).pipe(Effect.annotateLogs({ "sluice.upstream": upstream.id, "sluice.health.source": state.source ?? "active" }))

/**
 * Applies `f` to the upstream's state atomically, at the step's time (time-based recovery first),
 * and leaves the log line of a transition on the step. Writes only when something changed, so an
 * absent key stays absent.
 */
const update = (
  ledger: Ledger,
  upstream: Topology.Upstream,
  step: Guard.Step,
  f: (state: State, now: number) => readonly [State, Transition]
): State => {
  const now = step.now
  const initial = ledger.initial
  const [state, transition] = ledger.store.local.modify<State, readonly [State, Transition]>(
    keyOf(upstream.id),
    (current) => {
      const [recovered, recovery] = recover(upstream, current ?? initial, now)
      const [next, stepped] = f(recovered, now)
      const changed = next !== (current ?? initial)
      return [[next, stepped ?? recovery], changed ? next : current]
    }
  )
  if (transition !== undefined) step.after(logTransition(upstream, state, transition))
  return state
}

const unchanged = (state: State): readonly [State, Transition] => [state, undefined]

/** The upstream's state at the step's time (time-based recovery applied and recorded). */
const read = (ledger: Ledger, upstream: Topology.Upstream, step: Guard.Step): State =>
  update(ledger, upstream, step, unchanged)

/** An `http` check: GET the check's path and expect its status. */
const probeHttp = (
  client: Probes["client"],
  upstream: Topology.Upstream,
  check: HealthCheckConfig
): Effect.Effect<void, CheckFailed> => {
  const url = checkUrl(upstream, check.path)
  return client.execute(HttpClientRequest.get(url).pipe(HttpClientRequest.setHeaders(headersOf(upstream)))).pipe(
    Effect.mapError((error) => new CheckFailed(`GET ${url} failed: ${error.message}`)),
    Effect.flatMap((response) =>
      response.status === check.expectStatus
        ? Effect.void
        : Effect.fail(new CheckFailed(`expected status ${check.expectStatus}, got ${response.status}`))
    ),
    // The scope aborts the request, so an unread body never holds the connection.
    Effect.scoped
  )
}

/** A `tcp` check: connect to the base URL's host and port. */
const probeTcp = (upstream: Topology.Upstream): Effect.Effect<void, CheckFailed> =>
  Effect.suspend(() => {
    const url = new URL(upstream.baseUrl)
    const host = url.hostname.replace(/^\[(.*)\]$/, "$1")
    const port = url.port !== "" ? Number(url.port) : url.protocol === "https:" ? 443 : 80
    return connect(host, port)
  })

/**
 * An `inference` check: a one-token chat request that must return a choice. With a rate limiter it
 * first reserves the upstream's budget, and is skipped (not failed) when that is spent.
 */
const probeInference = (
  provider: Provider.Service,
  limiter: Option.Option<RateLimiter.Service>,
  upstream: Topology.Upstream
): Effect.Effect<void, CheckFailed | CheckSkipped> => {
  const model = upstream.model ?? "health-check"
  const call = provider.chat(upstream, {
    request: { model, messages: [{ role: "user", content: "ping" }], max_tokens: 1 },
    model
  })
  const budgeted: Effect.Effect<Provider.Answer<ChatCompletion>, UpstreamError | CheckSkipped> = Option.isNone(limiter)
    ? call
    : Effect.matchEffect(limiter.value.reserve(upstream, PING_PROMPT_TOKENS, 1), {
        onFailure: (excluded) =>
          Effect.zipRight(
            Effect.logDebug(`inference check of upstream ${upstream.id} skipped: ${excluded.reason}`),
            Effect.fail(new CheckSkipped())
          ),
        onSuccess: (release) => releasedWith(call, release)
      })
  return budgeted.pipe(
    Effect.mapError((error) => (error instanceof CheckSkipped ? error : new CheckFailed(describeUpstreamError(error)))),
    Effect.flatMap((answer) =>
      answer.value.choices.length > 0 ? Effect.void : Effect.fail(new CheckFailed("the completion has no choices"))
    )
  )
}

/** One probe of the upstream, of the check's type, unbounded in time. */
const probe = (
  probes: Probes,
  upstream: Topology.Upstream,
  check: HealthCheckConfig
): Effect.Effect<void, CheckFailed | CheckSkipped> => {
  switch (check.type) {
    case "http":
      return probeHttp(probes.client, upstream, check)
    case "tcp":
      return probeTcp(upstream)
    case "inference":
      return probeInference(probes.provider, probes.limiter, upstream)
  }
}

/** One active check, recorded. Never fails: every problem is a failed check. */
const runCheck = (
  ledger: Ledger,
  probes: Probes,
  upstream: Topology.Upstream,
  check: HealthCheckConfig
): Effect.Effect<void> =>
  probe(probes, upstream, check).pipe(
    Effect.timeoutFail({
      duration: Duration.millis(check.timeoutMs),
      onTimeout: () => new CheckFailed(`no answer within ${check.timeoutMs} ms`)
    }),
    Effect.as<string | undefined | CheckSkipped>(undefined),
    Effect.catchAllCause((cause) =>
      Effect.succeed(
        Option.match(Cause.failureOption(cause), {
          onSome: (failed): string | CheckSkipped => (failed._tag === "CheckSkipped" ? failed : failed.message),
          onNone: () => `the check crashed: ${Cause.pretty(cause)}`
        })
      )
    ),
    Effect.flatMap((error) =>
      error instanceof CheckSkipped
        ? Effect.void
        : Guard.run((step) => update(ledger, upstream, step, (state, now) => recordCheck(check, state, error, now)))
    ),
    Effect.asVoid
  )

/**
 * The guard's `check` (hot path): excludes an unhealthy upstream, naming when it may serve again.
 * Upstreams with neither active nor passive health are never looked up.
 */
const checkWith =
  (ledger: Ledger): Guard.Guard["check"] =>
  (upstream, _request, step) => {
    if (upstream.healthCheck === undefined && upstream.passiveHealth === undefined) return undefined
    const state = read(ledger, upstream, step)
    if (state.healthy) return undefined
    const retryAfterMs = retryAfterOf(upstream, state, step.now)
    const exclusion: Exclusion = {
      upstream: upstream.id,
      stage: "health",
      reason: `unhealthy: ${state.cause ?? "unknown"}`,
      ...(retryAfterMs !== undefined ? { retryAfterMs } : {})
    }
    return exclusion
  }

/**
 * The guard's `admit` (hot path): with passive health, a release that records the outcome of real
 * traffic (interruptions and requests never sent say nothing); without it, {@link Guard.noRelease}.
 */
const admitWith =
  (ledger: Ledger): Guard.Guard["admit"] =>
  (attempt) => {
    const passive = attempt.upstream.passiveHealth
    if (passive === undefined) return Guard.noRelease
    const upstream = attempt.upstream
    return (outcome, step) => {
      if (outcome._tag === "Interrupted" || outcome._tag === "NotSent") return
      update(ledger, upstream, step, (state, now) => recordTraffic(passive, state, outcome, now))
    }
  }

/** Builds the health service and starts the active checks; they stop when the scope closes. */
export const make: Effect.Effect<
  Service,
  never,
  Scope.Scope | StateStore.StateStore | Topology.Topology | Provider.Provider | HttpClient.HttpClient
> = Effect.gen(function* () {
  const store = yield* StateStore.StateStore
  const topology = yield* Topology.Topology
  const probes: Probes = {
    provider: yield* Provider.Provider,
    client: HttpClient.withScope(yield* HttpClient.HttpClient),
    limiter: yield* Effect.serviceOption(RateLimiter.RateLimiter)
  }
  const startedAt = yield* Clock.currentTimeMillis
  const initial: State = { healthy: true, since: startedAt, checkFailures: 0, checkSuccesses: 0, trafficFailures: 0 }
  const ledger: Ledger = { store, initial }

  for (const upstream of topology.upstreams.values()) {
    const check = upstream.healthCheck
    // A disabled upstream serves nothing: checking it would only cost (an inference check is a paid request).
    if (check === undefined || !upstream.enabled) continue
    yield* runCheck(ledger, probes, upstream, check).pipe(
      // A store that fails must not end the checks for good: the next round tries again.
      Effect.catchAllCause((cause) => Effect.logError(`health check of upstream ${upstream.id} not recorded`, cause)),
      Effect.repeat(Schedule.spaced(Duration.millis(check.intervalMs))),
      Effect.annotateLogs({ "sluice.upstream": upstream.id }),
      Effect.forkScoped
    )
  }

  // Untraced: readiness probes, /metrics scrapes and admin status read it per upstream, and each read
  // would otherwise be a root trace of its own.
  const status = Effect.fnUntraced(function* (upstreamId: string) {
    const upstream = topology.upstreams.get(upstreamId)
    if (upstream === undefined) return toStatus(initial)
    return toStatus(yield* Guard.run((step) => read(ledger, upstream, step)))
  })

  const checkNow = Effect.fn("Health.checkNow")(function* (upstreamId: string) {
    const upstream = topology.upstreams.get(upstreamId)
    if (upstream?.healthCheck === undefined || !upstream.enabled) return
    yield* runCheck(ledger, probes, upstream, upstream.healthCheck)
  })

  return Health.of({ guard: { name: "health", check: checkWith(ledger), admit: admitWith(ledger) }, status, checkNow })
})

/** The health layer; active checks run for as long as the layer's scope (the router's lifetime). */
export const layer: Layer.Layer<
  Health,
  never,
  StateStore.StateStore | Topology.Topology | Provider.Provider | HttpClient.HttpClient
> = Layer.scoped(Health, make)

/** The health guard, for `Guard.layer(Health.guard, ...)`. */
export const guard: Effect.Effect<Guard.Guard, never, Health> = Effect.map(Health, (health) => health.guard)
