/**
 * CircuitBreaker: a guard that stops sending requests to an upstream that keeps failing, then lets
 * a few probes through to find out whether it has recovered (Finagle's failure accrual, tower's
 * breaker). Per upstream, with the settings of `upstream.circuitBreaker`:
 *
 * ```
 * closed ── failures in windowMs ≥ failureThreshold (or the failure ratio, or 429s) ──► open
 * open ── recoveryMs later ──► half-open ── successThreshold probe successes ──► closed
 *                                  └── a probe failure ──► open (a fresh recoveryMs)
 * ```
 *
 * State lives in the {@link StateStore} under `cb:<upstreamId>` and changes only through pure
 * reducers run by `StateStore.local.modify` (the guard, synchronously, on the hot path) or
 * `StateStore.modify` (`snapshot` and `reset`), so the breaker is ready for a store shared by
 * gateway instances. Time comes from `Clock` (the guard reads it from its {@link Guard.Step}); the
 * open → half-open step is computed when the breaker is next consulted, so no timers run.
 * Transitions are logged and recorded as `sluice.circuit_breaker.transition` events on the current
 * span: the guard leaves them on its step, so they land on the span of the request that caused them.
 */
import { Clock, Context, Effect, Layer, Metric } from "effect"
import type * as Config from "./Config.js"
import type { Exclusion, UpstreamError } from "./Errors.js"
import * as Guard from "./Guard.js"
import { StateStore } from "./StateStore.js"
import type * as Topology from "./Topology.js"
import { withLast } from "./internal/rows.js"

/** Where a breaker stands. */
export type State = "closed" | "open" | "half-open"

/**
 * One upstream's breaker as the admin API shows it. While closed the counts are those of the
 * current window; while open or half-open they are the counts that opened it.
 */
export interface Snapshot {
  readonly state: State
  /** Failures counted toward `failureThreshold` / `failureRatio` (classes in `countAs`, 429s apart). */
  readonly failures: number
  /** 429 answers (saturates at the `rateLimitThreshold`, or at 100 without one). */
  readonly rateLimited: number
  /** Answered requests: successes, failures, 429s and client errors. */
  readonly requests: number
  /** Half-open probes in flight. */
  readonly probesInFlight: number
  /** Successful probes of the current half-open period. */
  readonly probeSuccesses: number
  /** When it opened (epoch ms), while open or half-open. */
  readonly openedAt?: number
  /** When it goes half-open (epoch ms), while open. */
  readonly reopensAt?: number
  /** The last failure or 429 counted, e.g. `HTTP 500: upstream answered 500`. */
  readonly lastFailure?: string
}

/** The circuit breakers of every upstream. */
export interface Service {
  /** The guard (name `circuit-breaker`) to put in the pipeline's {@link Guard.Guards}. */
  readonly guard: Guard.Guard
  /** The breaker of `upstream` now (moving it to half-open if its recovery time has passed). */
  readonly snapshot: (upstream: Topology.Upstream) => Effect.Effect<Snapshot>
  /**
   * Closes the breaker of `upstreamId` and forgets its counts and last failure. Probes in flight
   * then count as ordinary requests.
   */
  readonly reset: (upstreamId: string) => Effect.Effect<void>
}

/** The circuit breakers of every upstream. */
export class CircuitBreaker extends Context.Tag("@sluice/core/CircuitBreaker")<CircuitBreaker, Service>() {}

/**
 * What a failed call counts as: `"429"` for rate limiting, `"5xx"` for server errors, `"timeout"`
 * for timeouts (HTTP 408 included), `"connection"` and `"protocol"` as the provider reported them.
 * `undefined` for other 4xx answers: the request's fault, not the upstream's, so never counted.
 */
export const classify = (error: UpstreamError): Config.FailureClass | undefined => {
  switch (error.kind) {
    case "timeout":
      return "timeout"
    case "connection":
      return "connection"
    case "protocol":
      return "protocol"
    case "http": {
      const status = error.status
      if (status === undefined || status < 400) return "protocol"
      if (status === 429) return "429"
      if (status === 408) return "timeout"
      return status >= 500 ? "5xx" : undefined
    }
  }
}

