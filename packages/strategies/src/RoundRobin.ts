/**
 * Round robin: each pick takes the next candidate in config order. The rotation is a per-pool
 * counter in the {@link StateStore.StateStore}, so gateway instances sharing a store (Redis) keep
 * one rotation between them instead of one each.
 */
import { StateStore, Strategy } from "@sluice/core"
import { Effect, Layer } from "effect"
import { slot } from "./internal/weights.js"

/** The name pools use to pick this strategy (`strategy: round-robin`), and the one recorded in decisions. */
export const name = "round-robin"

/** The state-store counter holding a pool's rotation. */
export const counterKey = (poolId: string): string => `rr:${poolId}`

/**
 * Builds the strategy. The `n`th pick of a pool (counting across every instance sharing the
 * store) takes `candidates[(n - 1) % candidates.length]`. When candidates come and go (an upstream
 * excluded, then back), the rotation carries on over the current list: every live candidate still
 * gets its turn, though the cycle's phase shifts. A lone candidate is returned without touching
 * the store.
 */
export const make: Effect.Effect<Strategy.Service, never, StateStore.StateStore> = Effect.gen(function* () {
  const store = yield* StateStore.StateStore
  return Strategy.Strategy.of({
    name,
    // Plain function, not `Effect.fn`: it runs on every request, where a span and a captured stack
    // trace per call would cost more than the pick itself.
    select: (selection: Strategy.Selection) => {
      const { candidates } = selection
      if (candidates.length === 1) return Effect.succeed(candidates[0])
      return Effect.map(
        store.increment(counterKey(selection.pool.id)),
        (n) => candidates[slot(n, candidates.length)] ?? candidates[0]
      )
    }
  })
})

/** Round robin for every pool. Requires a `StateStore` (`StateStore.layerMemory` in one process). */
export const layer: Layer.Layer<Strategy.Strategy, never, StateStore.StateStore> = Layer.effect(Strategy.Strategy, make)
