/**
 * Guard: the contract for pipeline stages that sit around the upstream call — rate limiting with a
 * queue, circuit breaking, health, concurrency. A guard can exclude an upstream while candidates are
 * built (with a reason that lands in the decision) and must admit the chosen upstream before the
 * call, reserving what it needs atomically; it is told the outcome when the call ends.
 *
 * Guards are provided as one `Guards` layer: `Guards.layer(RateLimiter.guard, CircuitBreaker.guard)`.
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
}

/** One attempt on one upstream. */
export interface Attempt extends RequestInfo {
  readonly upstream: Upstream
  /** 1-based across the whole request, fallback pools included. */
  readonly attempt: number
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

/** Releases what a guard reserved; called exactly once with the outcome. */
export type Release = (outcome: Outcome) => Effect.Effect<void>

/** A stage around the upstream call. */
export interface Guard {
  readonly name: string
  /** A reason to exclude `upstream` for this request now, or undefined. Reserves nothing. */
  readonly check: (upstream: Upstream, request: RequestInfo) => Effect.Effect<Exclusion | undefined>
  /**
   * Reserves what the stage needs for this attempt (atomically on the state store). Fails with an
   * {@link Exclusion} when the upstream can no longer take it (another request won the race).
   */
  readonly admit: (attempt: Attempt) => Effect.Effect<Release, Exclusion>
  /**
   * Optional. Completes at the next moment capacity this guard withheld may have freed (a release, a
   * learned limit expiring). The router's queue waits on it — together with the earliest
   * `retryAfterMs` of the exclusions — instead of polling. Each evaluation waits for the next change.
   */
  readonly changed?: Effect.Effect<void>
  /**
   * Optional. The tokens this guard would still admit on `upstream` now (undefined: no token limit).
   * Reserves nothing. The router counts a prompt exactly only when its fast estimate comes near this
   * headroom or a context window; far from every limit, the estimate is enough.
   */
  readonly tokenHeadroom?: (upstream: Upstream) => Effect.Effect<number | undefined>
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

/** A release that does nothing. */
export const noRelease: Release = () => Effect.void

/** Makes a release harmless to call twice: the contract says once, and a second call must not double-count. */
export const once = (release: Release): Release => {
  let done = false
  return (outcome) =>
    Effect.suspend(() => {
      if (done) return Effect.void
      done = true
      return release(outcome)
    })
}
