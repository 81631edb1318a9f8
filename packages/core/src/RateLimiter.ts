/**
 * RateLimiter: a guard that keeps each upstream within its `limits` — requests per minute, tokens
 * per minute (prompt + reserved completion) and requests in flight — and within what the upstream
 * itself reports (`x-ratelimit-remaining-*`, a 429's `Retry-After`). Absent limits are unlimited.
 *
 * Budgets are SLIDING 60 s windows, as upstreams enforce them: whatever was admitted at `t` counts
 * until `t + 60 s`, so no 60 s window ever holds more than `rpm` requests or `tpm` tokens (a token
 * bucket that starts full would let twice the limit through in the first minute). The window is kept
 * as 1-second buckets (at most 61), each freeing 60 s after its last admission: never more permissive
 * than an exact log, at most 1 s more conservative for requests admitted early in a bucket, and small
 * enough to copy on every admission.
 *
 * ```
 * check  ─ would admitting now exceed a budget? ─► Exclusion { waitable, retryAfterMs } | undefined
 * admit  ─ one atomic StateStore.local.modify: re-check, then reserve 1 request + tokens + 1 slot
 * release(outcome) ─ frees the slot; corrects the tokens to the actual usage; learns the upstream's
 *                    reported limits; moves `version` and wakes `changed`
 * ```
 *
 * `check`, `admit`, releases and `tokenHeadroom` are synchronous (the hot path): pure reducers run
 * by `StateStore.local.modify` with the time of the {@link Guard.Step}. `snapshot` and `reserve` are
 * effects, for callers off the hot path. State lives in the {@link StateStore} under
 * `rl:<upstreamId>`. Time comes from `Clock`: windows slide and learned limits expire when the guard
 * is next consulted, so no background timers run (only a fiber waiting on `changed` sleeps, until the
 * next learned expiry).
 */
import { Clock, Context, Deferred, Duration, Effect, Exit, FiberId, Layer } from "effect"
import type { Exclusion } from "./Errors.js"
import * as Guard from "./Guard.js"
import type { RateLimitInfo } from "./Provider.js"
import { StateStore } from "./StateStore.js"
import type { Local } from "./StateStore.js"
import type * as Topology from "./Topology.js"
import { withLast, withoutRow, withRow } from "./internal/rows.js"

/** The length of the sliding windows of `rpm` and `tpm`, in milliseconds. */
export const WINDOW_MS = 60_000

/**
 * How long an in-flight slot is held at most, past the upstream's `timeoutMs`, before it is taken
 * back: a gateway instance that dies mid-request must not hold a shared slot forever. A stream that
 * outlives it frees its slot early.
 */
export const LEASE_MS = 10 * 60_000

/** How long a 429 that names no wait (no `Retry-After`, no reset time) holds the upstream. */
export const DEFAULT_RATE_LIMITED_MS = 1_000

/** An upstream's budget as the rate limiter sees it now. */
export interface Budget {
  /** Requests admitted in the last 60 s. */
  readonly requestsUsed: number
  /**
   * Tokens admitted in the last 60 s: the reservation (prompt + reserved completion) of requests in
   * flight, the actual usage of finished ones.
   */
  readonly tokensUsed: number
  /** Requests admitted and not yet released. */
  readonly inFlight: number
  /** When (epoch ms) a 429's `Retry-After` stops holding the upstream, while it does. */
  readonly blockedUntil?: number
  /** Requests the upstream last reported remaining, less those admitted since, until its reset. */
  readonly remainingRequests?: number
  /** Tokens the upstream last reported remaining, less those admitted since, until its reset. */
  readonly remainingTokens?: number
  /** When (epoch ms) the last of the limits learned from the upstream expires, while any holds. */
  readonly learnedUntil?: number
}

