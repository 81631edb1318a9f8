/**
 * Priority (failover): always the first candidate in config order. The router already narrows
 * candidates to the lowest `priority` tier that has any live upstream, so this gives strict
 * failover: the primary serves every request until it is excluded (disabled, breaker open, out of
 * budget, context window too small) or fails an attempt, then the next in order takes over, and
 * the primary gets traffic back as soon as it is a candidate again.
 */
import { Strategy } from "@sluice/core"
import { Effect, Layer } from "effect"

/** The name pools use to pick this strategy (`strategy: priority`), and the one recorded in decisions. */
export const name = "priority"

/** The strategy: the first candidate, always. Holds no state. */
export const service: Strategy.Service = Strategy.Strategy.of({
  name,
  live: false,
  select: (selection) => selection.candidates[0]
})

/** Builds the strategy (it holds no state; see {@link service}). */
export const make: Effect.Effect<Strategy.Service> = Effect.succeed(service)

/** Strict failover for every pool. */
export const layer: Layer.Layer<Strategy.Strategy> = Layer.succeed(Strategy.Strategy, service)
