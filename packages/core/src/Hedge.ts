/**
 * Hedge: hedged streams, opt-in per pool (`pools[].hedge`). When a stream's first content has not
 * come by the pool's delay — `afterMs` after its attempt was admitted, or the `afterPercentile` of
 * the pool's recent times to first content — a second attempt starts on another upstream of the
 * pool, chosen by `Select` and admitted by `Attempt` like any other (never one without budget,
 * never a wait in the queue). The first to deliver content serves the request; the other is
 * cancelled at once, which finishes its attempt and gives its reservations back. Hedges never pass
 * `maxExtraPercent` of the pool's requests of the last minute (a sliding window), counted in the state
 * store's `local` state.
 * The decision says what happened (`Decision.hedge`: both upstreams, the winner, the loser and why;
 * `Decision.hedges`: how many hedges the request started, as a failed race may be followed by another).
 *
 * A race also judges the upstream of the hedged attempt: lost (slower to first content than the
 * hedge that started after it) `ejectAfterLosses` times in a row, it is ejected from the pool for
 * `ejectMs` — `Select` excludes it from new attempts, stage `hedge` — never more than
 * `maxEjectedPercent` of the pool's upstreams at once. A stream of its whose first content comes in
 * time resets the count. Strategies blind to latency keep sending a slowed upstream its share of
 * first attempts, more than a hedge budget can rescue; ejected, it gets none.
 *
 * Pools without `hedge` never reach this module: `Retry` asks it only for a stream in a pool that
 * hedges, so they pay nothing for it.
 */
import { Cause, Deferred, Duration, Effect, Exit, Fiber, FiberId, Option } from "effect"
import type { Admitted, Service as AttemptStage } from "./Attempt.js"
import type { Hedge as HedgeRecord } from "./Decision.js"
import type { UpstreamError } from "./Errors.js"
import * as Ejection from "./internal/ejection.js"
import * as Latency from "./internal/latency.js"
import type { Race, Request } from "./internal/request.js"
import type { Service as SelectStage } from "./Select.js"
import type { Local } from "./StateStore.js"
import type { Pool } from "./Topology.js"

/** The stage. */
export interface Service {
  /**
   * Runs `once` for an admitted attempt of a stream in a pool that hedges, and, when its first
   * content is late, once more for a second attempt; returns what the first to deliver content
   * returned, or fails as the hedged attempt did when neither delivered.
   */
  readonly run: <A>(
    request: Request,
    admitted: Admitted,
    once: (request: Request, admitted: Admitted) => Effect.Effect<A, UpstreamError>
  ) => Effect.Effect<A, UpstreamError>
}

/**
 * Hedges and requests of a pool in the current minute and the one before (JSON, in `local` under
 * `hedge:<pool>`): the budget reads them as a sliding window.
 */
interface Budget {
  /** Epoch milliseconds the current minute started. */
  readonly since: number
  readonly requests: number
  readonly hedges: number
  /** The minute before, whole; 0 when none was counted or it is older. */
  readonly previousRequests: number
  readonly previousHedges: number
}

/** The budget's counting period. */
const WINDOW_MS = 60_000

/** Times to first content a pool keeps for its percentile. */
const SAMPLES = 256

/** A percentile is only read once the pool has seen this many. */
export const MIN_SAMPLES = 20

/** The pool's recent times to first content on this instance, and a cache of the percentile read. */
class Samples {
  private readonly ms: Array<number> = []
  private next = 0
  private cached: number | undefined = undefined

  add(ms: number): void {
    if (this.ms.length < SAMPLES) this.ms.push(ms)
    else this.ms[this.next] = ms
    this.next = (this.next + 1) % SAMPLES
    this.cached = undefined
  }

  /** The `p`th percentile (nearest rank), or undefined before {@link MIN_SAMPLES}. */
  percentile(p: number): number | undefined {
    if (this.ms.length < MIN_SAMPLES) return undefined
    if (this.cached === undefined) {
      const sorted = [...this.ms].sort((a, b) => a - b)
      this.cached = sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
    }
    return this.cached
  }
}

