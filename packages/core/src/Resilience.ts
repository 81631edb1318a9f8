/**
 * Resilience: the standard resilience stages of a pipeline in one layer — capabilities, health checks,
 * circuit breakers and the rate limiter (budgets and the queue) — as its {@link Guard.Guards}, in the order
 * they are consulted, together with the stage services themselves (breaker resets, health status,
 * budgets). Provide it instead of `Guard.none`.
 */
import { Layer } from "effect"
import * as Capabilities from "./Capabilities.js"
import * as CircuitBreaker from "./CircuitBreaker.js"
import * as Guard from "./Guard.js"
import * as Health from "./Health.js"
import * as RateLimiter from "./RateLimiter.js"

/**
 * The stage services. Health is built over the same rate limiter, so that inference checks spend the
 * upstreams' budgets like any request.
 */
export const layerStages = Layer.mergeAll(
  CircuitBreaker.layer,
  Health.layer.pipe(Layer.provideMerge(RateLimiter.layer))
)

/**
 * The guards and their stage services. Order matters: capability, health and breaker exclusions are
 * cheap and not waitable; the rate limiter comes last, so capacity is reserved only for attempts every other stage
 * admitted. Needs a `StateStore`, the `Topology`, the `Provider` (inference checks) and an
 * `HttpClient` (http checks).
 */
export const layer = Guard.layer(Capabilities.guard, Health.guard, CircuitBreaker.guard, RateLimiter.guard).pipe(
  Layer.provideMerge(layerStages)
)
