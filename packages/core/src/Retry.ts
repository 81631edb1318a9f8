/**
 * Retry: the stage that drives a request's attempts over its pool and the pool's fallbacks.
 *
 * A retryable failure (connection, timeout, 408, 429, 5xx) moves to another upstream of the pool —
 * never the same one twice while another can serve — after the pool's backoff (an Effect
 * `Schedule`, stepped so that a delay that would pass `retry.maxTotalMs` ends the request at once),
 * then to the pool's fallback pool. When no upstream of the chain can take the request but some
 * exclusion clears by itself (a spent budget, a full concurrency limit, a learned `Retry-After` — a
 * 429 just answered included), the request waits in the `Queue` and tries again. An upstream whose
 * provider refuses the request while translating it (`Errors.Failure.unsupported`) is not a failure
 * but an exclusion, stage `capabilities`: the next upstream is tried at once, without backoff.
 */
import { Duration, Effect, Schedule, ScheduleDecision, ScheduleIntervals } from "effect"
import type { Admitted, Service as AttemptStage } from "./Attempt.js"
import { STAGE as CAPABILITIES } from "./Capabilities.js"
import type { RouterError, UpstreamError } from "./Errors.js"
import { ContextLengthExceeded, NoUpstreamAvailable } from "./Errors.js"
import type { Attempt, Guard } from "./Guard.js"
import type { Service as HedgeStage } from "./Hedge.js"
import type { Request } from "./internal/request.js"
import type { Service as QueueStage } from "./Queue.js"
import type { Service as SelectStage } from "./Select.js"
import type { Pool } from "./Topology.js"

/** The retry backoff of a pool as an Effect `Schedule` (delays only; the stage counts attempts). */
export const backoffSchedule = (pool: Pool): Schedule.Schedule<Duration.Duration> => {
  const { initialBackoffMs, maxBackoffMs, multiplier, jitter } = pool.retry
  const capped = Schedule.exponential(Duration.millis(initialBackoffMs), multiplier).pipe(
    Schedule.modifyDelay((delay) => Duration.min(delay, Duration.millis(maxBackoffMs)))
  )
  return jitter ? Schedule.jitteredWith(capped, { min: 0.5, max: 1 }) : capped
}

/** The stage. */
export interface Service {
  /**
   * Runs attempts until one succeeds: `once` runs the call of an admitted attempt and finishes it
   * however it ends (the route runs uninterruptibly but inside `request.restore`, so its handlers
   * always run). Fails with the last upstream error, or why no upstream could serve.
   */
  readonly run: <A>(
    request: Request,
    once: (request: Request, admitted: Admitted) => Effect.Effect<A, UpstreamError>
  ) => Effect.Effect<A, RouterError>
}