// ---------------------------------------------------------------------------------------------
// State: small and JSON-serialisable. Failures and 429s are kept as exact times (only the newest
// `threshold` of them can decide anything); request counts, needed only for the ratio and the
// snapshot, are bucketed.

interface Stored {
  readonly state: State
  /** Bumped on every transition; a probe's release only counts in the half-open period it probed. */
  readonly gen: number
  /** Times of counted failures in the window, oldest first, at most `failureThreshold`. */
  readonly failures: ReadonlyArray<number>
  /** Times of 429s in the window, oldest first, at most `rateLimitThreshold` (or 100). */
  readonly limited: ReadonlyArray<number>
  /** `[bucket start, answered requests]`, oldest first, `BUCKETS` to a window. */
  readonly buckets: ReadonlyArray<readonly [number, number]>
  /** Admission times of the probes in flight (half-open only). */
  readonly probes: ReadonlyArray<number>
  /** Successful probes of this half-open period. */
  readonly successes: number
  readonly openedAt?: number
  /** Why it opened, e.g. `5 failures in 60s (last: HTTP 500: boom)`. */
  readonly cause?: string
  readonly lastFailure?: string
}

/** What a guard's admission remembers for its release. */
interface Ticket {
  readonly gen: number
  readonly probe: boolean
  readonly at: number
}

/** The ticket of every admission outside a probe: its release reads neither `gen` nor `at`. */
const ORDINARY: Ticket = { gen: 0, probe: false, at: 0 }

type Transition =
  | { readonly to: "open"; readonly cause: string; readonly fromProbe: boolean }
  | { readonly to: "half-open"; readonly probes: number }
  | { readonly to: "closed"; readonly why: string }

const BUCKETS = 10
const TRACKED_RATE_LIMITS = 100
const MESSAGE_MAX = 200
const STAGE = "circuit-breaker"

const keyOf = (upstreamId: string) => `cb:${upstreamId}`

const closed = (gen: number): Stored => ({
  state: "closed",
  gen,
  failures: [],
  limited: [],
  buckets: [],
  probes: [],
  successes: 0
})

const bucketMs = (settings: Config.CircuitBreakerConfig) => Math.max(1, Math.ceil(settings.windowMs / BUCKETS))

const requestsOf = (stored: Stored) => stored.buckets.reduce((sum, [, count]) => sum + count, 0)

const NO_TRANSITIONS: ReadonlyArray<Transition> = []

/** True when every time in `times` is after `from` (nothing to drop from the window). */
const allAfter = (times: ReadonlyArray<number>, from: number): boolean => {
  for (const at of times) if (at <= from) return false
  return true
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`

const formatMs = (ms: number): string => {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`
  const seconds = ms / 1000
  if (seconds < 120) return `${Number.isInteger(seconds) ? seconds : seconds.toFixed(1)}s`
  const minutes = seconds / 60
  return `${Number.isInteger(minutes) ? minutes : minutes.toFixed(1)}m`
}

/** A wait rounded up to whole seconds past one second, as a client would retry. */
const formatWait = (ms: number) => formatMs(ms < 1000 ? ms : Math.ceil(ms / 1000) * 1000)

const describeError = (error: UpstreamError): string => {
  const what = error.kind === "http" ? `HTTP ${error.status ?? "error"}` : error.kind
  const message = error.message.length > MESSAGE_MAX ? `${error.message.slice(0, MESSAGE_MAX)}…` : error.message
  return message.startsWith(what) ? message : `${what}: ${message}`
}

/**
 * Brings stored state up to `now`: drops what left the window, moves an open breaker past its
 * recovery time to half-open, takes back probe slots held past their lease (a gateway instance
 * that died mid-probe must not hold the breaker half-open forever). Returns `stored` itself when
 * nothing changed, so a store can skip the write.
 */
