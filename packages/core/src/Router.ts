/**
 * Router: the routing pipeline as one service.
 *
 * ```
 * request ─► Matcher ─► TokenCounter ─► for each pool of the fallback chain:
 *              for each attempt: candidates (enabled, context window, guards) ─► sticky / Strategy ─►
 *              guards admit ─► Provider ─► guards release(outcome) ─► backoff (Schedule) on failure
 *            └─ nobody can take it now, but capacity will free: wait in the first pool's queue
 * ```
 *
 * A retryable failure (connection, timeout, 408, 429, 5xx) moves to another upstream of the pool
 * (never the same one twice), after the pool's backoff, then to the pool's fallback pool. When no
 * upstream of the chain can take the request but some exclusion clears by itself (a spent budget, a
 * full concurrency limit, a learned `Retry-After`), the request waits in the first pool's bounded
 * priority queue and is woken the moment a guard signals freed capacity or the earliest
 * `retryAfterMs` passes — no polling. Streams fail over the same way until their first content event
 * has arrived; after that an upstream failure or a stall ends the stream with its error. Every
 * request yields a {@link Decision}, returned with the response and recorded on the `sluice.route` span.
 */
import {
  Cause,
  Chunk,
  Clock,
  Context,
  DefaultServices,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberId,
  FiberRef,
  Layer,
  Option,
  Schedule,
  ScheduleDecision,
  ScheduleIntervals,
  Scope,
  Stream
} from "effect"
import { Tracer } from "effect"
import { randomUUID } from "node:crypto"
import type { AttemptRecord, Decision } from "./Decision.js"
import { spanAttributes } from "./Decision.js"
import type { Exclusion, RouterError } from "./Errors.js"
import { ContextLengthExceeded, NoUpstreamAvailable, RateLimited, UpstreamError } from "./Errors.js"
import type { Attempt, Outcome, Release, RequestInfo } from "./Guard.js"
import { Guards } from "./Guard.js"
import * as AdmissionQueue from "./internal/admissionQueue.js"
import { Matcher } from "./Matcher.js"
import type { StreamEvent } from "./Provider.js"
import { Provider, currentRateLimits } from "./Provider.js"
import { StateStore } from "./StateStore.js"
import { Strategy, nameOf } from "./Strategy.js"
import * as TokenCounterModule from "./TokenCounter.js"
import { TokenCounter } from "./TokenCounter.js"
import type { Pool, Upstream } from "./Topology.js"
import type { ChatCompletion, ChatCompletionRequest, EmbeddingsRequest, EmbeddingsResponse, Model } from "./Wire.js"
import { requestedMaxTokens } from "./Wire.js"

/** Per-request options. */
export interface RouteOptions {
  /** Correlates logs, traces and the audit log; generated when absent. */
  readonly requestId?: string
  /** Session affinity key; overrides what the pool's `sticky.key` would read from the request. */
  readonly sessionKey?: string
  /** Request headers (lower-case names), for `sticky.key: header`. */
  readonly headers?: Readonly<Record<string, string | undefined>>
  /** The client's API key, for `sticky.key: api-key`. Only hashed into state, never stored as is. */
  readonly apiKey?: string
  /** Higher is more urgent in the queue; 0 by default. */
  readonly priority?: number
}

/** A response with the decision that produced it. */
export interface Routed<A> {
  readonly response: A
  readonly decision: Decision
}

/**
 * A stream that has started: its first content event has arrived from `upstream`. Run `events`
 * exactly once; the upstream connection closes when it ends or is interrupted. `decision` completes
 * when the stream has ended, with the usage it reported.
 */
export interface RoutedStream {
  readonly upstream: string
  readonly requestId: string
  readonly events: Stream.Stream<StreamEvent, UpstreamError>
  readonly decision: Effect.Effect<Decision>
}

/** The routing pipeline. */
export interface Service {
  readonly chat: (
    request: ChatCompletionRequest,
    options?: RouteOptions
  ) => Effect.Effect<Routed<ChatCompletion>, RouterError>
  /** A streaming chat completion (the request's `stream` flag is ignored: this always streams). */
  readonly chatStream: (
    request: ChatCompletionRequest,
    options?: RouteOptions
  ) => Effect.Effect<RoutedStream, RouterError>
  readonly embeddings: (
    request: EmbeddingsRequest,
    options?: RouteOptions
  ) => Effect.Effect<Routed<EmbeddingsResponse>, RouterError>
  /** The models the pools serve (exact names and aliases). */
  readonly models: Effect.Effect<ReadonlyArray<Model>>
}

/** The routing pipeline. */
export class Router extends Context.Tag("@sluice/core/Router")<Router, Service>() {}

/** What the pipeline needs: each stage is a service, chosen by providing its layer. */
export type Requirements = Matcher | TokenCounter | Strategy | Provider | Guards | StateStore

/** Failures that mean "try another upstream". */
export const isRetryable = (error: UpstreamError): boolean => error.retryable

/**
 * A new request id, `req_` and 32 hex digits: random rather than a clock and a counter, so that
 * gateway instances sharing a store never hand out the same one. The router makes one for a request
 * that comes without; the gateway makes it earlier, to put it on every answer.
 */
export const newRequestId = (): string => `req_${randomUUID().replace(/-/g, "")}`

/** Mutable decision under construction; frozen into a {@link Decision} at the end. */
interface Draft {
  readonly requestId: string
  readonly operation: "chat" | "embeddings"
  readonly stream: boolean
  readonly model: string
  readonly pools: Array<string>
  pool: string
  strategy: string
  candidates: ReadonlyArray<string> | undefined
  readonly excluded: Array<Exclusion>
  upstream: string | undefined
  readonly attempts: Array<AttemptRecord>
  queueWaitMs: number
  backoffMs: number
  sticky: Decision["sticky"]
  promptTokens: number
  promptTokensExact: boolean
  promptTokensCounted: boolean
  inputTokens: number | undefined
  outputTokens: number | undefined
  readonly startedAt: number
}

const freeze = (draft: Draft, now: number, outcome: Decision["outcome"], error: string | undefined): Decision => ({
  requestId: draft.requestId,
  operation: draft.operation,
  stream: draft.stream,
  model: draft.model,
  pools: [...draft.pools],
  pool: draft.pool,
  strategy: draft.strategy,
  candidates: draft.candidates ?? [],
  excluded: [...draft.excluded],
  upstream: draft.upstream,
  attempts: [...draft.attempts],
  queueWaitMs: draft.queueWaitMs,
  backoffMs: draft.backoffMs,
  sticky: draft.sticky,
  promptTokens: draft.promptTokens,
  promptTokensExact: draft.promptTokensExact,
  promptTokensCounted: draft.promptTokensCounted,
  inputTokens: draft.inputTokens,
  outputTokens: draft.outputTokens,
  outcome,
  error,
  startedAt: draft.startedAt,
  durationMs: Math.max(0, now - draft.startedAt)
})

const describe = (error: RouterError): string => `${error._tag}: ${error.message}`

const addExclusion = (draft: Draft, exclusion: Exclusion) => {
  if (!draft.excluded.some((e) => e.upstream === exclusion.upstream && e.reason === exclusion.reason)) {
    draft.excluded.push(exclusion)
  }
}