/** Makes the stage over the other stages. */
export const make = (
  guards: ReadonlyArray<Guard>,
  select: SelectStage,
  attempt: AttemptStage,
  queue: QueueStage,
  hedge: HedgeStage
): Service => {
  const schedules = new Map<string, Schedule.Schedule<Duration.Duration>>()
  const scheduleOf = (pool: Pool) => {
    let schedule = schedules.get(pool.id)
    if (schedule === undefined) {
      schedule = backoffSchedule(pool)
      schedules.set(pool.id, schedule)
    }
    return schedule
  }

  const run = <A>(
    request: Request,
    once: (request: Request, admitted: Admitted) => Effect.Effect<A, UpstreamError>
  ): Effect.Effect<A, RouterError> => {
    const loop = (): Effect.Effect<A, RouterError> => {
      if (queue.mustWait(request))
        return Effect.flatMap(request.restore(queue.wait(request, [], queue.versions())), loop)
      request.tick()
      const selected = select.next(request)
      switch (selected._tag) {
        case "CountExactly":
          return Effect.flatMap(request.restore(request.prompt.exact(request.match.model)), (count) => {
            request.count = count
            request.counted = true
            request.decision.promptTokens = count.tokens
            request.decision.promptTokensExact = count.exact
            request.decision.promptTokensCounted = true
            return loop()
          })
        case "Unserved":
          return unserved()
        case "Chosen":
          return attemptOn(selected.attempt)
      }
    }

    /**
     * Admits the chosen attempt and runs it. The route is uninterruptible but where it waits (see
     * `Request.restore`), and `once` finishes its attempt however it ends: a client that goes away at
     * any moment after the reservation still gets it given back.
     */
    const attemptOn = (chosen: Attempt): Effect.Effect<A, RouterError> => {
      // `loop` read the clock just before selecting, in the same synchronous step.
      const admitted = attempt.admit(request, chosen)
      if (!("releases" in admitted)) {
        // Lost a race for the last of a budget: not an attempt on the upstream.
        request.decision.exclude(admitted)
        if (admitted.waitable === true) request.waitFor(admitted, guards)
        return Effect.zipRight(request.flush(), Effect.suspend(loop))
      }
      // A stream in a pool that hedges may race a second attempt (see `Hedge`); no other pays for it.
      const once_ =
        admitted.attempt.pool.hedge !== undefined && request.stream
          ? hedge.run(request, admitted, once)
          : once(request, admitted)
      // Admitted: whoever waited is served now, so the next in line may try.
      const call = request.ticket === undefined ? once_ : Effect.zipRight(queue.leave(request), once_)
      return Effect.catchAll(call, (error) => failed(error, admitted))
    }

    const failed = (error: UpstreamError, admitted: Admitted): Effect.Effect<A, RouterError> => {
      const pool = admitted.attempt.pool
      if (error.unsupported !== undefined) return excluded(error, admitted)
      request.lastError = error
      request.lastAttempt = admitted.attempt
      // A 429 clears with time (the rate limiter learns for how long): after a wait it may serve.
      if (error.status !== 429) (request.failed ??= []).push(admitted.attempt.upstream.id)
      if (!error.retryable) return Effect.fail(error)
      const now = request.tick().now
      const startedAt = request.decision.startedAt
      if (now - startedAt >= pool.retry.maxTotalMs) return Effect.fail(error)
      if (request.pass.attempts >= pool.maxAttempts || pool.retry.initialBackoffMs <= 0) return loop()
      // The schedule is stepped, not run, so the next delay is known before waiting: one that would
      // pass the request's total time ends the request now, with its last error.
      const schedule = scheduleOf(pool)
      return Effect.flatMap(
        schedule.step(now, undefined, request.pass.backoff ?? schedule.initial),
        ([state, , decision]): Effect.Effect<A, RouterError> => {
          request.pass.backoff = state
          if (ScheduleDecision.isDone(decision)) return Effect.fail(error)
          const delay = Math.max(0, ScheduleIntervals.start(decision.intervals) - now)
          if (now + delay - startedAt >= pool.retry.maxTotalMs) return Effect.fail(error)
          return Effect.flatMap(request.restore(Effect.sleep(Duration.millis(delay))), () => {
            request.decision.backoffMs += request.clock.unsafeCurrentTimeMillis() - now
            return loop()
          })
        }
      )
    }

    /**
     * The upstream's provider cannot express what the request asks (found while translating, nothing
     * sent): not a failure of the upstream or the request but an exclusion, as the capability guard
     * would have made, and the next upstream that can is tried at once. When none can, the answer is
     * the 400 naming the feature and the upstreams.
     */
    const excluded = (error: UpstreamError, admitted: Admitted): Effect.Effect<A, RouterError> => {
      const { upstream } = admitted.attempt
      ;(request.failed ??= []).push(upstream.id)
      request.pass.attempts--
      request.decision.exclude({
        upstream: upstream.id,
        stage: CAPABILITIES,
        reason: `${upstream.provider} upstream without ${error.unsupported}`
      })
      return loop()
    }

    const unserved = (): Effect.Effect<A, RouterError> => {
      const last = request.lastError
      if (last?.status === 429 && request.lastAttempt !== undefined) {
        // The upstream that just answered 429 is held back by the guards until its Retry-After: a
        // reason to wait like any spent budget, not a failure to hand the client. Judged as that
        // attempt was, in its own pool.
        for (const e of select.waitableOn(request, request.lastAttempt)) request.waitFor(e, guards)
      }
      const waitable = request.pass.waitable
      if (waitable !== undefined && waitable.length > 0) {
        const versions = request.pass.versions ?? queue.versions()
        return Effect.zipRight(
          request.flush(),
          Effect.flatMap(request.restore(queue.wait(request, waitable, versions)), () => {
            request.restart()
            return loop()
          })
        )
      }
      return Effect.zipRight(request.flush(), Effect.zipRight(queue.leave(request), Effect.fail(noneServed(request))))
    }

    // Lazily: a custom guard or strategy that throws becomes a defect of this effect, inside the
    // route's span and handlers, rather than an exception from building it.
    return Effect.suspend(loop)
  }

  return { run }
}

/** Why nobody served: the last upstream error, a context window nobody has, or every exclusion. */
const noneServed = (request: Request): RouterError => {
  if (request.lastError !== undefined) return request.lastError
  const { decision } = request
  // No enabled upstream of the chain has a window this request fits: waiting will not help,
  // whatever else excluded them.
  let enabled = 0
  let fits = false
  let largest = 0
  for (const pool of request.chain) {
    if (!decision.pools.includes(pool.id)) continue
    for (const u of pool.upstreams) {
      if (!u.enabled) continue
      enabled++
      if (request.fits(u)) fits = true
      else largest = Math.max(largest, u.contextWindow ?? 0)
    }
  }
  if (enabled > 0 && !fits) {
    return new ContextLengthExceeded({
      pool: request.match.pool.id,
      promptTokens: request.count.tokens,
      maxTokens: request.requestedOutputTokens ?? 0,
      largestContextWindow: largest
    })
  }
  let soonest: number | undefined
  for (const e of decision.excluded) {
    if (e.retryAfterMs !== undefined && (soonest === undefined || e.retryAfterMs < soonest)) soonest = e.retryAfterMs
  }
  return new NoUpstreamAvailable({
    pool: request.match.pool.id,
    exclusions: decision.excluded,
    retryAfterSeconds: soonest === undefined ? 1 : Math.max(1, Math.ceil(soonest / 1000))
  })
}