/**
 * The first of a request's attempts to deliver content wins; each winner's time feeds the percentile.
 * The hedged attempt winning in time, or winning the race, clears its upstream's lost races.
 */
class FirstContent implements Race {
  winner: object | undefined = undefined
  /** Epoch milliseconds the hedge is due; content of the hedged attempt by then came in time. */
  due = Number.POSITIVE_INFINITY
  /** Whether a hedge started: the hedged attempt that delivers first then won the race. */
  hedged = false
  constructor(
    private readonly request: Request,
    private readonly samples: Samples,
    private readonly primary: Admitted,
    private readonly local: Local
  ) {}
  readonly claim = (attempt: object): boolean => {
    if (this.winner !== undefined) return this.winner === attempt
    this.winner = attempt
    const now = this.request.clock.unsafeCurrentTimeMillis()
    this.samples.add(Math.max(0, now - this.primary.startedAt))
    const { pool, upstream } = this.primary.attempt
    if (attempt === this.primary && (this.hedged || now <= this.due) && Ejection.ejects(pool))
      Ejection.inTime(this.local, pool, upstream.id, now)
    return true
  }
}

/** The budget at `now`: the minute it falls in, the one before carried over when it was the last counted. */
const rolled = (budget: Budget | undefined, now: number): Budget => {
  if (budget === undefined) return { since: now, requests: 0, hedges: 0, previousRequests: 0, previousHedges: 0 }
  const minutes = Math.floor((now - budget.since) / WINDOW_MS)
  if (minutes <= 0) return budget
  const adjacent = minutes === 1
  return {
    since: budget.since + minutes * WINDOW_MS,
    requests: 0,
    hedges: 0,
    previousRequests: adjacent ? budget.requests : 0,
    previousHedges: adjacent ? budget.hedges : 0
  }
}

/**
 * Whether one more hedge keeps the hedges of the last minute within `maxExtraPercent` of its
 * requests, at `now`. The last minute is estimated as a sliding window: the current minute's counts
 * plus the share of the previous minute's that the window still covers. A fixed window would forget
 * its requests at each minute's turn and refuse every hedge until a tenth of a minute's traffic had
 * come again — exactly when an upstream that slowed down at a minute's turn needs them.
 */
const roomFor = (budget: Budget, maxExtraPercent: number, now: number): boolean => {
  const kept = 1 - Math.min(1, Math.max(0, now - budget.since) / WINDOW_MS)
  const requests = budget.requests + budget.previousRequests * kept
  const hedges = budget.hedges + budget.previousHedges * kept
  return (hedges + 1) * 100 <= maxExtraPercent * requests
}

/** Counts a request of `pool` at `now`, and a hedge of it too when `hedge` and the budget allows. */
const count = (local: Local, pool: Pool, now: number, request: boolean, hedge: boolean): boolean =>
  local.modify<Budget, boolean>(`hedge:${pool.id}`, (current) => {
    const budget = rolled(current, now)
    const counted = request ? { ...budget, requests: budget.requests + 1 } : budget
    const allowed = hedge && roomFor(counted, pool.hedge!.maxExtraPercent, now)
    if (!request && !allowed) return [false, budget]
    return [allowed, allowed ? { ...counted, hedges: counted.hedges + 1 } : counted]
  })

/** Whether the pool's budget has room for one more hedge at `now`: a read, nothing counted. */
const allows = (local: Local, pool: Pool, now: number): boolean => {
  const budget = local.peek<Budget>(`hedge:${pool.id}`)
  return budget !== undefined && roomFor(rolled(budget, now), pool.hedge!.maxExtraPercent, now)
}