/**
 * Ends an attempt once: records it in the decision and hands the outcome to the guards' releases.
 * Later calls do nothing (a stream's end and an interruption may both try).
 */
const finisher = (
  draft: Draft,
  attempt: Attempt,
  poolId: string,
  releases: ReadonlyArray<Release>,
  span: Tracer.Span | undefined,
  clock: Clock.Clock
): ((outcome: Outcome) => Effect.Effect<void>) => {
  let finished = false
  return (outcome) =>
    Effect.suspend(() => {
      if (finished) return Effect.void
      finished = true
      if (span !== undefined) endAttemptSpan(span, outcome, clock)
      draft.attempts.push({
        attempt: attempt.attempt,
        pool: poolId,
        upstream: attempt.upstream.id,
        outcome: outcome._tag === "Success" ? "success" : outcome._tag === "Failure" ? "failure" : "interrupted",
        latencyMs: outcome.latencyMs,
        ...(outcome._tag === "Failure" && outcome.error.status !== undefined ? { status: outcome.error.status } : {}),
        ...(outcome._tag === "Failure" ? { error: outcome.error.message } : {})
      })
      return releases.length === 0
        ? Effect.void
        : releases.length === 1
          ? releases[0]!(outcome)
          : Effect.forEach(releases, (release) => release(outcome), { discard: true })
    })
}

/**
 * Ends an attempt's span with its outcome. A stream's attempt span stays open until the stream ends,
 * so its status says how the stream ended, not just that it opened.
 */
const endAttemptSpan = (span: Tracer.Span, outcome: Outcome, clock: Clock.Clock): void => {
  span.attribute("sluice.attempt.outcome", outcome._tag === "NotSent" ? "interrupted" : outcome._tag.toLowerCase())
  span.attribute("sluice.attempt.latency_ms", outcome.latencyMs)
  if (outcome._tag === "Failure" && outcome.error.status !== undefined) {
    span.attribute("http.response.status_code", outcome.error.status)
  }
  span.end(clock.unsafeCurrentTimeNanos(), exitOf(outcome))
}

/** An attempt's outcome as the exit its spans end with. */
const exitOf = (outcome: Outcome): Exit.Exit<void, UpstreamError> =>
  outcome._tag === "Failure"
    ? Exit.fail(outcome.error)
    : outcome._tag === "Success"
      ? Exit.void
      : Exit.interrupt(FiberId.none)

/** Records an exclusion in the decision and in the current round of candidates. */
const exclude = (draft: Draft, round: Array<Exclusion>, exclusion: Exclusion) => {
  addExclusion(draft, exclusion)
  round.push(exclusion)
}

/** Result of one attempt's call, before the router wraps it. */
interface CallResult<A> {
  readonly value: A
  readonly inputTokens: number | undefined
  readonly outputTokens: number | undefined
  /**
   * For streams: the outcome is only known when the stream ends, so the call takes over calling
   * `finish` (release guards, record the attempt) itself.
   */
  readonly deferredFinish: boolean
  /**
   * For streams: ends the attempt (releases its guards, closes the connection, ends its spans) if
   * the request fails or is interrupted after the call succeeded but before the caller holds the
   * stream. Idempotent with the stream's own release.
   */
  readonly abandon?: Effect.Effect<void>
}

/** The retry backoff of a pool as an Effect `Schedule` (delays only; attempts are counted by the router). */
export const backoffSchedule = (pool: Pool): Schedule.Schedule<Duration.Duration> => {
  const { initialBackoffMs, maxBackoffMs, multiplier, jitter } = pool.retry
  const capped = Schedule.exponential(Duration.millis(initialBackoffMs), multiplier).pipe(
    Schedule.modifyDelay((delay) => Duration.min(delay, Duration.millis(maxBackoffMs)))
  )
  return jitter ? Schedule.jitteredWith(capped, { min: 0.5, max: 1 }) : capped
}

/** A tiny, stable, non-reversible digest so API keys never sit in the state store as they are. */
const digest = (text: string): string => {
  let h1 = 0x811c9dc5
  let h2 = 0x01000193
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 0x01000193)
    h2 = Math.imul(h2 ^ c, 0x5bd1e995)
  }
  return (h1 >>> 0).toString(36) + (h2 >>> 0).toString(36)
}

/**
 * How a stream Sluice built itself is consumed without the `Stream` machinery, which costs a channel
 * executor per run (hundreds of microseconds for a short stream). The OpenAI-compatible provider
 * and the router attach one to the streams they return ({@link withDirectPull}); the router and the
 * gateway use it when present ({@link directPullOf}) and run other streams as streams. A stream is
 * consumed once either way: pull it or run it, never both.
 */
export interface DirectPull {
  /** The events that arrived since the last pull (waiting for some); fails with `None` at the end. */
  readonly pull: Effect.Effect<ReadonlyArray<StreamEvent>, Option.Option<UpstreamError>>
  /**
   * Optional, for sources that are pushed to (a socket): what has arrived, without waiting — the
   * events, `None` at the end, `Some(error)` on failure — or undefined when nothing has. With
   * {@link DirectPull.onReady} a reader waits without a fiber of its own.
   */
  readonly poll?: () => ReadonlyArray<StreamEvent> | Option.Option<UpstreamError> | undefined
  /** With `poll`: calls `ready` once as soon as `poll` has something; undefined cancels. */
  readonly onReady?: (ready: (() => void) | undefined) => void
  /**
   * When present, must run once pulling stops — at the end, on failure or on interruption — as the
   * stream's own finalizer would.
   */
  readonly release?: Effect.Effect<void>
}

const DirectPullKey: unique symbol = Symbol.for("@sluice/core/Router/DirectPull")

/** Attaches a {@link DirectPull} to a stream (and returns the stream). */
export const withDirectPull = <S extends Stream.Stream<StreamEvent, UpstreamError>>(stream: S, direct: DirectPull): S =>
  Object.assign(stream, { [DirectPullKey]: direct })

/** The {@link DirectPull} of a stream Sluice built, or undefined for any other stream. */
export const directPullOf = (stream: Stream.Stream<StreamEvent, UpstreamError>): DirectPull | undefined =>
  (stream as { readonly [DirectPullKey]?: DirectPull })[DirectPullKey]

const CONTENT = /"(?:content|arguments|refusal|reasoning_content)":"[^"]|"finish_reason":"|"tool_calls":\[/

/** True for a stream event that carries content (not just the opening role chunk). */
export const isContentEvent = (event: StreamEvent): boolean => event.usage !== undefined || CONTENT.test(event.data)