/** The rate limits of every upstream. */
export interface Service {
  /** The guard (name `rate-limiter`) to put in the pipeline's {@link Guard.Guards}. */
  readonly guard: Guard.Guard
  /**
   * Admits a request Sluice makes outside routing (an inference health check) against `upstream`'s
   * budgets, reserving `promptTokens + outputTokens`; fails with the {@link Exclusion} when the
   * budget is spent. Succeeds with the release, an effect to run exactly once with the outcome (as
   * {@link Guard.admit}'s).
   */
  readonly reserve: (
    upstream: Topology.Upstream,
    promptTokens: number,
    outputTokens: number
  ) => Effect.Effect<(outcome: Guard.Outcome) => Effect.Effect<void>, Exclusion>
  /** The budget of `upstream` now, with its configured limits. */
  readonly snapshot: (
    upstream: Topology.Upstream
  ) => Effect.Effect<Budget & { readonly limits: Topology.Upstream["limits"] }>
}

/** The rate limits of every upstream. */
export class RateLimiter extends Context.Tag("@sluice/core/RateLimiter")<RateLimiter, Service>() {}

// ---------------------------------------------------------------------------------------------
// State: small and JSON-serialisable.

/** `[bucket start, last admission, requests, tokens]`: one second of admissions. */
type Bucket = readonly [start: number, last: number, requests: number, tokens: number]

/** `[bucket start, requests in flight]`: the requests admitted in one second and not yet released. */
type Flight = readonly [start: number, count: number, reservedOutput: number]

/** A limit the upstream reported: `remaining` more until `until`; admissions since `since` are charged to it. */
interface Learned {
  readonly remaining: number
  readonly until: number
  readonly since: number
}

interface Stored {
  /** Oldest first; each bucket frees `WINDOW_MS` after its last admission. */
  readonly window: ReadonlyArray<Bucket>
  /** Oldest first. */
  readonly flights: ReadonlyArray<Flight>
  /** A hold the upstream asked for: until when, and the status that asked (429, or e.g. a 503 with Retry-After; 0 when none). */
  readonly blocked?: { readonly until: number; readonly status: number }
  readonly requests?: Learned
  readonly tokens?: Learned
}

/** What an admission remembers for its release. */
interface Ticket {
  readonly at: number
  /** The start of the window bucket and of the flight bucket the admission was counted in. */
  readonly bucket: number
  readonly flight: number
  readonly promptTokens: number
  readonly outputTokens: number
}

const STAGE = "rate-limiter"
const BUCKET_MS = 1_000

const keyOf = (upstreamId: string) => `rl:${upstreamId}`

const empty: Stored = { window: [], flights: [] }

const leaseOf = (upstream: Topology.Upstream) => upstream.timeoutMs + LEASE_MS

const isEmpty = (stored: Stored) =>
  stored.window.length === 0 &&
  stored.flights.length === 0 &&
  stored.blocked === undefined &&
  stored.requests === undefined &&
  stored.tokens === undefined

/** `stored` brought up to `now`: what left the window or expired is dropped. `stored` itself when nothing did. */
const settle = (stored: Stored, leaseMs: number, now: number): Stored => {
  let w = 0
  while (w < stored.window.length && stored.window[w]![1] + WINDOW_MS <= now) w++
  let f = 0
  while (f < stored.flights.length && stored.flights[f]![0] + leaseMs <= now) f++
  const blockExpired = stored.blocked !== undefined && stored.blocked.until <= now
  const requestsExpired = stored.requests !== undefined && stored.requests.until <= now
  const tokensExpired = stored.tokens !== undefined && stored.tokens.until <= now
  if (w === 0 && f === 0 && !blockExpired && !requestsExpired && !tokensExpired) return stored
  const next: { -readonly [K in keyof Stored]: Stored[K] } = {
    window: w === 0 ? stored.window : stored.window.slice(w),
    flights: f === 0 ? stored.flights : stored.flights.slice(f)
  }
  if (stored.blocked !== undefined && !blockExpired) next.blocked = stored.blocked
  if (stored.requests !== undefined && !requestsExpired) next.requests = stored.requests
  if (stored.tokens !== undefined && !tokensExpired) next.tokens = stored.tokens
  return next
}

/** The next state to store: none at all when nothing is left to remember. */
const orRemove = (stored: Stored): Stored | undefined => (isEmpty(stored) ? undefined : stored)

const sum = (rows: ReadonlyArray<ReadonlyArray<number>>, column: number): number => {
  let total = 0
  for (const row of rows) total += row[column]!
  return total
}