/** The exit of whichever fiber of two ends first with a value, else of `first` once both have failed. */
const firstSuccess = <A, E>(
  first: Fiber.RuntimeFiber<A, E>,
  second: Fiber.RuntimeFiber<A, E>
): Effect.Effect<Exit.Exit<A, E>> =>
  Effect.suspend(() => {
    const settled = Deferred.unsafeMake<Exit.Exit<A, E>>(FiberId.none)
    const exits: Array<Exit.Exit<A, E> | undefined> = [undefined, undefined]
    const observe = (i: number) => (exit: Exit.Exit<A, E>) => {
      exits[i] = exit
      if (Exit.isSuccess(exit)) Deferred.unsafeDone(settled, Exit.succeed(exit))
      else if (exits[1 - i] !== undefined) Deferred.unsafeDone(settled, Exit.succeed(exits[0]!))
    }
    first.addObserver(observe(0))
    second.addObserver(observe(1))
    return Deferred.await(settled)
  })

/** How an admitted attempt runs: the router's `once`. */
type Once<A> = (request: Request, admitted: Admitted) => Effect.Effect<A, UpstreamError>

/** A decision's hedge record while the race runs. */
type Record_ = { -readonly [K in keyof HedgeRecord]: HedgeRecord[K] }

/** Waits for `fiber`'s exit where the route may be interrupted; interrupting the wait interrupts it. */
const awaitIn = <A, E>(request: Request, fiber: Fiber.RuntimeFiber<A, E>): Effect.Effect<Exit.Exit<A, E>> =>
  Effect.onInterrupt(request.restore(Fiber.await(fiber)), () => Fiber.interrupt(fiber))

/** Makes the stage over the pipeline's selection and admission and this instance's state. */
export const make = (select: SelectStage, attempt: AttemptStage, local: Local): Service => {
  const samples = new Map<string, Samples>()
  const samplesOf = (pool: Pool): Samples => {
    let kept = samples.get(pool.id)
    if (kept === undefined) samples.set(pool.id, (kept = new Samples()))
    return kept
  }

  const run = <A>(request: Request, admitted: Admitted, once: Once<A>): Effect.Effect<A, UpstreamError> => {
    const pool = admitted.attempt.pool
    const config = pool.hedge!
    const kept = samplesOf(pool)
    // A request counts once in each pool it tries, however many of its attempts there are hedged: a
    // fallback pool that hedges counts it too.
    if (request.hedgeCounted?.includes(pool.id) !== true) {
      ;(request.hedgeCounted ??= []).push(pool.id)
      count(local, pool, request.now, true, false)
    }
    const race = (request.race = new FirstContent(request, kept, admitted, local))
    const delay = config.afterMs ?? kept.percentile(config.afterPercentile!)
    if (delay === undefined) return once(request, admitted)
    race.due = admitted.startedAt + delay
    const wait = Duration.millis(Math.max(0, admitted.startedAt + delay - request.now))
    return Effect.flatMap(Effect.fork(once(request, admitted)), (primary) => {
      const early: Effect.Effect<Option.Option<Exit.Exit<A, UpstreamError>>> = Effect.race(
        Effect.map(Fiber.await(primary), Option.some),
        Effect.as(Effect.sleep(wait), Option.none())
      )
      return Effect.flatMap(
        Effect.onInterrupt(request.restore(early), () => Fiber.interrupt(primary)),
        (exit) => (Option.isSome(exit) ? exit.value : hedge(request, admitted, primary, once))
      )
    })
  }

  /** The hedge, once the hedged attempt is late: started when a candidate and the budget allow. */
  const hedge = <A>(
    request: Request,
    admitted: Admitted,
    primary: Fiber.RuntimeFiber<A, UpstreamError>,
    once: Once<A>
  ): Effect.Effect<A, UpstreamError> => {
    const pool = admitted.attempt.pool
    const now = request.tick().now
    const alone = Effect.flatten(awaitIn(request, primary))
    // Over the budget, no hedge is even chosen.
    if (!allows(local, pool, now)) return alone
    const chosen = select.another(request)
    if (chosen === undefined) return Effect.zipRight(request.flush(), alone)
    const second = attempt.admit(request, chosen)
    if (!("releases" in second)) {
      request.decision.exclude(second)
      return Effect.zipRight(request.flush(), alone)
    }
    count(local, pool, now, false, true)
    const record: Record_ = {
      primary: admitted.attempt.upstream.id,
      hedge: chosen.upstream.id,
      afterMs: Math.max(0, now - admitted.startedAt),
      winner: undefined,
      loser: undefined,
      reason: undefined
    }
    request.decision.hedge = record
    request.decision.hedges++
    ;(request.race as FirstContent).hedged = true
    return Effect.flatMap(Effect.fork(once(request, second)), (other) => {
      const both = [primary, other] as const
      return Effect.flatMap(
        Effect.onInterrupt(request.restore(firstSuccess(primary, other)), () => Fiber.interruptAll(both)),
        (exit) => settle(local, request, record, both, [admitted, second], exit)
      )
    })
  }

  return { run }
}