/** Builds the router from its stages. */
export const make: Effect.Effect<Service, never, Requirements> = Effect.gen(function* () {
  const matcher = yield* Matcher
  const counter = yield* TokenCounter
  const strategy = yield* Strategy
  const provider = yield* Provider
  const guards = yield* Guards
  const store = yield* StateStore
  const queues = new Map<string, AdmissionQueue.AdmissionQueue>()
  const queueOf = (pool: Pool) => {
    let queue = queues.get(pool.id)
    if (queue === undefined) {
      queue = AdmissionQueue.make(pool.queue.maxSize)
      queues.set(pool.id, queue)
    }
    return queue
  }
  const changeSignals = guards.flatMap((g) => (g.changed === undefined ? [] : [g.changed]))
  const headroomOf = guards.flatMap((g) => (g.tokenHeadroom === undefined ? [] : [g.tokenHeadroom]))

  /**
   * A pool and its fallbacks, in order, built once per pool (the topology is fixed; cycles are
   * rejected when the config loads, and a repeated pool would end the chain anyway).
   */
  const chains = new Map<string, ReadonlyArray<Pool>>()
  const chainOf = (pool: Pool): ReadonlyArray<Pool> => {
    let chain = chains.get(pool.id)
    if (chain === undefined) {
      const pools: Array<Pool> = []
      for (let p: Pool | undefined = pool; p !== undefined && !pools.includes(p);) {
        pools.push(p)
        p = p.fallback === undefined ? undefined : matcher.pool(p.fallback)
      }
      chain = pools
      chains.set(pool.id, chain)
    }
    return chain
  }

  /** The deadline of a whole answer: the provider's own where it keeps one on the live clock, else the router's. */
  const deadlineFor = (clock: Clock.Clock, upstream: Upstream) =>
    clock === liveClock && provider.enforcesTimeout?.(upstream) === true
      ? <A, R>(effect: Effect.Effect<A, UpstreamError, R>) => effect
      : withDeadline(clock, upstream, upstream.timeoutMs, "no response")

  const models: ReadonlyArray<Model> = matcher.models.map(({ id, pool }) => ({
    id,
    object: "model",
    created: 0,
    owned_by: `sluice:${pool}`
  }))

  /** Candidates of `pool` for this request; every exclusion lands in the draft and in `round`. */
  const candidatesOf = (
    pool: Pool,
    info: RequestInfo,
    tried: ReadonlySet<string>,
    draft: Draft,
    round: Array<Exclusion>,
    contextNeed: number
  ) =>
    Effect.gen(function* () {
      const live: Array<Upstream> = []
      for (const upstream of pool.upstreams) {
        if (tried.has(upstream.id)) continue
        if (!upstream.enabled) {
          exclude(draft, round, { upstream: upstream.id, stage: "config", reason: "disabled in config" })
          continue
        }
        if (upstream.contextWindow !== undefined && contextNeed > upstream.contextWindow) {
          exclude(draft, round, {
            upstream: upstream.id,
            stage: "context-window",
            reason: `needs ${contextNeed} tokens, context window is ${upstream.contextWindow}`
          })
          continue
        }
        let excluded: Exclusion | undefined
        for (let i = 0; i < guards.length && excluded === undefined; i++) {
          excluded = yield* guards[i]!.check(upstream, info)
        }
        if (excluded !== undefined) {
          exclude(draft, round, excluded)
          continue
        }
        live.push(upstream)
      }
      if (live.length <= 1) return live
      let tier = Number.POSITIVE_INFINITY
      let mixed = false
      for (const u of live) {
        if (tier !== Number.POSITIVE_INFINITY && u.priority !== tier) mixed = true
        if (u.priority < tier) tier = u.priority
      }
      return mixed ? live.filter((u) => u.priority === tier) : live
    })

  /** Admits an attempt through every guard, releasing earlier guards if a later one refuses. */
  const admitAll = (attempt: Attempt): Effect.Effect<ReadonlyArray<Release>, Exclusion> => admitFrom(attempt, 0, [])

  // A plain recursion rather than a generator: it runs on every attempt.
  const admitFrom = (
    attempt: Attempt,
    index: number,
    releases: Array<Release>
  ): Effect.Effect<ReadonlyArray<Release>, Exclusion> =>
    index === guards.length
      ? Effect.succeed(releases)
      : Effect.matchEffect(guards[index]!.admit(attempt), {
          onFailure: (excluded) =>
            Effect.zipRight(
              Effect.forEach(releases, (release) => release({ _tag: "NotSent", latencyMs: 0 }), { discard: true }),
              Effect.fail(excluded)
            ),
          onSuccess: (release) => {
            releases.push(release)
            return admitFrom(attempt, index + 1, releases)
          }
        })

  /** The session key of a request for a pool's `sticky` settings. */
  const sessionKeyFor = (pool: Pool, options: RouteOptions | undefined, user: string | undefined) => {
    if (pool.sticky === undefined) return undefined
    if (options?.sessionKey !== undefined) return options.sessionKey
    switch (pool.sticky.key) {
      case "header":
        return options?.headers?.[pool.sticky.header.toLowerCase()]
      case "user":
        return user
      case "api-key":
        return options?.apiKey === undefined ? undefined : `key:${digest(options.apiKey)}`
    }
  }

  /** Sticky upstream first when it is a candidate; otherwise the strategy. */
  const choose = (
    pool: Pool,
    candidates: readonly [Upstream, ...Array<Upstream>],
    info: RequestInfo,
    attempt: number,
    draft: Draft
  ): Effect.Effect<Upstream> => {
    const key = info.sessionKey
    const selection = { pool, candidates, model: info.model, attempt, promptTokens: info.promptTokens, sessionKey: key }
    if (pool.sticky === undefined || key === undefined) return strategy.select(selection)
    return Effect.gen(function* () {
      const bound = yield* store.get(`sticky:${pool.id}:${key}`)
      if (Option.isSome(bound)) {
        const hit = candidates.find((u) => u.id === bound.value)
        if (hit !== undefined) {
          draft.sticky = draft.sticky ?? "hit"
          return hit
        }
        draft.sticky = "moved"
      } else {
        draft.sticky = draft.sticky ?? "miss"
      }
      return yield* strategy.select(selection)
    })
  }

  const bindSession = (pool: Pool, info: RequestInfo, upstream: Upstream) =>
    pool.sticky === undefined || info.sessionKey === undefined
      ? Effect.void
      : store.set(`sticky:${pool.id}:${info.sessionKey}`, upstream.id, pool.sticky.ttlMs)

  type Call<A> = (
    upstream: Upstream,
    model: string,
    finish: (outcome: Outcome) => Effect.Effect<void>,
    draft: Draft,
    clock: Clock.Clock
  ) => Effect.Effect<CallResult<A>, UpstreamError>

  /**
   * The routing loop shared by every operation. `call` performs one attempt on one upstream; for
   * streams it returns before the outcome is known and calls `finish` itself.
   */
  const route = <A>(
    span: Tracer.Span | undefined,
    operation: "chat" | "embeddings",
    stream: boolean,
    model: string,
    user: string | undefined,
    promptCount: PromptCount,
    requestedOutputTokens: number | undefined,
    options: RouteOptions | undefined,
    call: Call<A>
  ): Effect.Effect<{ value: A; draft: Draft; decision: Decision }, RouterError> =>
    Effect.gen(function* () {
      // Read synchronously from here on: each `Clock.currentTimeMillis` would be an effect of its own.
      const clock = yield* Effect.clock
      const startedAt = clock.unsafeCurrentTimeMillis()
      const requestId = options?.requestId ?? newRequestId()
      // Before matching, so that a request for an unknown model is traced with its id too.
      if (span !== undefined) span.attribute("sluice.request_id", requestId)
      const match = yield* matcher.match(model)
      // The fast estimate, until a limit comes near enough that only an exact count will do.
      let count = promptCount.estimate(match.model)
      let counted = false
      const draft: Draft = {
        requestId,
        operation,
        stream,
        model,
        pools: [],
        pool: match.pool.id,
        strategy: nameOf(strategy, match.pool),
        candidates: undefined,
        excluded: [],
        upstream: undefined,
        attempts: [],
        queueWaitMs: 0,
        backoffMs: 0,
        sticky: undefined,
        promptTokens: count.tokens,
        promptTokensExact: count.exact,
        promptTokensCounted: false,
        inputTokens: undefined,
        outputTokens: undefined,
        startedAt
      }
      if (span !== undefined) {
        span.attribute("gen_ai.request.model", model)
        span.attribute("sluice.pool", match.pool.id)
      }
      const priority = options?.priority ?? 0
      // Room the completion needs in a context window: what the client asked for, else at least one
      // token. (Budgets reserve the pool's `defaultMaxTokens` instead; a window is a hard limit the
      // upstream enforces on what was asked.)
      const completionRoom = requestedOutputTokens ?? 1
      const fitsWindow = (upstream: Upstream) =>
        upstream.contextWindow === undefined || count.tokens + completionRoom <= upstream.contextWindow
      const failed = new Set<string>()
      let lastError: UpstreamError | undefined
      let attemptNumber = 0
      let ticket: AdmissionQueue.Ticket | undefined
      let waitStartedAt: number | undefined
      /** The served stream's release, while the request could still fail before returning it. */
      let abandon: Effect.Effect<void> | undefined
      const leaveQueue = Effect.suspend(() => {
        const t = ticket
        ticket = undefined
        return t === undefined ? Effect.void : t.leave
      })

      /**
       * Counts the prompt exactly if the estimate comes near a context window or a guard's token
       * headroom on an enabled upstream of `pool`: near enough that an estimate twice too low would
       * pass it. Far from every limit the estimate decides (and budgets are corrected to the usage
       * the upstream reports anyway). Evaluated per pool and per queue turn: headroom shrinks.
       */
      const countExactlyIfNear = (pool: Pool) =>
        Effect.gen(function* () {
          if (counted) return
          const reserved = requestedOutputTokens ?? pool.defaultMaxTokens
          let near = false
          for (let i = 0; i < pool.upstreams.length && !near; i++) {
            const upstream = pool.upstreams[i]!
            if (!upstream.enabled) continue
            if (upstream.contextWindow !== undefined) {
              near = TokenCounterModule.needsExact(count.tokens, upstream.contextWindow - completionRoom, EXACT_MARGIN)
            }
            for (let g = 0; g < headroomOf.length && !near; g++) {
              const headroom = yield* headroomOf[g]!(upstream)
              if (headroom !== undefined) {
                near = TokenCounterModule.needsExact(count.tokens, headroom - reserved, EXACT_MARGIN)
              }
            }
          }
          if (!near) return
          counted = true
          count = yield* promptCount.exact(match.model)
          draft.promptTokens = count.tokens
          draft.promptTokensExact = count.exact
          draft.promptTokensCounted = true
        })

      const infoFor = (pool: Pool): RequestInfo => ({
        pool,
        model: match.model,
        promptTokens: count.tokens,
        reservedOutputTokens: requestedOutputTokens ?? pool.defaultMaxTokens,
        sessionKey: sessionKeyFor(pool, options, user),
        priority,
        stream
      })

      /**
       * Milliseconds until some upstream of the chain that fits the request is expected to take it,
       * from the stages' exclusions (0 when one could now); undefined when only a release can tell.
       */
      const soonestFree = Effect.gen(function* () {
        let soonest: number | undefined
        for (const pool of chainOf(match.pool)) {
          const info = infoFor(pool)
          for (const upstream of pool.upstreams) {
            if (!upstream.enabled || !fitsWindow(upstream)) continue
            // Back when every stage lets it through: the longest of their waits; unknown if any is.
            let wait: number | undefined = 0
            for (const guard of guards) {
              const excluded = yield* guard.check(upstream, info)
              if (excluded === undefined) continue
              if (excluded.retryAfterMs === undefined) {
                wait = undefined
                break
              }
              wait = Math.max(wait, excluded.retryAfterMs)
            }
            if (wait !== undefined && (soonest === undefined || wait < soonest)) soonest = wait
          }
        }
        return soonest
      })

      /** One pass over the fallback chain. Succeeds with the value, or with the waitable exclusions if none served. */
      const pass = Effect.gen(function* () {
        const waitable: Array<Exclusion> = []
        for (const pool of chainOf(match.pool)) {
          if (!draft.pools.includes(pool.id)) draft.pools.push(pool.id)
          draft.pool = pool.id
          draft.strategy = nameOf(strategy, pool)
          yield* countExactlyIfNear(pool)
          const info = infoFor(pool)
          const tried = new Set<string>(failed)
          // Built on the first failure only: most requests never back off.
          let backoff: { readonly schedule: Schedule.Schedule<Duration.Duration>; state: unknown } | undefined
          let attemptsHere = 0
          while (attemptsHere < pool.maxAttempts) {
            const round: Array<Exclusion> = []
            const candidates = yield* candidatesOf(pool, info, tried, draft, round, count.tokens + completionRoom)
            if (!isNonEmpty(candidates)) {
              for (const e of round) if (e.waitable === true) waitable.push(e)
              break
            }
            if (draft.candidates === undefined) draft.candidates = candidates.map((u) => u.id)
            const upstream = yield* choose(pool, candidates, info, attemptNumber + 1, draft)
            tried.add(upstream.id)
            const attempt: Attempt = { ...info, upstream, attempt: attemptNumber + 1 }
            const admitted = yield* Effect.either(admitAll(attempt))
            if (admitted._tag === "Left") {
              // Lost a race for the last of a budget: not an attempt on the upstream.
              addExclusion(draft, admitted.left)
              if (admitted.left.waitable === true) waitable.push(admitted.left)
              continue
            }
            // Admitted: whoever waited is served now, so the next in line may try.
            if (ticket !== undefined) yield* leaveQueue
            attemptNumber++
            attemptsHere++
            const releases = admitted.right
            const poolId = pool.id
            const attemptStart = clock.unsafeCurrentTimeMillis()
            // The attempt's span ends with the attempt (`finish`): for a stream, when the stream ends.
            const attemptSpan =
              span === undefined
                ? undefined
                : yield* Effect.makeSpan("sluice.attempt", {
                    attributes: {
                      "sluice.attempt": attempt.attempt,
                      "sluice.pool": poolId,
                      "sluice.upstream": upstream.id,
                      "gen_ai.provider.name": upstream.provider,
                      "gen_ai.request.model": upstream.model ?? match.model
                    },
                    captureStackTrace: false
                  })
            const finish = finisher(draft, attempt, poolId, releases, attemptSpan, clock)
            // The provider reports this attempt's rate-limit headers here; clear what an earlier one left.
            if ((yield* FiberRef.get(currentRateLimits)) !== undefined)
              yield* FiberRef.set(currentRateLimits, undefined)
            const called = call(upstream, upstream.model ?? match.model, finish, draft, clock)
            const exit = yield* (attemptSpan === undefined ? called : Effect.withParentSpan(called, attemptSpan)).pipe(
              Effect.onInterrupt(() =>
                finish({ _tag: "Interrupted", latencyMs: Math.max(0, clock.unsafeCurrentTimeMillis() - attemptStart) })
              ),
              Effect.exit
            )
            const rateLimits = yield* FiberRef.get(currentRateLimits)
            if (exit._tag === "Success") {
              const r = exit.value
              draft.upstream = upstream.id
              if (r.inputTokens !== undefined) draft.inputTokens = r.inputTokens
              if (r.outputTokens !== undefined) draft.outputTokens = r.outputTokens
              abandon = r.abandon
              if (!r.deferredFinish) {
                yield* finish({
                  _tag: "Success",
                  latencyMs: Math.max(0, clock.unsafeCurrentTimeMillis() - attemptStart),
                  inputTokens: r.inputTokens,
                  outputTokens: r.outputTokens,
                  rateLimits
                })
              }
              if (pool.sticky !== undefined && info.sessionKey !== undefined) yield* bindSession(pool, info, upstream)
              return { _tag: "Served" as const, value: r.value }
            }
            const failure = Cause.failureOption(exit.cause)
            if (Option.isNone(failure)) {
              yield* finish({
                _tag: "Interrupted",
                latencyMs: Math.max(0, clock.unsafeCurrentTimeMillis() - attemptStart)
              })
              return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
            }
            const error = failure.value
            yield* finish({
              _tag: "Failure",
              latencyMs: Math.max(0, clock.unsafeCurrentTimeMillis() - attemptStart),
              error,
              rateLimits
            })
            lastError = error
            // A 429 clears with time (the rate limiter learns for how long): after a wait it may serve.
            if (error.status !== 429) failed.add(upstream.id)
            if (!isRetryable(error)) return yield* Effect.fail(error)
            const now = clock.unsafeCurrentTimeMillis()
            if (now - startedAt >= pool.retry.maxTotalMs) return yield* Effect.fail(error)
            if (attemptsHere < pool.maxAttempts && pool.retry.initialBackoffMs > 0) {
              // The schedule is stepped, not run, so the next delay is known before waiting: one that
              // would pass the request's total time ends the request now, with its last error.
              backoff ??= { schedule: backoffSchedule(pool), state: undefined }
              const [state, , decision] = yield* backoff.schedule.step(
                now,
                undefined,
                backoff.state ?? backoff.schedule.initial
              )
              backoff.state = state
              if (ScheduleDecision.isDone(decision)) return yield* Effect.fail(error)
              const delay = Math.max(0, ScheduleIntervals.start(decision.intervals) - now)
              if (now + delay - startedAt >= pool.retry.maxTotalMs) return yield* Effect.fail(error)
              yield* Effect.sleep(Duration.millis(delay))
              draft.backoffMs += clock.unsafeCurrentTimeMillis() - now
            }
          }
        }
        return { _tag: "Unserved" as const, waitable }
      })

      /** Nobody can serve now: wait in the first pool's line, or refuse with an honest Retry-After. */
      const waitForCapacity = (waitable: ReadonlyArray<Exclusion>) =>
        Effect.gen(function* () {
          const pool = match.pool
          const now = clock.unsafeCurrentTimeMillis()
          waitStartedAt = waitStartedAt ?? now
          const waits = waitable.flatMap((e) => (e.retryAfterMs === undefined ? [] : [e.retryAfterMs]))
          const soonest = waits.length > 0 ? Math.min(...waits) : undefined
          const left = pool.queue.maxWaitMs - (now - waitStartedAt)
          // A refusal's Retry-After: the wait this request learned, else when the stages expect some
          // upstream back (a window sliding, a hold expiring). Only capacity that frees on a release
          // (a concurrency limit) has no known time: then 1 s.
          const refuse = (reason: string, retryAfterMs: number | undefined) =>
            Effect.flatMap(retryAfterMs === undefined ? soonestFree : Effect.succeed(retryAfterMs), (ms) =>
              Effect.zipRight(
                leaveQueue,
                Effect.fail(
                  new RateLimited({
                    pool: pool.id,
                    reason,
                    retryAfterSeconds: Math.max(1, Math.ceil((ms ?? 1000) / 1000))
                  })
                )
              )
            )
          if (pool.queue.maxSize === 0 || pool.queue.maxWaitMs === 0) {
            return yield* refuse("no upstream has capacity now and queueing is off", soonest)
          }
          // Capacity that comes back when requests in flight finish has no known time: wait for it.
          const releaseBound = waitable.some((e) => e.retryAfterMs === undefined || e.mayFreeSooner === true)
          if (!releaseBound && soonest !== undefined && soonest > left) {
            return yield* refuse(
              `no upstream has capacity for ${Math.ceil(soonest / 1000)}s, longer than the queue's wait limit`,
              soonest
            )
          }
          if (left <= 0) return yield* refuse(`waited ${pool.queue.maxWaitMs}ms in the queue`, soonest)
          if (ticket === undefined) {
            const joined = yield* Effect.either(queueOf(pool).join(priority))
            if (joined._tag === "Left") {
              return yield* refuse(`the queue is full (${pool.queue.maxSize} waiting)`, soonest)
            }
            ticket = joined.right
            // A newcomer that has not tried yet and lands at the head tries at once.
            if (waitable.length === 0 && ticket.isHead()) return
          }
          // Not at the head: wait for our turn, then try at once (the one before us may have left
          // capacity). At the head: wait for freed capacity or the earliest retry time. Both bounded
          // by the deadline. Only the head tries after a capacity signal, so priority order holds.
          const wake = !ticket.isHead()
            ? ticket.turn
            : changeSignals.length === 0 && soonest === undefined
              ? Effect.never
              : Effect.raceAll([
                  ...changeSignals,
                  ...(soonest === undefined ? [] : [Effect.sleep(Duration.millis(Math.max(1, soonest)))])
                ])
          const waited = yield* wake.pipe(Effect.timeout(Duration.millis(left)), Effect.option)
          const after = clock.unsafeCurrentTimeMillis()
          draft.queueWaitMs = after - waitStartedAt
          if (Option.isNone(waited)) {
            return yield* refuse(
              `waited ${pool.queue.maxWaitMs}ms in the queue`,
              soonest === undefined ? undefined : Math.max(0, soonest - (after - now))
            )
          }
        })

      const result = yield* Effect.gen(function* () {
        for (;;) {
          // Requests already waiting keep their order: a newcomer joins the line behind them.
          if (ticket === undefined && queueOf(match.pool).size() > 0 && match.pool.queue.maxSize > 0) {
            yield* waitForCapacity([])
          }
          // Displaced by a higher priority while waiting: wait for our turn again before trying.
          if (ticket !== undefined && !ticket.isHead()) {
            yield* waitForCapacity([])
            continue
          }
          const outcome = yield* pass
          if (outcome._tag === "Served") return outcome.value
          if (outcome.waitable.length > 0) {
            yield* waitForCapacity(outcome.waitable)
            continue
          }
          yield* leaveQueue
          if (lastError !== undefined) return yield* Effect.fail(lastError)
          // No enabled upstream of the chain has a window this request fits: waiting will not help,
          // whatever else excluded them.
          let enabled = 0
          let fits = false
          let largest = 0
          for (const id of draft.pools) {
            for (const u of matcher.pool(id)?.upstreams ?? []) {
              if (!u.enabled) continue
              enabled++
              if (fitsWindow(u)) fits = true
              else largest = Math.max(largest, u.contextWindow ?? 0)
            }
          }
          if (enabled > 0 && !fits) {
            return yield* new ContextLengthExceeded({
              pool: match.pool.id,
              promptTokens: count.tokens,
              maxTokens: requestedOutputTokens ?? 0,
              largestContextWindow: largest
            })
          }
          const waits = draft.excluded.flatMap((e) => (e.retryAfterMs === undefined ? [] : [e.retryAfterMs]))
          const retryAfterSeconds = waits.length > 0 ? Math.max(1, Math.ceil(Math.min(...waits) / 1000)) : 1
          return yield* new NoUpstreamAvailable({ pool: match.pool.id, exclusions: draft.excluded, retryAfterSeconds })
        }
      }).pipe(
        Effect.onExit((exit) => {
          if (exit._tag === "Failure" && span !== undefined) {
            const failure = Cause.failureOption(exit.cause)
            annotate(
              span,
              freeze(
                draft,
                clock.unsafeCurrentTimeMillis(),
                Option.isSome(failure) ? "error" : "interrupted",
                Option.isSome(failure) ? describe(failure.value) : undefined
              )
            )
          }
          const left = ticket === undefined ? Effect.void : leaveQueue
          return exit._tag === "Failure" && abandon !== undefined ? Effect.zipRight(abandon, left) : left
        })
      )
      const decision = freeze(draft, clock.unsafeCurrentTimeMillis(), "success", undefined)
      if (span !== undefined) annotate(span, decision)
      return { value: result, draft, decision }
    })

  const chatCount = (request: ChatCompletionRequest): PromptCount => ({
    estimate: (model) => counter.estimate(request, model),
    exact: (model) => counter.count(request, model)
  })

  const chat: Service["chat"] = (request, options) =>
    traced({ "gen_ai.operation.name": "chat" }, (span) =>
      Effect.map(
        route(
          span,
          "chat",
          false,
          request.model,
          request.user,
          chatCount(request),
          requestedMaxTokens(request),
          options,
          (upstream, model, _finish, _draft, clock) =>
            provider.chat(upstream, { ...request, model, stream: false }).pipe(
              deadlineFor(clock, upstream),
              Effect.map((completion): CallResult<ChatCompletion> => ({
                value: completion,
                inputTokens: completion.usage?.prompt_tokens,
                outputTokens: completion.usage?.completion_tokens,
                deferredFinish: false
              }))
            )
        ),
        ({ decision, value }) => ({ response: value, decision })
      )
    )

  const embeddings: Service["embeddings"] = (request, options) =>
    traced({ "gen_ai.operation.name": "embeddings" }, (span) => {
      const inputs = typeof request.input === "string" ? [request.input] : request.input
      const estimate = inputs.reduce<number>(
        (sum, item) =>
          sum +
          (typeof item === "string"
            ? TokenCounterModule.estimateText(item)
            : typeof item === "number"
              ? 1
              : item.length),
        0
      )
      return Effect.map(
        route(
          span,
          "embeddings",
          false,
          request.model,
          request.user,
          {
            estimate: () => ({ tokens: estimate, exact: false }),
            exact: () => Effect.succeed({ tokens: estimate, exact: false })
          },
          0,
          options,
          (upstream, model, _finish, _draft, clock) =>
            provider.embeddings(upstream, { ...request, model }).pipe(
              deadlineFor(clock, upstream),
              Effect.map((response): CallResult<EmbeddingsResponse> => ({
                value: response,
                inputTokens: response.usage?.prompt_tokens,
                outputTokens: undefined,
                deferredFinish: false
              }))
            )
        ),
        ({ decision, value }) => ({ response: value, decision })
      )
    })

  const chatStream: Service["chatStream"] = (request, options) =>
    tracedStream({ "gen_ai.operation.name": "chat", "sluice.stream": true }, (span) =>
      Effect.gen(function* () {
        const clientWantsUsage = request.stream_options?.include_usage === true
        const done = yield* Deferred.make<Decision>()
        const { value } = yield* route(
          span,
          "chat",
          true,
          request.model,
          request.user,
          chatCount(request),
          requestedMaxTokens(request),
          options,
          (upstream, model, finish, draft, clock) =>
            Effect.gen(function* () {
              const scope = yield* Scope.make()
              const started = clock.unsafeCurrentTimeMillis()
              const closeWith = (exit: Exit.Exit<unknown, unknown>) => Scope.close(scope, exit)
              const interChunk = upstream.stream.interChunkTimeoutMs
              const stalled = () =>
                new UpstreamError({
                  upstream: upstream.id,
                  kind: "timeout",
                  message: `stream stalled: no event within ${interChunk} ms`,
                  retryable: true
                })
              // Usage is always requested upstream so budgets learn the real count; the usage-only
              // chunk is dropped again for clients that did not ask for it.
              const body: ChatCompletionRequest = {
                ...request,
                model,
                stream: true,
                stream_options: { ...request.stream_options, include_usage: true }
              }
              // Until the first content event nothing has reached the client, so any failure (or a
              // silence past the first-chunk timeout) fails over like a non-streaming request.
              const opened = yield* Effect.gen(function* () {
                const events = yield* provider.chatStream(upstream, body)
                const feed = yield* makeFeed(events, clock, interChunk, stalled)
                const head: Array<StreamEvent> = []
                for (;;) {
                  const taken = yield* Effect.either(feed.take)
                  if (taken._tag === "Left") {
                    return yield* Option.isSome(taken.left)
                      ? Effect.fail(taken.left.value)
                      : Effect.fail(
                          new UpstreamError({
                            upstream: upstream.id,
                            kind: "protocol",
                            message: "stream ended before its first content event",
                            retryable: true
                          })
                        )
                  }
                  let content = false
                  for (const event of taken.right) {
                    head.push(event)
                    if (!content && isContentEvent(event)) content = true
                  }
                  if (content) return { head, feed }
                }
              }).pipe(
                Scope.extend(scope),
                withDeadline(
                  clock,
                  upstream,
                  upstream.stream.firstChunkTimeoutMs ?? upstream.timeoutMs,
                  "no first content event"
                ),
                Effect.onExit((exit) => (exit._tag === "Failure" ? closeWith(exit) : Effect.void))
              )
              const rateLimits = yield* FiberRef.get(currentRateLimits)
              const feed = opened.feed
              let head: ReadonlyArray<StreamEvent> | undefined = opened.head
              let usage: StreamEvent["usage"]
              /** What reaches the client: every event but the usage-only chunk it did not ask for. */
              const keep = (events: ReadonlyArray<StreamEvent>): ReadonlyArray<StreamEvent> => {
                let kept: Array<StreamEvent> | undefined
                for (let i = 0; i < events.length; i++) {
                  const event = events[i]!
                  if (event.usage !== undefined) usage = event.usage
                  if (!clientWantsUsage && event.usageOnly === true) {
                    if (kept === undefined) kept = events.slice(0, i)
                  } else if (kept !== undefined) kept.push(event)
                }
                return kept ?? events
              }
              const pull = Effect.suspend(() => {
                if (head === undefined) return Effect.map(feed.take, keep)
                const first = head
                head = undefined
                return Effect.succeed(keep(first))
              })
              // Ends the attempt once: releases the guards, closes the connection, resolves the decision.
              let released = false
              const release = Effect.suspend(() => {
                if (released) return Effect.void
                released = true
                return Effect.flatMap(Clock.currentTimeMillis, (now) => {
                  const latencyMs = Math.max(0, now - started)
                  draft.inputTokens = usage?.prompt_tokens
                  draft.outputTokens = usage?.completion_tokens
                  const ended = feed.delivered()
                  const failure = ended !== undefined && ended !== "end" ? ended : undefined
                  const outcome: Outcome =
                    failure !== undefined
                      ? { _tag: "Failure", latencyMs, error: failure, rateLimits }
                      : ended === "end"
                        ? {
                            _tag: "Success",
                            latencyMs,
                            inputTokens: usage?.prompt_tokens,
                            outputTokens: usage?.completion_tokens,
                            rateLimits
                          }
                        : { _tag: "Interrupted", latencyMs }
                  return finish(outcome).pipe(
                    Effect.zipRight(closeWith(Exit.void)),
                    // Frozen after `finish`, which records the attempt.
                    Effect.zipRight(
                      Effect.suspend(() => {
                        const decision = freeze(
                          draft,
                          now,
                          failure !== undefined ? "error" : ended === "end" ? "success" : "interrupted",
                          failure !== undefined ? describe(failure) : undefined
                        )
                        // The route span of a stream closes here, with how the stream really ended.
                        if (span !== undefined) {
                          annotate(span, decision)
                          span.end(clock.unsafeCurrentTimeNanos(), exitOf(outcome))
                        }
                        return Deferred.succeed(done, decision)
                      })
                    )
                  )
                })
              })
              const poll = (): Polled => {
                if (head !== undefined) {
                  const first = head
                  head = undefined
                  return keep(first)
                }
                const got = feed.poll()
                return got !== undefined && Array.isArray(got) ? keep(got as ReadonlyArray<StreamEvent>) : got
              }
              const events = withDirectPull(
                Stream.repeatEffectChunkOption(Effect.map(pull, Chunk.unsafeFromArray)).pipe(Stream.ensuring(release)),
                { pull, release, poll }
              )
              return {
                value: { upstream: upstream.id, requestId: draft.requestId, events, decision: Deferred.await(done) },
                inputTokens: undefined,
                outputTokens: undefined,
                deferredFinish: true,
                abandon: release
              } satisfies CallResult<RoutedStream>
            })
        )
        return value
      })
    )

  return Router.of({ chat, chatStream, embeddings, models: Effect.succeed(models) })
})

