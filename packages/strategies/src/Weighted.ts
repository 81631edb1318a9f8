/**
 * Weighted: smooth weighted round robin (nginx's algorithm) over each upstream's `weight`. Every
 * window of `sum(weights)` consecutive picks holds each candidate exactly `weight` times, and a
 * heavy candidate's picks are spread out rather than bunched (weights 5,1,1 give
 * a,a,b,a,c,a,a).
 *
 * The pick is a pure function of a per-pool counter in the state store's `local` state: the
 * strategy precomputes the SWRR cycle for the current candidate set and takes the slot the
 * counter points at. That one number is the only state: a shared store (Redis) keeps it in step
 * between gateway instances in the background, so they follow one schedule as closely as the
 * store keeps them in step, and no pick waits on a network round trip.
 */
import { StateStore, Strategy } from "@sluice/core"
import { Effect, Layer } from "effect"
import { maxScheduleLength, scheduleCache } from "./internal/swrr.js"
import { advance, slot } from "./internal/weights.js"

/** The name pools use to pick this strategy (`strategy: weighted`), and the one recorded in decisions. */
export const name = "weighted"

/** The state-store key of a pool's position in its schedule (a number in `StateStore.local`). */
export const counterKey = (poolId: string): string => `wrr:${poolId}`

/** How many schedules (one per distinct candidate ids + weights) a strategy instance keeps. */
export const scheduleCacheSize = 256

/**
 * The longest schedule the strategy builds; see {@link make} for what happens to larger weight
 * sums.
 */
export const maxCycle = maxScheduleLength

/**
 * Builds the strategy. The `n`th pick of a pool takes slot `(n - 1) % cycle` of the SWRR cycle for
 * the current candidates.
 *
 * - Weights: a candidate's `weight`; zero, negative or non-finite weights are never picked, unless
 *   no candidate has a positive weight, in which case all count equally.
 * - Cycle length: integer weights are first divided by their greatest common divisor (1000:3000
 *   becomes 1:3, proportions unchanged). If the sum is still above {@link maxCycle} (10,000), or
 *   weights are fractional, they are scaled to sum to about 10,000 and rounded (a positive weight
 *   stays at least 1): picks keep one deterministic schedule, and each candidate's share is off by
 *   about 0.01 percentage points at most. A stateful SWRR (a current value per candidate, changed
 *   on every pick) would stay exact, but its state would be a record per candidate set instead of
 *   one counter, so it is not used.
 * - Changing candidates (an upstream excluded, then back): each set has its own schedule, indexed
 *   by the same counter, so picks stay within the current candidates and in their proportions;
 *   the cycle's phase shifts at the change.
 * - Schedules are cached per instance: each pool's last one by candidate identity (a pick among
 *   the same candidates as the pool's previous pick builds nothing), others by candidate ids and
 *   weights, at most {@link scheduleCacheSize}, least recently looked up evicted first.
 *
 * A lone candidate is returned without touching the store.
 */
export const make: Effect.Effect<Strategy.Service, never, StateStore.StateStore> = Effect.map(
  StateStore.StateStore,
  ({ local }) => {
    const scheduleFor = scheduleCache(scheduleCacheSize)
    return Strategy.Strategy.of({
      name,
      live: false,
      select: (selection) => {
        const { candidates, pool } = selection
        if (candidates.length === 1) return candidates[0]
        const cycle = scheduleFor(pool, candidates)
        const n = local.modify(counterKey(pool.id), advance)
        return candidates[cycle[slot(n, cycle.length)] ?? 0] ?? candidates[0]
      }
    })
  }
)

/** Weighted round robin for every pool. Requires a `StateStore` (`StateStore.layerMemory` in one process). */
export const layer: Layer.Layer<Strategy.Strategy, never, StateStore.StateStore> = Layer.effect(Strategy.Strategy, make)