/**
 * Ends a race: cancels the loser (its attempt finishes, interrupted, and gives its reservations
 * back) and says in the record who won and why the other lost. A loser cancelled for being slower
 * leaves what it taught of its time to first content: more than it had waited, counted as that wait
 * plus its average (see `Latency.recordAtLeast`). Otherwise strategies that rank by latency would not
 * learn what the hedges hide: with the wait alone, an upstream ten times slower (2–3 s to first
 * content) looked hardly slower (the ~650 ms at which hedges kept rescuing it), and `p2c`, which
 * weighs latency by load, sent it first attempts again and again until the hedge budget ran out.
 * The hedged attempt's loss for being slower counts against its upstream (see `Ejection`); the
 * hedge's tells nothing, as it started later. When both failed, the hedge's upstream is not tried
 * again and the request fails as the hedged attempt did.
 */
const settle = <A>(
  local: Local,
  request: Request,
  record: Record_,
  fibers: readonly [Fiber.RuntimeFiber<A, UpstreamError>, Fiber.RuntimeFiber<A, UpstreamError>],
  attempts: readonly [Admitted, Admitted],
  exit: Exit.Exit<A, UpstreamError>
): Effect.Effect<A, UpstreamError> => {
  if (Exit.isFailure(exit)) {
    const error = failureOf(fibers[1].unsafePoll())
    if (error !== undefined && error.status !== 429) (request.failed ??= []).push(record.hedge)
    record.reason = "neither delivered content: both attempts failed"
    return exit
  }
  const winner = (request.race as FirstContent).winner === attempts[1] ? 1 : 0
  const loser = winner === 1 ? 0 : 1
  record.winner = attempts[winner].attempt.upstream.id
  record.loser = attempts[loser].attempt.upstream.id
  const error = failureOf(fibers[loser].unsafePoll())
  record.reason = error === undefined ? "slower to first content; cancelled" : `failed first: ${error.message}`
  if (error === undefined) {
    const now = request.tick().now
    const waited = Math.max(0, now - attempts[loser].startedAt)
    // The hedged attempt lost to one that started later: it is slower than it waited, by its
    // average still to go. The hedge lost to one that started sooner: only a wait past its average says more.
    const judge = loser === 0 ? Latency.recordAtLeast : Latency.recordLowerBound
    judge(local, "first-content", attempts[loser].attempt.upstream.id, waited, now)
    if (loser === 0) ejectOnLoss(local, request, attempts[0])
  }
  return Effect.zipRight(request.flush(), Effect.as(Fiber.interrupt(fibers[loser]), exit.value))
}

/** Counts the hedged attempt's lost race against its upstream; an ejection it makes is logged. */
const ejectOnLoss = (local: Local, request: Request, admitted: Admitted): void => {
  const { pool, upstream } = admitted.attempt
  if (!Ejection.ejects(pool)) return
  const ejected = Ejection.lost(local, pool, upstream.id, request.now)
  if (ejected === undefined) return
  request.after(
    Effect.logWarning(
      `upstream ${upstream.id} ejected from pool ${pool.id} for ${ejected.until - request.now} ms: it lost ${ejected.losses} races to first content in a row`
    )
  )
}

/** The upstream error an exit failed with, if it has one. */
const failureOf = (exit: Exit.Exit<unknown, UpstreamError> | null): UpstreamError | undefined =>
  exit === null || Exit.isSuccess(exit) ? undefined : Option.getOrUndefined(Cause.failureOption(exit.cause))