/** A prompt's token count: a synchronous estimate, and the exact count the router asks for near a limit. */
interface PromptCount {
  readonly estimate: (poolModel: string) => TokenCounterModule.Count
  readonly exact: (poolModel: string) => Effect.Effect<TokenCounterModule.Count>
}

/**
 * How wrong the prompt estimate may be before it could mislead a limit check: exact counting starts
 * where an estimate half the true count would be at the limit (an uncalibrated estimate of code or
 * non-English text can run that low).
 */
const EXACT_MARGIN = 0.5

const isNonEmpty = <A>(as: ReadonlyArray<A>): as is readonly [A, ...Array<A>] => as.length > 0

/** Events a stream's feed holds for a slow reader before it stops pulling from the upstream. */
const FEED_HIGH_WATER = 256

/** What a push source has for its reader now: events, the end (`None`) or a failure, or nothing yet. */
type Polled = ReadonlyArray<StreamEvent> | Option.Option<UpstreamError> | undefined

/** A source of events that a reader polls, and that calls back when it has something. */
interface Source {
  readonly poll: () => Polled
  readonly onReady: (ready: (() => void) | undefined) => void
}

/** The events of an upstream stream for one reader, with one stall watchdog per stream. */
interface Feed {
  /**
   * The events that arrived since the last take, waiting for at least one. Fails with `None` when
   * the stream has ended, with the upstream's error, or with the stall error when the reader has
   * waited longer than the inter-chunk timeout.
   */
  readonly take: Effect.Effect<ReadonlyArray<StreamEvent>, Option.Option<UpstreamError>>
  /** What `take` would give without waiting, or undefined when it would wait. */
  readonly poll: () => Polled
  /** How the stream ended for the reader: `"end"`, an error, or undefined while it has not ended. */
  readonly delivered: () => "end" | UpstreamError | undefined
}