/** Milliseconds until the window has freed `need` of `column` (oldest buckets free first). */
const freesIn = (window: ReadonlyArray<Bucket>, column: 2 | 3, need: number, now: number): number => {
  let freed = 0
  for (const bucket of window) {
    freed += bucket[column]
    if (freed >= need) return Math.max(1, bucket[1] + WINDOW_MS - now)
  }
  return WINDOW_MS
}

const formatMs = (ms: number): string => {
  if (ms < 1000) return `${Math.max(0, Math.ceil(ms))}ms`
  const trim = (n: number) => n.toFixed(1).replace(/\.0$/, "")
  return ms < 120_000 ? `${trim(ms / 1000)}s` : `${trim(ms / 60_000)}m`
}

/**
 * Why `upstream` cannot take a request reserving `tokens` now (`stored` settled), or undefined.
 * Of several time-bound reasons the one that clears last is given: nothing fits before it.
 */
const exclusionOf = (
  stored: Stored,
  upstream: Topology.Upstream,
  tokens: number,
  now: number
): Exclusion | undefined => {
  const { maxConcurrency, rpm, tpm } = upstream.limits
  if (tpm !== undefined && tokens > tpm) {
    return {
      upstream: upstream.id,
      stage: STAGE,
      reason: `needs ${tokens} tokens, TPM limit is ${tpm}`,
      waitable: false
    }
  }
  let worst: Exclusion | undefined
  const consider = (retryAfterMs: number, reason: (wait: string) => string) => {
    const ms = Math.max(1, Math.ceil(retryAfterMs))
    if (worst === undefined || ms > worst.retryAfterMs!) {
      worst = { upstream: upstream.id, stage: STAGE, reason: reason(formatMs(ms)), retryAfterMs: ms, waitable: true }
    }
  }
  if (stored.blocked !== undefined) {
    const status = stored.blocked.status
    consider(
      stored.blocked.until - now,
      (wait) => `the upstream answered ${status === 0 ? "with a Retry-After" : status}; retry in ${wait}`
    )
  }
  const learnedRequests = stored.requests
  if (learnedRequests !== undefined && learnedRequests.remaining < 1) {
    consider(learnedRequests.until - now, (wait) => `the upstream reported no requests remaining; resets in ${wait}`)
  }
  const learnedTokens = stored.tokens
  if (learnedTokens !== undefined && learnedTokens.remaining < tokens) {
    consider(
      learnedTokens.until - now,
      (wait) =>
        `the upstream reported ${learnedTokens.remaining} tokens remaining, this request needs ${tokens}; resets in ${wait}`
    )
  }
  if (rpm !== undefined) {
    const used = sum(stored.window, 2)
    if (used + 1 > rpm)
      consider(freesIn(stored.window, 2, used + 1 - rpm, now), (wait) => `RPM ${rpm} reached; frees in ${wait}`)
  }
  let refundable: Exclusion | undefined
  if (tpm !== undefined) {
    const used = sum(stored.window, 3)
    if (used + tokens > tpm) {
      const reservedInFlight = sum(stored.flights, 2)
      const ms = Math.max(1, Math.ceil(freesIn(stored.window, 3, used + tokens - tpm, now)))
      if (used - reservedInFlight + tokens <= tpm) {
        // It fits if the requests in flight use less of their completion reservation than they
        // hold, which they will report when they finish: a queued request waits for that.
        refundable = {
          upstream: upstream.id,
          stage: STAGE,
          reason:
            `TPM ${tpm} reached (${used} used, ${reservedInFlight} of it reserved for completions in flight, ` +
            `this request needs ${tokens}); frees as they finish, at the latest in ${formatMs(ms)}`,
          retryAfterMs: ms,
          waitable: true,
          mayFreeSooner: true
        }
      } else {
        consider(ms, (wait) => `TPM ${tpm} reached (${used} used, this request needs ${tokens}); frees in ${wait}`)
      }
    }
  }
  if (worst !== undefined) return worst
  if (refundable !== undefined) return refundable
  if (maxConcurrency !== undefined) {
    const inFlight = sum(stored.flights, 1)
    if (inFlight >= maxConcurrency) {
      // Frees on a release, not with time: `changed` signals it.
      return {
        upstream: upstream.id,
        stage: STAGE,
        reason: `${inFlight} of ${maxConcurrency} concurrent requests in flight`,
        waitable: true
      }
    }
  }
  return undefined
}

