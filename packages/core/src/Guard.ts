/**
 * Guard: the contract for pipeline stages that sit around the upstream call — rate limiting with a
 * queue, circuit breaking, health, concurrency. A guard can exclude an upstream while candidates are
 * built (with a reason that lands in the decision) and must admit the chosen upstream before the
 * call, reserving what it needs atomically; it is told the outcome when the call ends.
 *
 * The decision is the hot path, so a guard's `check`, `admit` and release are plain synchronous
 * functions over this instance's state (`StateStore.local`): no fiber, no generator, no Effect per
 * request. They read the time from the {@link Step} they are handed (the request's `Clock`, so
 * `TestClock` drives them) and leave anything effectful they need — a log line or a span event for a
 * transition — on the step, for the router to run after the synchronous part.
 *
 * Guards are provided as one `Guards` layer: `Guard.layer(RateLimiter.guard, CircuitBreaker.guard)`.
 * The router consults them in order.
 */
import { Context, Effect, Layer } from "effect"
import type { Exclusion, UpstreamError } from "./Errors.js"
import type { RateLimitInfo } from "./Provider.js"
import type { Pool, Upstream } from "./Topology.js"

/** What a guard knows about the request while candidates are built. */
export interface RequestInfo {
  readonly pool: Pool
  readonly model: string
  readonly promptTokens: number
  /** Completion tokens reserved for the request (`max_tokens`, or the configured default). */
  readonly reservedOutputTokens: number
  readonly sessionKey: string | undefined
  /** Higher is more urgent; 0 by default. */
  readonly priority: number
  readonly stream: boolean
  /** The capabilities the request needs (images, tools...; see `Capabilities`), when it needs any. */
  readonly needs?: ReadonlyArray<string> | undefined
}

/** One attempt on one upstream. */
export interface Attempt extends RequestInfo {
  readonly upstream: Upstream
  /** 1-based across the whole request, fallback pools included. */
  readonly attempt: number
  /** The scores the strategy chose this attempt's upstream by, when it scores (see `Strategy.Choice`). */
  readonly scores?: Readonly<Record<string, number>> | undefined
}

/** How an attempt ended. */
export type Outcome =
  | {
      readonly _tag: "Success"
      readonly latencyMs: number
      readonly inputTokens: number | undefined
      readonly outputTokens: number | undefined
      /** Rate-limit headers of the answer, when the provider reported them. */
      readonly rateLimits?: RateLimitInfo | undefined
    }
  | {
      readonly _tag: "Failure"
      readonly latencyMs: number
      readonly error: UpstreamError
      readonly rateLimits?: RateLimitInfo | undefined
    }
  | { readonly _tag: "Interrupted"; readonly latencyMs: number }
  /** Admission was rolled back (a later guard refused): the request never reached the upstream; undo everything. */
  | { readonly _tag: "NotSent"; readonly latencyMs: 0 }

/**
 * One synchronous step of the pipeline: the time it runs at, and where a guard leaves effects to run
 * once the step is over (on the request's fiber, so a span event lands on the request's span).
 */
export interface Step {
  /** Epoch milliseconds from the request's `Clock`. */
  readonly now: number
  /** Leaves an effect (a transition's log line or span event) to run after the synchronous step. */
  readonly after: (effect: Effect.Effect<void>) => void
}

/** Releases what a guard reserved; called exactly once, synchronously, with the outcome. */
export type Release = (outcome: Outcome, step: Step) => void

/** A stage around the upstream call. Every function is synchronous; see {@link Step}. */
export interface Guard {
  readonly name: string
  /** A reason to exclude `upstream` for this request now, or undefined. Reserves nothing. */
  readonly check: (upstream: Upstream, request: RequestInfo, step: Step) => Exclusion | undefined
  /**
   * Reserves what the stage needs for this attempt (atomically on this instance's state). Returns
   * the {@link Release}, or the {@link Exclusion} when the upstream can no longer take it (another
   * request won the race). Tell them apart with {@link isRelease}.
   */
  readonly admit: (attempt: Attempt, step: Step) => Release | Exclusion
  /**
   * Optional, with `changed`: a number that moves whenever capacity this guard withheld may have
   * freed (a release). Read it when an exclusion is found, then wait with `changed(version)`.
   */
  readonly version?: () => number
  /**
   * Optional. Completes at the next moment capacity this guard withheld may have freed (a release, a
   * learned limit expiring) — at once when `version()` has already moved past `since`, so a release
   * between the check and the wait is never lost. The router's queue waits on it, together with the
   * earliest `retryAfterMs` of the exclusions, instead of polling.
   */
  readonly changed?: (since: number) => Effect.Effect<void>
  /**
   * Optional. The tokens this guard would still admit on `upstream` now (undefined: no token limit).
   * Reserves nothing. The router counts a prompt exactly only when its fast estimate comes near this
   * headroom or a context window; far from every limit, the estimate is enough.
   */
  readonly tokenHeadroom?: (upstream: Upstream, now: number) => number | undefined
}

