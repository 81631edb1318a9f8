/**
 * Weighted: smooth weighted round robin (nginx's algorithm) over each upstream's `weight`. Every
 * window of `sum(weights)` consecutive picks holds each candidate exactly `weight` times, and a
 * heavy candidate's picks are spread out rather than bunched (weights 5,1,1 give
 * a,a,b,a,c,a,a).
 *
 * The pick is a pure function of a per-pool counter in the {@link StateStore.StateStore}: the
 * strategy precomputes the SWRR cycle for the current candidate set and takes the slot the
 * counter points at. Gateway instances sharing a store (Redis) therefore follow one schedule
 * together, with no per-process balancing state.
 */
import { StateStore, Strategy, type Topology } from "@sluice/core"
import { Effect, Layer } from "effect"
import { maxScheduleLength, schedule, scheduleWeights } from "./internal/swrr.js"
import { effectiveWeights, slot } from "./internal/weights.js"

/** The name pools use to pick this strategy (`strategy: weighted`), and the one recorded in decisions. */
export const name = "weighted"

/** The state-store counter holding a pool's position in its schedule. */
export const counterKey = (poolId: string): string => `wrr:${poolId}`

/** How many schedules (one per distinct candidate ids + weights) a strategy instance keeps. */
export const scheduleCacheSize = 256

/**
 * The longest schedule the strategy builds; see {@link make} for what happens to larger weight
 * sums.
 */
export const maxCycle = maxScheduleLength

/**
 * Builds the strategy. The `n`th pick of a pool (counting across every instance sharing the
 * store) takes slot `(n - 1) % cycle` of the SWRR cycle for the current candidates.
 *
 * - Weights: a candidate's `weight`; zero, negative or non-finite weights are never picked, unless
 *   no candidate has a positive weight, in which case all count equally.
 * - Cycle length: integer weights are first divided by their greatest common divisor (1000:3000
 *   becomes 1:3, proportions unchanged). If the sum is still above {@link maxCycle} (10,000), or
 *   weights are fractional, they are scaled to sum to about 10,000 and rounded (a positive weight
 *   stays at least 1): picks keep one shared, deterministic schedule, and each candidate's share
 *   is off by about 0.01 percentage points at most. A stateful per-process SWRR would stay exact
 *   but lose the shared rotation across instances, so it is not used.
 * - Changing candidates (an upstream excluded, then back): each set has its own schedule, indexed
 *   by the same counter, so picks stay within the current candidates and in their proportions;
 *   the cycle's phase shifts at the change.
 * - Schedules are cached per instance by candidate ids and weights, at most
 *   {@link scheduleCacheSize}, least recently used evicted first.
 *
 * A lone candidate is returned without touching the store.
 */
export const make: Effect.Effect<Strategy.Service, never, StateStore.StateStore> = Effect.gen(function* () {
  const store = yield* StateStore.StateStore
  const cache = new Map<string, Uint32Array>()

  const scheduleFor = (candidates: ReadonlyArray<Topology.Upstream>): Uint32Array => {
    const key = JSON.stringify(candidates.map((c) => [c.id, c.weight]))
    const hit = cache.get(key)
    if (hit !== undefined) {
      cache.delete(key)
      cache.set(key, hit)
      return hit
    }
    const built = schedule(scheduleWeights(effectiveWeights(candidates)))
    if (cache.size >= scheduleCacheSize) {
      const oldest = cache.keys().next()
      if (oldest.done !== true) cache.delete(oldest.value)
    }
    cache.set(key, built)
    return built
  }

  return Strategy.Strategy.of({
    name,
    // Plain function, not `Effect.fn`: it runs on every request (see RoundRobin).
    select: (selection: Strategy.Selection) => {
      const { candidates } = selection
      if (candidates.length === 1) return Effect.succeed(candidates[0])
      const cycle = scheduleFor(candidates)
      return Effect.map(
        store.increment(counterKey(selection.pool.id)),
        (n) => candidates[cycle[slot(n, cycle.length)] ?? 0] ?? candidates[0]
      )
    }
  })
})

/** Weighted round robin for every pool. Requires a `StateStore` (`StateStore.layerMemory` in one process). */
export const layer: Layer.Layer<Strategy.Strategy, never, StateStore.StateStore> = Layer.effect(Strategy.Strategy, make)