/** Tokens `upstream` can still take in this window: its TPM less what is used, capped by what it reported. */
const headroomOf = (stored: Stored, upstream: Topology.Upstream): number | undefined => {
  const tpm = upstream.limits.tpm
  let headroom = tpm === undefined ? undefined : Math.max(0, tpm - sum(stored.window, 3))
  if (stored.tokens !== undefined) headroom = Math.min(headroom ?? Infinity, Math.max(0, stored.tokens.remaining))
  return headroom
}

/**
 * The share (0 to 1) of `upstream`'s budgets left at `now`: the smaller of what its RPM and TPM
 * windows have left, each capped by what the upstream last reported remaining; 0 while a 429's
 * `Retry-After` holds it back; 1 when it has no `rpm` or `tpm` limit (or the rate limiter never saw
 * it). Reads this instance's state without changing it (for strategies, on the hot path).
 */
export const shareLeft = (local: Local, upstream: Topology.Upstream, now: number): number => {
  const { rpm, tpm } = upstream.limits
  if (rpm === undefined && tpm === undefined) return 1
  const current = local.peek<Stored>(keyOf(upstream.id))
  if (current === undefined) return 1
  const stored = settle(current, leaseOf(upstream), now)
  if (stored.blocked !== undefined) return 0
  let share = 1
  if (rpm !== undefined) {
    const left = rpm - sum(stored.window, 2)
    share = Math.min(share, Math.min(left, stored.requests?.remaining ?? left) / rpm)
  }
  if (tpm !== undefined) {
    const left = tpm - sum(stored.window, 3)
    share = Math.min(share, Math.min(left, stored.tokens?.remaining ?? left) / tpm)
  }
  return Math.max(0, share)
}

/** What an admission needs to know of a request. */
type Budgeted = Pick<Guard.Attempt, "upstream" | "promptTokens" | "reservedOutputTokens">

const reservationOf = (request: Pick<Guard.RequestInfo, "promptTokens" | "reservedOutputTokens">) =>
  request.promptTokens + request.reservedOutputTokens

/** Re-checks and reserves in one step: the body of `admit`'s `modify`. */
const admission = (
  current: Stored | undefined,
  attempt: Budgeted,
  now: number
): readonly [Ticket | Exclusion, Stored | undefined] => {
  const upstream = attempt.upstream
  const stored = current === undefined ? empty : settle(current, leaseOf(upstream), now)
  const tokens = reservationOf(attempt)
  const excluded = exclusionOf(stored, upstream, tokens, now)
  if (excluded !== undefined) return [excluded, orRemove(stored)]
  const start = now - (now % BUCKET_MS)
  // A shared store may hold a bucket from an instance whose clock runs ahead: count in it, never
  // before it, so the buckets stay in order.
  const lastBucket = stored.window[stored.window.length - 1]
  const window: ReadonlyArray<Bucket> =
    lastBucket !== undefined && lastBucket[0] >= start
      ? withLast(stored.window, [
          lastBucket[0],
          Math.max(lastBucket[1], now),
          lastBucket[2] + 1,
          lastBucket[3] + tokens
        ])
      : [...stored.window, [start, now, 1, tokens]]
  const lastFlight = stored.flights[stored.flights.length - 1]
  const reservedOutput = attempt.reservedOutputTokens
  const flights: ReadonlyArray<Flight> =
    lastFlight !== undefined && lastFlight[0] >= start
      ? withLast(stored.flights, [lastFlight[0], lastFlight[1] + 1, lastFlight[2] + reservedOutput])
      : [...stored.flights, [start, 1, reservedOutput]]
  const next: { -readonly [K in keyof Stored]: Stored[K] } = { window, flights }
  if (stored.blocked !== undefined) next.blocked = stored.blocked
  if (stored.requests !== undefined) next.requests = { ...stored.requests, remaining: stored.requests.remaining - 1 }
  if (stored.tokens !== undefined) next.tokens = { ...stored.tokens, remaining: stored.tokens.remaining - tokens }
  const ticket: Ticket = {
    at: now,
    bucket: window[window.length - 1]![0],
    flight: flights[flights.length - 1]![0],
    promptTokens: attempt.promptTokens,
    outputTokens: attempt.reservedOutputTokens
  }
  return [ticket, next]
}