const settle = (stored: Stored, upstream: Topology.Upstream, now: number): [Stored, Transition | undefined] => {
  const settings = upstream.circuitBreaker
  switch (stored.state) {
    case "closed": {
      const from = now - settings.windowMs
      const size = bucketMs(settings)
      // The common case, checked without copying: nothing has left the window.
      if (allAfter(stored.failures, from) && allAfter(stored.limited, from)) {
        let fresh = true
        for (const [start] of stored.buckets) if (start + size <= from) fresh = false
        if (fresh) return [stored, undefined]
      }
      const failures = stored.failures.filter((at) => at > from)
      const limited = stored.limited.filter((at) => at > from)
      const buckets = stored.buckets.filter(([start]) => start + size > from)
      const same =
        failures.length === stored.failures.length &&
        limited.length === stored.limited.length &&
        buckets.length === stored.buckets.length
      return [same ? stored : { ...stored, failures, limited, buckets }, undefined]
    }
    case "open": {
      if (now < (stored.openedAt ?? 0) + settings.recoveryMs) return [stored, undefined]
      return [
        { ...stored, state: "half-open", gen: stored.gen + 1, probes: [], successes: 0 },
        { to: "half-open", probes: settings.halfOpenProbes }
      ]
    }
    case "half-open": {
      const lease = upstream.timeoutMs + settings.recoveryMs
      const probes = stored.probes.filter((at) => at + lease > now)
      return [probes.length === stored.probes.length ? stored : { ...stored, probes }, undefined]
    }
  }
}

const open = (stored: Stored, now: number, cause: string, fromProbe: boolean): [Stored, Transition] => [
  { ...stored, state: "open", gen: stored.gen + 1, probes: [], successes: 0, openedAt: now, cause },
  { to: "open", cause, fromProbe }
]

// Built only when the breaker trips (`tripped` runs on every release).
const windowOf = (settings: Config.CircuitBreakerConfig) => formatMs(settings.windowMs)
const lastOf = (stored: Stored) => (stored.lastFailure === undefined ? "" : ` (last: ${stored.lastFailure})`)

/** Why a closed breaker with these counts should open now, or undefined. */
const tripped = (stored: Stored, settings: Config.CircuitBreakerConfig): string | undefined => {
  const failures = stored.failures.length
  if (failures >= settings.failureThreshold)
    return `${plural(failures, "failure")} in ${windowOf(settings)}${lastOf(stored)}`
  if (settings.failureRatio !== undefined && failures > 0) {
    const requests = requestsOf(stored)
    if (requests >= settings.minimumRequests && failures / requests >= settings.failureRatio) {
      const percent = Math.round((failures / requests) * 100)
      return `${plural(failures, "failure")} in ${plural(requests, "request")} (${percent}%) in ${windowOf(settings)}${lastOf(stored)}`
    }
  }
  if (settings.rateLimitThreshold !== undefined && stored.limited.length >= settings.rateLimitThreshold) {
    return `${plural(stored.limited.length, "rate-limited answer")} (429) in ${windowOf(settings)}${lastOf(stored)}`
  }
  return undefined
}

/** Counts one answered request in a closed breaker (already settled) and opens it if tripped. */
const count = (
  stored: Stored,
  upstream: Topology.Upstream,
  outcome: Guard.Outcome,
  now: number
): [Stored, Transition | undefined] => {
  const settings = upstream.circuitBreaker
  const size = bucketMs(settings)
  const start = now - (now % size)
  const lastBucket = stored.buckets[stored.buckets.length - 1]
  const buckets: ReadonlyArray<readonly [number, number]> =
    lastBucket !== undefined && lastBucket[0] === start
      ? withLast(stored.buckets, [start, lastBucket[1] + 1] as const)
      : [...stored.buckets, [start, 1]]
  let next: Stored = { ...stored, buckets }
  if (outcome._tag === "Failure") {
    const failureClass = classify(outcome.error)
    if (failureClass === "429") {
      const cap = settings.rateLimitThreshold ?? TRACKED_RATE_LIMITS
      next = { ...next, limited: [...next.limited, now].slice(-cap), lastFailure: describeError(outcome.error) }
    } else if (failureClass !== undefined && settings.countAs.includes(failureClass)) {
      next = {
        ...next,
        failures: [...next.failures, now].slice(-settings.failureThreshold),
        lastFailure: describeError(outcome.error)
      }
    }
  }
  const cause = tripped(next, settings)
  return cause === undefined ? [next, undefined] : open(next, now, cause, false)
}