/**
 * Reads a stream that is not a push source ahead in a fiber of the current scope (ended with it),
 * as a push source.
 */
const readAhead = (
  pull: Effect.Effect<ReadonlyArray<StreamEvent>, Option.Option<UpstreamError>>
): Effect.Effect<{ readonly source: Source; readonly producer: Fiber.RuntimeFiber<void> }, never, Scope.Scope> =>
  Effect.gen(function* () {
    let buffered: Array<StreamEvent> = []
    let end: Option.Option<UpstreamError> | undefined
    let ready: (() => void) | undefined
    let paused: (() => void) | undefined
    const signal = () => {
      const r = ready
      ready = undefined
      r?.()
    }
    const source: Source = {
      poll: () => {
        if (buffered.length > 0) {
          const out = buffered
          buffered = []
          const p = paused
          paused = undefined
          p?.()
          return out
        }
        return end
      },
      onReady: (r) => {
        ready = r
      }
    }
    const produce = Effect.gen(function* () {
      for (;;) {
        if (buffered.length >= FEED_HIGH_WATER) {
          yield* Effect.async<void>((resume) => {
            paused = () => resume(Effect.void)
          })
        }
        const events = yield* pull
        if (buffered.length === 0) buffered = events.slice()
        else for (const event of events) buffered.push(event)
        if (buffered.length > 0) signal()
      }
    }).pipe(
      Effect.catchAll((error) =>
        Effect.sync(() => {
          end = error
          signal()
        })
      )
    )
    const producer = yield* Effect.forkScoped(produce)
    return { source, producer }
  })