/**
 * Tokens to add to a finished request's reservation. A success with usage is charged its actual
 * usage (a side the upstream did not report keeps its reservation). A failure or an interruption
 * keeps its prompt tokens, since the request may well have reached the upstream and been counted
 * there, but gives back the completion it never received. Either way the request itself stays
 * counted against RPM — also when the router releases with `Interrupted` because a later guard
 * refused the admission and nothing was sent: the outcome cannot tell, and over-counting is the safe
 * side.
 */
const correctionOf = (ticket: Ticket, outcome: Guard.Outcome): number => {
  if (outcome._tag !== "Success") return -ticket.outputTokens
  if (outcome.inputTokens === undefined && outcome.outputTokens === undefined) return 0
  const actual = (outcome.inputTokens ?? ticket.promptTokens) + (outcome.outputTokens ?? ticket.outputTokens)
  return actual - (ticket.promptTokens + ticket.outputTokens)
}

/** Learns a reported `remaining` count, valid until its reset. */
const learned = (remaining: number | undefined, resetMs: number | undefined, now: number): Learned | undefined =>
  remaining === undefined || resetMs === undefined || resetMs <= 0
    ? undefined
    : { remaining: Math.max(0, remaining), until: now + resetMs, since: now }

const NO_EXPIRIES: ReadonlyArray<number> = []

/** When the limits learned from the upstream expire (what `changed` wakes at). */
const learnedExpiries = (stored: Stored): ReadonlyArray<number> => {
  if (stored.blocked === undefined && stored.requests === undefined && stored.tokens === undefined) return NO_EXPIRIES
  const times: Array<number> = []
  if (stored.blocked !== undefined) times.push(stored.blocked.until)
  if (stored.requests !== undefined) times.push(stored.requests.until)
  if (stored.tokens !== undefined) times.push(stored.tokens.until)
  return times
}

/** Holds the upstream back until `until`, unless an earlier answer already holds it longer (whose status stays). */
const hold = (next: { -readonly [K in keyof Stored]: Stored[K] }, until: number, status: number): void => {
  if (next.blocked !== undefined && next.blocked.until >= until) return
  next.blocked = { until, status }
}

/** The body of a release's `modify`; also returns the learned limits' expiries, for `changed`. */
const release = (
  current: Stored | undefined,
  upstream: Topology.Upstream,
  ticket: Ticket,
  outcome: Guard.Outcome,
  now: number
): readonly [ReadonlyArray<number>, Stored | undefined] => {
  const stored = settle(current ?? empty, leaseOf(upstream), now)
  const flightAt = stored.flights.findIndex((flight) => flight[0] === ticket.flight)
  const flights =
    flightAt < 0
      ? stored.flights // taken back when its lease ran out
      : stored.flights[flightAt]![1] <= 1
        ? withoutRow(stored.flights, flightAt)
        : withRow(stored.flights, flightAt, [
            stored.flights[flightAt]![0],
            stored.flights[flightAt]![1] - 1,
            Math.max(0, stored.flights[flightAt]![2] - ticket.outputTokens)
          ] as const)
  const notSent = outcome._tag === "NotSent"
  // A rolled-back admission never reached the upstream: its request and tokens are refunded whole.
  const delta = notSent ? -(ticket.promptTokens + ticket.outputTokens) : correctionOf(ticket, outcome)
  // Otherwise the request keeps counting against RPM; only its tokens change. A bucket that has left
  // the window no longer matters.
  const window =
    delta === 0 && !notSent
      ? stored.window
      : stored.window.map((bucket) =>
          bucket[0] === ticket.bucket
            ? ([
                bucket[0],
                bucket[1],
                Math.max(0, bucket[2] - (notSent ? 1 : 0)),
                Math.max(0, bucket[3] + delta)
              ] as const)
            : bucket
        )
  const next: { -readonly [K in keyof Stored]: Stored[K] } = { window, flights }
  if (stored.blocked !== undefined) next.blocked = stored.blocked
  if (stored.requests !== undefined) next.requests = stored.requests
  if (stored.tokens !== undefined) {
    // Charged to a learned token count only if admitted after it was learned.
    next.tokens =
      delta !== 0 && ticket.at >= stored.tokens.since
        ? { ...stored.tokens, remaining: Math.max(0, stored.tokens.remaining - delta) }
        : stored.tokens
  }
  let reported = false
  const info: RateLimitInfo | undefined =
    outcome._tag === "Interrupted" || outcome._tag === "NotSent" ? undefined : outcome.rateLimits
  if (info !== undefined) {
    // The newest report wins: it is the upstream's own count, other clients included.
    const requests = learned(info.remainingRequests, info.resetRequestsMs, now)
    if (requests !== undefined) {
      next.requests = requests
      reported = true
    }
    const tokens = learned(info.remainingTokens, info.resetTokensMs, now)
    if (tokens !== undefined) {
      next.tokens = tokens
      reported = true
    }
  }
  if (outcome._tag === "Failure" && outcome.error.status === 429) {
    // Without a stated wait, the remaining counts just learned say how long; without those either, a
    // short hold keeps the next request from hitting the same wall at once.
    const retryAfterMs =
      outcome.error.retryAfterMs ?? info?.retryAfterMs ?? (reported ? undefined : DEFAULT_RATE_LIMITED_MS)
    if (retryAfterMs !== undefined && retryAfterMs > 0) hold(next, now + retryAfterMs, 429)
  } else if (
    outcome._tag === "Failure" &&
    outcome.error.retryable &&
    outcome.error.retryAfterMs !== undefined &&
    outcome.error.retryAfterMs > 0
  ) {
    // Any other upstream-side failure that names a wait (a 503 with Retry-After: overloaded, in
    // maintenance) is honoured the same way: nothing goes there before then. A request's own fault
    // (a non-retryable 4xx) holds nothing back for other clients.
    hold(next, now + outcome.error.retryAfterMs, outcome.error.status ?? 0)
  }
  return [learnedExpiries(next), orRemove(next)]
}

