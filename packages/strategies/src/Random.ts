/**
 * Random: each pick draws a candidate at random, in proportion to its `weight`. Needs no shared
 * state. Randomness comes from Effect's `Random` service, so a test or the simulation lab makes
 * picks reproducible with `Effect.withRandom(Random.make(seed))`.
 */
import { Strategy } from "@sluice/core"
import { Effect, Layer, Random } from "effect"
import { effectiveWeights, sum } from "./internal/weights.js"

/** The name pools use to pick this strategy (`strategy: random`), and the one recorded in decisions. */
export const name = "random"

/**
 * The strategy. A candidate is drawn with probability `weight / sum(weights)`; zero, negative or
 * non-finite weights are never drawn, unless no candidate has a positive weight, in which case
 * the draw is uniform.
 */
export const service: Strategy.Service = Strategy.Strategy.of({
  name,
  // Plain function, not `Effect.fn`: it runs on every request (see RoundRobin).
  select: (selection: Strategy.Selection) => {
    const { candidates } = selection
    if (candidates.length === 1) return Effect.succeed(candidates[0])
    const weights = effectiveWeights(candidates)
    return Effect.map(Random.next, (r) => {
      let point = r * sum(weights)
      let last = 0
      for (let i = 0; i < candidates.length; i++) {
        const weight = weights[i] ?? 0
        if (weight === 0) continue
        last = i
        point -= weight
        if (point < 0) return candidates[i] ?? candidates[0]
      }
      // Rounding can leave a sliver past the last weight; it belongs to the last drawable candidate.
      return candidates[last] ?? candidates[0]
    })
  }
})

/** Builds the strategy (it holds no state; see {@link service}). */
export const make: Effect.Effect<Strategy.Service> = Effect.succeed(service)

/** Weighted random for every pool. */
export const layer: Layer.Layer<Strategy.Strategy> = Layer.succeed(Strategy.Strategy, service)