/**
 * Hands the events of `events` to one reader and watches for stalls: one watchdog per stream checks
 * how long the reader has been waiting — not a timer per event. The watchdog is a fiber sleeping on
 * `clock` (so `TestClock` drives it), or with the live clock a plain timer; both end with the scope.
 * Streams from Sluice's own providers are read as they are pushed; any other stream is read ahead by
 * a fiber.
 */
const makeFeed = (
  events: Stream.Stream<StreamEvent, UpstreamError>,
  clock: Clock.Clock,
  stallMs: number,
  stalled: () => UpstreamError
): Effect.Effect<Feed, never, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const direct = directPullOf(events)
    let source: Source
    let producer: Fiber.RuntimeFiber<void> | undefined
    if (direct?.poll !== undefined && direct.onReady !== undefined) {
      source = { poll: direct.poll, onReady: direct.onReady }
    } else {
      const pull =
        direct !== undefined
          ? direct.pull
          : Effect.map(yield* Stream.toPull(events), (chunk) => Chunk.toReadonlyArray(chunk))
      const ahead = yield* readAhead(pull)
      source = ahead.source
      producer = ahead.producer
    }
    let stall: UpstreamError | undefined
    let delivered: "end" | UpstreamError | undefined
    let reader: ((effect: Effect.Effect<ReadonlyArray<StreamEvent>, Option.Option<UpstreamError>>) => void) | undefined
    let waitingSince: number | undefined

    const pollNow = (): Polled => {
      if (stall !== undefined) {
        delivered = stall
        return Option.some(stall)
      }
      const got = source.poll()
      if (got === undefined || Array.isArray(got)) return got
      const end = got as Option.Option<UpstreamError>
      delivered = Option.isSome(end) ? end.value : "end"
      return end
    }
    const poll = (): Effect.Effect<ReadonlyArray<StreamEvent>, Option.Option<UpstreamError>> | undefined => {
      const got = pollNow()
      if (got === undefined) return undefined
      return Array.isArray(got)
        ? Effect.succeed(got as ReadonlyArray<StreamEvent>)
        : Effect.fail(got as Option.Option<UpstreamError>)
    }
    const wake = (): void => {
      if (reader === undefined) return
      const next = poll()
      if (next === undefined) return source.onReady(wake)
      const resume = reader
      reader = undefined
      waitingSince = undefined
      resume(next)
    }
    const take = Effect.suspend(
      () =>
        poll() ??
        Effect.async<ReadonlyArray<StreamEvent>, Option.Option<UpstreamError>>((resume) => {
          const next = poll()
          if (next !== undefined) return resume(next)
          reader = resume
          waitingSince = clock.unsafeCurrentTimeMillis()
          source.onReady(wake)
          return Effect.sync(() => {
            reader = undefined
            waitingSince = undefined
            source.onReady(undefined)
          })
        })
    )

    /** Checks for a stall; the milliseconds until the next check, or undefined when the stream is over. */
    const check = (): number | undefined => {
      if (delivered !== undefined || stall !== undefined) return undefined
      const now = clock.unsafeCurrentTimeMillis()
      if (waitingSince !== undefined && now - waitingSince >= stallMs) {
        stall = stalled()
        producer?.unsafeInterruptAsFork(FiberId.none)
        wake()
        return undefined
      }
      return waitingSince === undefined ? stallMs : Math.max(1, waitingSince + stallMs - now)
    }
    if (clock === liveClock) {
      let timer: ReturnType<typeof setTimeout> | undefined
      const tick = () => {
        const next = check()
        timer = next === undefined ? undefined : setTimeout(tick, next)
      }
      timer = setTimeout(tick, stallMs)
      // Straight on the scope: `Effect.addFinalizer` would diff every fiber ref when it runs.
      yield* Scope.addFinalizer(
        scope,
        Effect.sync(() => clearTimeout(timer))
      )
    } else {
      const watchdog = Effect.gen(function* () {
        let wait: number | undefined = stallMs
        while (wait !== undefined) {
          yield* Effect.sleep(Duration.millis(wait))
          wait = check()
        }
      })
      yield* Effect.forkScoped(watchdog)
    }
    return { take, poll: pollNow, delivered: () => delivered }
  })