const budgetOf = (stored: Stored): Budget => {
  const budget: { -readonly [K in keyof Budget]: Budget[K] } = {
    requestsUsed: sum(stored.window, 2),
    tokensUsed: sum(stored.window, 3),
    inFlight: sum(stored.flights, 1)
  }
  let learnedUntil: number | undefined
  if (stored.blocked !== undefined) {
    budget.blockedUntil = stored.blocked.until
    learnedUntil = stored.blocked.until
  }
  if (stored.requests !== undefined) {
    budget.remainingRequests = Math.max(0, stored.requests.remaining)
    learnedUntil = Math.max(learnedUntil ?? 0, stored.requests.until)
  }
  if (stored.tokens !== undefined) {
    budget.remainingTokens = Math.max(0, stored.tokens.remaining)
    learnedUntil = Math.max(learnedUntil ?? 0, stored.tokens.until)
  }
  if (learnedUntil !== undefined) budget.learnedUntil = learnedUntil
  return budget
}

/**
 * Builds the rate limiter over the {@link StateStore} (shared by every gateway instance using that
 * store).
 *
 * `version` and `changed` are memory-local: the version moves on every release of this instance, and
 * `changed` waits on a `Deferred` completed by the next release, raced with the expiry of the limits
 * this instance learned. With a shared store, an instance hears only its own releases; capacity freed
 * by others is found through the exact `retryAfterMs` of the exclusions (windows sliding, learned
 * limits expiring), and by concurrency limits only at the waiter's next own release or deadline.
 */