/** Whether a probe's failure says the upstream has not recovered. */
const probeFailed = (error: UpstreamError, settings: Config.CircuitBreakerConfig): boolean => {
  const failureClass = classify(error)
  if (failureClass === undefined) return false
  if (failureClass === "429") return settings.rateLimitThreshold !== undefined
  return settings.countAs.includes(failureClass)
}

/** Settles a probe of the current half-open period. */
const finishProbe = (
  stored: Stored,
  upstream: Topology.Upstream,
  ticket: Ticket,
  outcome: Guard.Outcome,
  now: number
): [Stored, Transition | undefined] => {
  const settings = upstream.circuitBreaker
  const index = stored.probes.indexOf(ticket.at)
  const probes = index < 0 ? stored.probes : [...stored.probes.slice(0, index), ...stored.probes.slice(index + 1)]
  const freed: Stored = { ...stored, probes }
  switch (outcome._tag) {
    case "Interrupted":
    case "NotSent":
      return [freed, undefined]
    case "Success": {
      const successes = stored.successes + 1
      if (successes < settings.successThreshold) return [{ ...freed, successes }, undefined]
      return [
        { ...closed(stored.gen + 1), ...(stored.lastFailure === undefined ? {} : { lastFailure: stored.lastFailure }) },
        { to: "closed", why: `after ${plural(successes, "successful probe")}` }
      ]
    }
    case "Failure": {
      // A probe the request itself spoiled (400) or a 429 that may not open the breaker proves
      // nothing either way: the slot frees for the next probe.
      if (!probeFailed(outcome.error, settings)) return [freed, undefined]
      const lastFailure = describeError(outcome.error)
      return open({ ...freed, lastFailure }, now, `a failed half-open probe (last: ${lastFailure})`, true)
    }
  }
}

const release = (
  current: Stored | undefined,
  upstream: Topology.Upstream,
  ticket: Ticket,
  outcome: Guard.Outcome,
  now: number
): [Stored | undefined, ReadonlyArray<Transition>] => {
  const [stored, settled] = settle(current ?? closed(0), upstream, now)
  const transitions = settled === undefined ? NO_TRANSITIONS : [settled]
  const after = (next: Stored, transition: Transition | undefined): [Stored, ReadonlyArray<Transition>] => [
    next,
    transition === undefined ? transitions : [...transitions, transition]
  ]
  switch (stored.state) {
    case "closed":
      // Requests admitted before a reset or before the breaker closed again count like new ones.
      if (outcome._tag === "Interrupted" || outcome._tag === "NotSent") return [stored, transitions]
      return after(...count(stored, upstream, outcome, now))
    case "half-open":
      if (ticket.probe && ticket.gen === stored.gen)
        return after(...finishProbe(stored, upstream, ticket, outcome, now))
      return [stored, transitions]
    case "open":
      // Requests admitted before it opened: their news is stale, the probes will decide.
      return [stored, transitions]
  }
}

const openExclusion = (stored: Stored, upstream: Topology.Upstream, now: number): Exclusion => {
  const retryAfterMs = Math.max(1, (stored.openedAt ?? now) + upstream.circuitBreaker.recoveryMs - now)
  return {
    upstream: upstream.id,
    stage: STAGE,
    reason: `circuit open after ${stored.cause ?? "failures"}; half-open in ${formatWait(retryAfterMs)}`,
    retryAfterMs
  }
}

const probeExclusion = (stored: Stored, upstream: Topology.Upstream): Exclusion => ({
  upstream: upstream.id,
  stage: STAGE,
  reason:
    stored.probes.length === 1
      ? "circuit half-open, probe in flight"
      : `circuit half-open, ${stored.probes.length} probes in flight`
})

/** The exclusion a settled breaker imposes now, or undefined. */
const exclusionOf = (stored: Stored, upstream: Topology.Upstream, now: number): Exclusion | undefined => {
  switch (stored.state) {
    case "closed":
      return undefined
    case "open":
      return openExclusion(stored, upstream, now)
    case "half-open":
      return stored.probes.length < upstream.circuitBreaker.halfOpenProbes
        ? undefined
        : probeExclusion(stored, upstream)
  }
}

