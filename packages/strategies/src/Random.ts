/**
 * Random: each pick draws a candidate at random, in proportion to its `weight`. Needs no shared
 * state. The draw is `selection.random`, from the request's Effect `Random`, so a test or the
 * simulation lab makes picks reproducible by seeding it (`Effect.withRandom(Random.make(seed))`).
 */
import { Strategy } from "@sluice/core"
import { Effect, Layer } from "effect"
import { usableWeight } from "./internal/weights.js"

/** The name pools use to pick this strategy (`strategy: random`), and the one recorded in decisions. */
export const name = "random"

/**
 * The strategy. A candidate is drawn with probability `weight / sum(weights)`; zero, negative or
 * non-finite weights are never drawn, unless no candidate has a positive weight, in which case
 * the draw is uniform. Takes one draw per pick, none for a lone candidate.
 */
export const service: Strategy.Service = Strategy.Strategy.of({
  name,
  live: false,
  // Two passes over the candidates instead of an array of weights: it runs on every request.
  select: (selection) => {
    const { candidates } = selection
    if (candidates.length === 1) return candidates[0]
    let total = 0
    for (const candidate of candidates) total += usableWeight(candidate.weight)
    const uniform = total === 0
    let point = selection.random() * (uniform ? candidates.length : total)
    let chosen = candidates[0]
    for (const candidate of candidates) {
      const weight = uniform ? 1 : usableWeight(candidate.weight)
      if (weight === 0) continue
      // Rounding can leave a sliver past the last weight; it belongs to the last drawable candidate.
      chosen = candidate
      point -= weight
      if (point < 0) break
    }
    return chosen
  }
})

/** Builds the strategy (it holds no state; see {@link service}). */
export const make: Effect.Effect<Strategy.Service> = Effect.succeed(service)

/** Weighted random for every pool. */
export const layer: Layer.Layer<Strategy.Strategy> = Layer.succeed(Strategy.Strategy, service)
