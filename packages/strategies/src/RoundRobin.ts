/**
 * Round robin: each pick takes the next candidate in config order. The rotation is a per-pool
 * counter in the state store's `local` state, advanced synchronously on every pick: strategy
 * instances on one store share it, and a shared store (Redis) keeps it in step between gateway
 * instances in the background, so no pick waits on a network round trip.
 */
import { StateStore, Strategy } from "@sluice/core"
import { Effect, Layer } from "effect"
import { advance, slot } from "./internal/weights.js"

/** The name pools use to pick this strategy (`strategy: round-robin`), and the one recorded in decisions. */
export const name = "round-robin"

/** The state-store key of a pool's rotation counter (a number in `StateStore.local`). */
export const counterKey = (poolId: string): string => `rr:${poolId}`

/**
 * Builds the strategy. The `n`th pick of a pool takes `candidates[(n - 1) % candidates.length]`.
 * When candidates come and go (an upstream excluded, then back), the rotation carries on over the
 * current list: every live candidate still gets its turn, though the cycle's phase shifts. A lone
 * candidate is returned without touching the store.
 */
export const make: Effect.Effect<Strategy.Service, never, StateStore.StateStore> = Effect.map(
  StateStore.StateStore,
  ({ local }) =>
    Strategy.Strategy.of({
      name,
      live: false,
      select: (selection) => {
        const { candidates } = selection
        if (candidates.length === 1) return candidates[0]
        const n = local.modify(counterKey(selection.pool.id), advance)
        return candidates[slot(n, candidates.length)] ?? candidates[0]
      }
    })
)

/** Round robin for every pool. Requires a `StateStore` (`StateStore.layerMemory` in one process). */
export const layer: Layer.Layer<Strategy.Strategy, never, StateStore.StateStore> = Layer.effect(Strategy.Strategy, make)