/** What an admission decided: a ticket or an exclusion, and the transition settling the breaker made, if any. */
interface Admission {
  readonly ticket?: Ticket
  readonly excluded?: Exclusion
  readonly transition?: Transition
}

const ADMITTED: Admission = { ticket: ORDINARY }

/** Re-checks and, in half-open, takes a probe slot: the body of `admit`'s `modify`. */
const admission = (
  current: Stored | undefined,
  upstream: Topology.Upstream,
  now: number
): [Admission, Stored | undefined] => {
  if (current === undefined) return [ADMITTED, undefined]
  const [stored, transition] = settle(current, upstream, now)
  const excluded = exclusionOf(stored, upstream, now)
  if (excluded !== undefined) return [transition === undefined ? { excluded } : { excluded, transition }, stored]
  if (stored.state === "closed") return [transition === undefined ? ADMITTED : { ticket: ORDINARY, transition }, stored]
  const ticket: Ticket = { gen: stored.gen, probe: true, at: now }
  return [
    transition === undefined ? { ticket } : { ticket, transition },
    { ...stored, probes: [...stored.probes, now] }
  ]
}

const snapshotOf = (stored: Stored, upstream: Topology.Upstream): Snapshot => ({
  state: stored.state,
  failures: stored.failures.length,
  rateLimited: stored.limited.length,
  requests: requestsOf(stored),
  probesInFlight: stored.probes.length,
  probeSuccesses: stored.successes,
  ...(stored.state !== "closed" && stored.openedAt !== undefined ? { openedAt: stored.openedAt } : {}),
  ...(stored.state === "open" && stored.openedAt !== undefined
    ? { reopensAt: stored.openedAt + upstream.circuitBreaker.recoveryMs }
    : {}),
  ...(stored.lastFailure === undefined ? {} : { lastFailure: stored.lastFailure })
})

const emptySnapshot: Snapshot = {
  state: "closed",
  failures: 0,
  rateLimited: 0,
  requests: 0,
  probesInFlight: 0,
  probeSuccesses: 0
}

/**
 * Breaker transitions by upstream and the state entered (`open`, `half-open`, `closed`): an Effect
 * `Metric` in the global registry, which the server's `/metrics` exposes with its own.
 */
export const transitions = Metric.counter("sluice.circuit_breaker.transitions", {
  description: "Circuit breaker transitions by upstream and the state entered."
})

/** Logs a transition, counts it and records it as an event on the current span. Runs only on transitions. */
const announce = (upstream: Topology.Upstream, transition: Transition): Effect.Effect<void> =>
  Effect.gen(function* () {
    const message =
      transition.to === "open"
        ? `circuit for upstream ${upstream.id} ${transition.fromProbe ? "reopened" : "opened"}: ${transition.cause}; ` +
          `half-open in ${formatWait(upstream.circuitBreaker.recoveryMs)}`
        : transition.to === "half-open"
          ? `circuit for upstream ${upstream.id} half-open: admitting ${plural(transition.probes, "probe")}`
          : `circuit for upstream ${upstream.id} closed ${transition.why}`
    yield* Metric.increment(Metric.tagged(Metric.tagged(transitions, "upstream", upstream.id), "state", transition.to))
    // An open breaker is a warning: an upstream stopped serving.
    yield* (transition.to === "open" ? Effect.logWarning : Effect.logInfo)(message).pipe(
      Effect.annotateLogs({ "sluice.upstream": upstream.id, "sluice.circuit_breaker.state": transition.to })
    )
    const span = yield* Effect.option(Effect.currentSpan)
    if (span._tag === "Some") {
      span.value.event("sluice.circuit_breaker.transition", yield* Clock.currentTimeNanos, {
        "sluice.upstream": upstream.id,
        "sluice.circuit_breaker.state": transition.to,
        "sluice.circuit_breaker.reason": message
      })
    }
  })

/** Leaves the announcement of each transition on the step, in order. */
const announceAll = (step: Guard.Step, upstream: Topology.Upstream, transitions: ReadonlyArray<Transition>): void => {
  for (const transition of transitions) step.after(announce(upstream, transition))
}

/** The result of a check that found nothing to exclude and no transition. */
const PASS: readonly [Exclusion | undefined, Transition | undefined] = [undefined, undefined]

