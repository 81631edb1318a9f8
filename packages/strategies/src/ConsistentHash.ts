/**
 * Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018; as in HAProxy and
 * Envoy): requests that share a key go to the same upstream — so its prompt cache (a provider's, or
 * vLLM's prefix cache) stays warm — unless that upstream already carries more than `(1 + ε)` × the
 * average load, in which case they go to the next upstream on the ring that does not. No upstream
 * ever carries more than its bound, and adding an upstream moves only about 1/n of the keys.
 *
 * - The key: the request's session key (`selection.sessionKey`: where the pool's `sticky.key` says,
 *   else the `x-session-id` header), else the hash of its prompt prefix — system and developer
 *   messages and tools, else the first message (`selection.prefixHash`). A request with neither
 *   (embeddings) goes to the least loaded candidate.
 * - The load: requests in flight (`selection.live.inFlight`). An upstream's bound is
 *   `ceil((1 + ε) × (in flight on all candidates + 1) × its weight / total weight)`.
 * - The ring holds every upstream of the pool, each with points in proportion to its weight; a
 *   candidate left out for now (excluded, already tried) is stepped over, so its keys move only
 *   while it is out.
 * - `ε` is the pool's `consistentHash.epsilon` (default 0.25): smaller spreads load more evenly,
 *   larger keeps more keys at home.
 *
 * The scores in the decision are the loads (in flight) of the upstreams the walk looked at.
 */
import type { Topology } from "@sluice/core"
import { Strategy } from "@sluice/core"
import { Effect, Layer } from "effect"
import { load as connections } from "./LeastConnections.js"
import type { Ring } from "./internal/ring.js"
import { build, seek } from "./internal/ring.js"
import { best, RECORDED } from "./internal/scan.js"
import { usableWeight } from "./internal/weights.js"

/** The name pools use to pick this strategy (`strategy: consistent-hash`), and the one recorded in decisions. */
export const name = "consistent-hash"

/** The default `ε`: an upstream may carry 25% more than the average load before its keys spill over. */
export const defaultEpsilon = 0.25

/** The key of a request on the ring, when it has one. */
export const keyOf = (selection: Strategy.Selection): number | undefined => {
  const session = selection.sessionKey
  return session === undefined ? selection.prefixHash() : Strategy.hash(session)
}

/** The weight an upstream's bound is taken in proportion to. */
const weightOf = (upstream: Topology.Upstream) => usableWeight(upstream.weight) || 1

/**
 * Marks the candidates on the ring for this pick (all of them when the candidates are the pool's
 * upstreams); returns the total load and weight of the candidates.
 */
const mark = (ring: Ring, selection: Strategy.Selection): { readonly load: number; readonly weight: number } => {
  const stamp = ++ring.stamp
  const all = selection.candidates.length === ring.upstreams.length
  let load = 0
  let weight = 0
  for (const upstream of selection.candidates) {
    load += selection.live.inFlight(upstream)
    weight += weightOf(upstream)
    if (!all) {
      const at = ring.index.get(upstream)
      if (at !== undefined) ring.candidate[at] = stamp
    }
  }
  if (all) ring.candidate.fill(stamp)
  return { load, weight }
}

/** The upstream the key lands on: the first candidate from its point whose load is under its bound. */
const walk = (ring: Ring, selection: Strategy.Selection, key: number, epsilon: number): Strategy.Choice | undefined => {
  const { load, weight } = mark(ring, selection)
  const stamp = ring.stamp
  const scores: Record<string, number> = {}
  let recorded = 0
  const start = seek(ring, key)
  const total = ring.points.length
  for (let step = 0; step < total; step++) {
    const owner = ring.owners[(start + step) % total]!
    if (ring.candidate[owner] !== stamp || ring.visited[owner] === stamp) continue
    ring.visited[owner] = stamp
    const upstream = ring.upstreams[owner]!
    const inFlight = selection.live.inFlight(upstream)
    if (recorded++ < RECORDED) scores[upstream.id] = inFlight
    if (inFlight < Math.ceil(((1 + epsilon) * (load + 1) * weightOf(upstream)) / weight))
      return Strategy.scored(upstream, scores)
  }
  return undefined
}

/** Builds the strategy: each instance keeps one ring per pool (rebuilt when a reload makes a new pool). */
export const make: Effect.Effect<Strategy.Service> = Effect.sync(() => {
  const rings = new WeakMap<Topology.Pool, Ring>()
  const ringOf = (pool: Topology.Pool): Ring => {
    let ring = rings.get(pool)
    if (ring === undefined) rings.set(pool, (ring = build(pool.upstreams)))
    return ring
  }
  return Strategy.Strategy.of({
    name,
    select: (selection) => {
      if (selection.candidates.length === 1) return selection.candidates[0]
      const key = keyOf(selection)
      const epsilon = selection.pool.consistentHash?.epsilon ?? defaultEpsilon
      const landed = key === undefined ? undefined : walk(ringOf(selection.pool), selection, key, epsilon)
      // No key, or candidates the ring does not hold (a selection made outside the pool): least loaded.
      return landed ?? best(selection, connections)
    }
  })
})

/** Consistent hashing with bounded loads for every pool. */
export const layer: Layer.Layer<Strategy.Strategy> = Layer.effect(Strategy.Strategy, make)