/** The clock of the default services. With it, deadlines are plain timers rather than sleeping fibers. */
const liveClock = Context.get(DefaultServices.liveServices, Clock.Clock)

/**
 * Fails with a timeout `UpstreamError` when `effect` has not completed within `ms` on `clock`. With the
 * live clock this costs one fiber and a timer (what `Clock.sleep` would schedule) instead of the fiber
 * pair of `Effect.timeoutFail`; any other clock (`TestClock`) goes through `Effect.timeoutFail`.
 */
const withDeadline =
  (clock: Clock.Clock, upstream: Upstream, ms: number, what: string) =>
  <A, R>(effect: Effect.Effect<A, UpstreamError, R>): Effect.Effect<A, UpstreamError, R> => {
    const timedOut = () =>
      new UpstreamError({
        upstream: upstream.id,
        kind: "timeout",
        message: `${what} within ${ms} ms`,
        retryable: true
      })
    if (clock !== liveClock) return Effect.timeoutFail(effect, { duration: Duration.millis(ms), onTimeout: timedOut })
    return Effect.flatMap(Effect.fork(effect), (fiber) =>
      Effect.async<A, UpstreamError>((resume) => {
        let settled = false
        const timer = setTimeout(() => {
          if (settled) return
          settled = true
          resume(Effect.zipRight(Fiber.interrupt(fiber), Effect.fail(timedOut())))
        }, ms)
        fiber.addObserver((exit) => {
          if (settled) return
          settled = true
          clearTimeout(timer)
          // The rate limits the call reported come back with its result (all a provider reports
          // through fiber refs; joining every fiber ref would diff whole contexts).
          const rateLimits = fiber.getFiberRef(currentRateLimits)
          resume(rateLimits === undefined ? exit : Effect.zipRight(FiberRef.set(currentRateLimits, rateLimits), exit))
        })
        return Effect.suspend(() => {
          settled = true
          clearTimeout(timer)
          return Fiber.interrupt(fiber)
        })
      })
    )
  }