/** Builds the breakers over the {@link StateStore} (shared by every gateway instance using that store). */
export const make: Effect.Effect<Service, never, StateStore> = Effect.gen(function* () {
  const store = yield* StateStore
  const local = store.local

  const check: Guard.Guard["check"] = (upstream, _request, step) => {
    if (!upstream.circuitBreaker.enabled) return undefined
    const now = step.now
    const [excluded, transition] = local.modify<Stored, readonly [Exclusion | undefined, Transition | undefined]>(
      keyOf(upstream.id),
      (current) => {
        if (current === undefined) return [PASS, undefined]
        const [stored, transition] = settle(current, upstream, now)
        const excluded = exclusionOf(stored, upstream, now)
        return [excluded === undefined && transition === undefined ? PASS : [excluded, transition], stored]
      }
    )
    if (transition !== undefined) step.after(announce(upstream, transition))
    return excluded
  }

  /** The release of one admission; a second call does nothing (see {@link Guard.once}). */
  const releaseFor = (upstream: Topology.Upstream, ticket: Ticket): Guard.Release => {
    let done = false
    return (outcome, step) => {
      if (done) return
      done = true
      // Nothing was reserved outside a probe, so an interrupted ordinary call has nothing to undo.
      if ((outcome._tag === "Interrupted" || outcome._tag === "NotSent") && !ticket.probe) return
      const now = step.now
      const transitions = local.modify<Stored, ReadonlyArray<Transition>>(keyOf(upstream.id), (current) => {
        const [next, transitions] = release(current, upstream, ticket, outcome, now)
        return [transitions, next]
      })
      announceAll(step, upstream, transitions)
    }
  }

  const admit: Guard.Guard["admit"] = (attempt, step) => {
    const upstream = attempt.upstream
    if (!upstream.circuitBreaker.enabled) return Guard.noRelease
    const now = step.now
    const result = local.modify<Stored, Admission>(keyOf(upstream.id), (current) => admission(current, upstream, now))
    if (result.transition !== undefined) step.after(announce(upstream, result.transition))
    return result.ticket === undefined ? result.excluded! : releaseFor(upstream, result.ticket)
  }

  // Untraced: readiness probes, /metrics scrapes and admin status read it per upstream, and each read
  // would otherwise be a root trace of its own.
  const snapshot = Effect.fnUntraced(function* (upstream: Topology.Upstream) {
    if (!upstream.circuitBreaker.enabled) return emptySnapshot
    const now = yield* Clock.currentTimeMillis
    const [result, transition] = yield* store.modify<Stored, readonly [Snapshot, Transition | undefined]>(
      keyOf(upstream.id),
      (current) => {
        if (current === undefined) return [[emptySnapshot, undefined], undefined]
        const [stored, transition] = settle(current, upstream, now)
        return [[snapshotOf(stored, upstream), transition], stored]
      }
    )
    if (transition !== undefined) yield* announce(upstream, transition)
    return result
  })

  const reset = Effect.fn("CircuitBreaker.reset")(function* (upstreamId: string) {
    const was = yield* store.modify<Stored, State>(keyOf(upstreamId), (current) =>
      // The generation survives, so a probe of a period before the reset cannot count in a later one.
      current === undefined ? ["closed", undefined] : [current.state, closed(current.gen + 1)]
    )
    yield* Effect.logInfo(`circuit for upstream ${upstreamId} reset (was ${was})`).pipe(
      Effect.annotateLogs({ "sluice.upstream": upstreamId, "sluice.circuit_breaker.state": "closed" })
    )
  })

  const guard: Guard.Guard = { name: STAGE, check, admit }
  return CircuitBreaker.of({ guard, snapshot, reset })
})

/** The circuit breakers, over the {@link StateStore} provided. */
export const layer: Layer.Layer<CircuitBreaker, never, StateStore> = Layer.effect(CircuitBreaker, make)

/** The breakers' guard, for `Guard.layer(CircuitBreaker.guard, ...)`. */
export const guard: Effect.Effect<Guard.Guard, never, CircuitBreaker> = Effect.map(CircuitBreaker, (s) => s.guard)