/** The guards of a pipeline, in the order they are consulted. */
export class Guards extends Context.Tag("@sluice/core/Guards")<Guards, ReadonlyArray<Guard>>() {}

/** A pipeline without guards. */
export const none = Layer.succeed(Guards, [])

/** Guards built from effects (each may need its own services, visible in the layer's type). */
export const layer = <Gs extends ReadonlyArray<Effect.Effect<Guard, never, unknown>>>(
  ...guards: Gs
): Layer.Layer<Guards, never, Effect.Effect.Context<Gs[number]>> =>
  Layer.effect(
    Guards,
    Effect.all(guards as ReadonlyArray<Effect.Effect<Guard, never, Effect.Effect.Context<Gs[number]>>>)
  )

/**
 * The versions of the guards that signal freed capacity (`version` and `changed`), in order: read
 * them when an exclusion is found, and wait with them later (see {@link Guard.changed}).
 */
export const versions = (guards: ReadonlyArray<Guard>): ReadonlyArray<number> => {
  let out: Array<number> | undefined
  for (const guard of guards)
    if (guard.version !== undefined && guard.changed !== undefined) (out ??= []).push(guard.version())
  return out ?? NO_VERSIONS
}

const NO_VERSIONS: ReadonlyArray<number> = []

/** True when an admission reserved (a {@link Release}), false when it was refused (an {@link Exclusion}). */
export const isRelease = (admitted: Release | Exclusion): admitted is Release => typeof admitted === "function"

/** A release that does nothing. */
export const noRelease: Release = () => {}

/** Makes a release harmless to call twice: the contract says once, and a second call must not double-count. */
export const once = (release: Release): Release => {
  let done = false
  return (outcome, step) => {
    if (done) return
    done = true
    release(outcome, step)
  }
}

/**
 * A step whose deferred effects are collected, for callers outside the router (tests, health checks,
 * an admin action): run `flush` after the synchronous calls.
 */
export interface CollectingStep extends Step {
  /** Runs the effects left on the step, in order, and forgets them. */
  readonly flush: Effect.Effect<void>
}

/** A {@link CollectingStep} at `now`. */
export const makeStep = (now: number): CollectingStep => {
  let pending: Array<Effect.Effect<void>> | undefined
  return {
    now,
    after: (effect) => {
      ;(pending ??= []).push(effect)
    },
    flush: Effect.suspend(() => {
      const effects = pending
      pending = undefined
      return effects === undefined ? Effect.void : Effect.forEach(effects, (e) => e, { discard: true })
    })
  }
}

/**
 * Runs synchronous guard calls as an effect, off the hot path: `f` gets a step at the current
 * `Clock` time, and the effects it leaves run afterwards.
 */
export const run = <A>(f: (step: Step) => A): Effect.Effect<A> =>
  Effect.clockWith((clock) => {
    const step = makeStep(clock.unsafeCurrentTimeMillis())
    const result = f(step)
    return Effect.as(step.flush, result)
  })

/** A guard's check, as an effect (for tests and tools; the router calls `check` directly). */
export const check = (guard: Guard, upstream: Upstream, request: RequestInfo): Effect.Effect<Exclusion | undefined> =>
  run((step) => guard.check(upstream, request, step))

/**
 * A guard's admission, as an effect that fails with the exclusion; its release, as an effect too
 * (for tests, health checks and tools; the router calls `admit` directly).
 */
export const admit = (
  guard: Guard,
  attempt: Attempt
): Effect.Effect<(outcome: Outcome) => Effect.Effect<void>, Exclusion> =>
  Effect.flatMap(
    run((step) => guard.admit(attempt, step)),
    (admitted) =>
      isRelease(admitted)
        ? Effect.succeed((outcome: Outcome) => run((step) => admitted(outcome, step)))
        : Effect.fail(admitted)
  )