/** Effect's built-in tracer: its spans are exported nowhere. */
const nativeTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/** Whether spans made on `fiber` go anywhere: tracing is enabled and a tracer other than Effect's own is installed. */
const exportsSpans = (fiber: Fiber.RuntimeFiber<unknown, unknown>): boolean =>
  fiber.getFiberRef(FiberRef.currentTracerEnabled) &&
  Context.get(fiber.getFiberRef(DefaultServices.currentServices), Tracer.Tracer) !== nativeTracer

/**
 * Runs `body` in a `sluice.route` span (without stack trace capture: this is the hot path). When no
 * tracer is installed (only Effect's built-in one, which exports nothing) or tracing is disabled,
 * no span is made at all, and neither are the attempt spans under it: `body` gets `undefined`.
 */
const traced = <A, E, R>(
  attributes: Record<string, unknown>,
  body: (span: Tracer.Span | undefined) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) =>
    exportsSpans(fiber)
      ? Effect.useSpan("sluice.route", { attributes, captureStackTrace: false }, (span) =>
          Effect.withParentSpan(body(span), span)
        )
      : body(undefined)
  )

/**
 * Like {@link traced}, for a stream: the `sluice.route` span outlives the effect that opens the
 * stream. It ends here only if opening fails or is interrupted; once the stream is running, the
 * stream's own release ends it with the final decision.
 */
const tracedStream = <A, E, R>(
  attributes: Record<string, unknown>,
  body: (span: Tracer.Span | undefined) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) =>
    exportsSpans(fiber)
      ? Effect.flatMap(Effect.makeSpan("sluice.route", { attributes, captureStackTrace: false }), (span) =>
          Effect.withParentSpan(body(span), span).pipe(
            Effect.onExit((exit) =>
              exit._tag === "Success"
                ? Effect.void
                : Effect.clockWith((clock) => Effect.sync(() => span.end(clock.unsafeCurrentTimeNanos(), exit)))
            )
          )
        )
      : body(undefined)
  )

/** Records a decision on its span. */
const annotate = (span: Tracer.Span, decision: Decision): void => {
  const attributes = spanAttributes(decision)
  for (const key in attributes) span.attribute(key, attributes[key])
}

/** The router layer: provide a Matcher, TokenCounter, Strategy, Provider, Guards and StateStore. */
export const layer: Layer.Layer<Router, never, Requirements> = Layer.effect(Router, make)

/** Collects a routed stream's events into their chunk texts (handy in tests and scripts). */
export const collect = (stream: RoutedStream): Effect.Effect<ReadonlyArray<string>, UpstreamError> =>
  Effect.map(Stream.runCollect(stream.events), (chunk) => Chunk.toReadonlyArray(chunk).map((e) => e.data))