export const make: Effect.Effect<Service, never, StateStore> = Effect.gen(function* () {
  const store = yield* StateStore
  const local = store.local

  let version = 0
  /** Completed by the next release; made only when a fiber waits, so most releases allocate nothing. */
  let signal: Deferred.Deferred<void> | undefined
  /** Per upstream, when its learned limits expire, as the store said at this instance's last release. */
  const expiries = new Map<string, ReadonlyArray<number>>()

  const bump = (): void => {
    version++
    if (signal === undefined) return
    const waiting = signal
    signal = undefined
    Deferred.unsafeDone(waiting, Exit.void)
  }

  const soonestExpiry = (now: number): number | undefined => {
    let soonest: number | undefined
    for (const [id, times] of expiries) {
      const pending = times.filter((t) => t > now)
      if (pending.length === 0) expiries.delete(id)
      else if (pending.length !== times.length) expiries.set(id, pending)
      for (const t of pending) if (soonest === undefined || t < soonest) soonest = t
    }
    return soonest
  }

  const changed = (since: number): Effect.Effect<void> =>
    Effect.clockWith((clock) => {
      // A release since `since` (between the caller's check and this wait) is not lost.
      if (version !== since) return Effect.void
      signal ??= Deferred.unsafeMake<void>(FiberId.none)
      const next = Deferred.await(signal)
      const now = clock.unsafeCurrentTimeMillis()
      const soonest = soonestExpiry(now)
      return soonest === undefined ? next : Effect.race(next, Effect.sleep(Duration.millis(soonest - now)))
    })

  const check: Guard.Guard["check"] = (upstream, request, step) => {
    const now = step.now
    return local.modify<Stored, Exclusion | undefined>(keyOf(upstream.id), (current) =>
      current === undefined
        ? [exclusionOf(empty, upstream, reservationOf(request), now), undefined]
        : // Read only: the settled view is not written back, so a check costs no store write.
          [exclusionOf(settle(current, leaseOf(upstream), now), upstream, reservationOf(request), now), current]
    )
  }

  /** The release of one admission; a second call frees nothing more (see {@link Guard.once}). */
  const releaseFor = (upstream: Topology.Upstream, ticket: Ticket): Guard.Release => {
    let done = false
    return (outcome, step) => {
      if (done) return
      done = true
      const now = step.now
      const times = local.modify<Stored, ReadonlyArray<number>>(keyOf(upstream.id), (current) =>
        release(current, upstream, ticket, outcome, now)
      )
      if (times.length > 0) expiries.set(upstream.id, times)
      else expiries.delete(upstream.id)
      bump()
    }
  }

  const admitBudgeted = (attempt: Budgeted, now: number): Guard.Release | Exclusion => {
    const result = local.modify<Stored, Ticket | Exclusion>(keyOf(attempt.upstream.id), (current) =>
      admission(current, attempt, now)
    )
    return "stage" in result ? result : releaseFor(attempt.upstream, result)
  }

  const admit: Guard.Guard["admit"] = (attempt, step) => admitBudgeted(attempt, step.now)

  const snapshot = Effect.fn("RateLimiter.snapshot")(function* (upstream: Topology.Upstream) {
    const now = yield* Clock.currentTimeMillis
    const budget = yield* store.modify<Stored, Budget>(keyOf(upstream.id), (current) => {
      if (current === undefined) return [budgetOf(empty), undefined]
      const stored = settle(current, leaseOf(upstream), now)
      return [budgetOf(stored), orRemove(stored)]
    })
    return { ...budget, limits: upstream.limits }
  })

  const tokenHeadroom = (upstream: Topology.Upstream, now: number): number | undefined =>
    local.modify<Stored, number | undefined>(keyOf(upstream.id), (current) =>
      // Read only, as in `check`. Without a stored state, only a configured TPM limits.
      current === undefined
        ? [upstream.limits.tpm, undefined]
        : [headroomOf(settle(current, leaseOf(upstream), now), upstream), current]
    )

  const reserve: Service["reserve"] = (upstream, promptTokens, outputTokens) =>
    Effect.flatMap(
      Guard.run((step) => admitBudgeted({ upstream, promptTokens, reservedOutputTokens: outputTokens }, step.now)),
      (admitted) =>
        Guard.isRelease(admitted)
          ? Effect.succeed((outcome: Guard.Outcome) => Guard.run((step) => admitted(outcome, step)))
          : Effect.fail(admitted)
    )

  const guard: Guard.Guard = { name: STAGE, check, admit, version: () => version, changed, tokenHeadroom }
  return RateLimiter.of({ guard, reserve, snapshot })
})

/** The rate limiter, over the {@link StateStore} provided. */
export const layer: Layer.Layer<RateLimiter, never, StateStore> = Layer.effect(RateLimiter, make)

/** The rate limiter's guard, for `Guard.layer(RateLimiter.guard, ...)`. */
export const guard: Effect.Effect<Guard.Guard, never, RateLimiter> = Effect.map(RateLimiter, (s) => s.guard)
