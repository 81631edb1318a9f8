/**
 * P2C: the power of two choices with peak-EWMA, as Finagle, tower and agentgateway balance. Each
 * pick draws two distinct candidates at random and takes the one with the lower
 * `latency × (in flight + 1) / weight`, where latency is the candidate's peak-EWMA (a slow answer
 * counts at once, then is forgotten as the average is; for a stream, of its time to first content).
 * Two candidates read, whatever the size of the pool: O(1) per pick, and no herd — a candidate that
 * just looked best is not what every request piles onto.
 *
 * A candidate without a sample takes the other one's latency (then load and weight decide); with
 * neither, both count 1. An idle candidate's figure leans toward the other's with its age (by half
 * every `Live.HALF_LIFE_MS`), so one that was slow long ago is not starved by its old figure. Equal
 * costs are broken at random. The scores in the decision are the two costs compared.
 */
import type { Topology } from "@sluice/core"
import { Live, Strategy } from "@sluice/core"
import { Effect, Layer } from "effect"
import { kindOf } from "./Latency.js"
import { usableWeight } from "./internal/weights.js"

/** The name pools use to pick this strategy (`strategy: p2c`), and the one recorded in decisions. */
export const name = "p2c"

/** `own` peak latency leaned toward `neutral` by its age; `neutral` itself without a sample. */
const estimate = (own: Live.Decayed | undefined, neutral: number, now: number): number =>
  own === undefined ? neutral : neutral + (own.peak - neutral) * Live.weightAfter(now - own.at)

/** The cost of sending the request to `upstream` with latency `latency`. */
const costOf = (upstream: Topology.Upstream, latency: number, selection: Strategy.Selection): number =>
  (latency * (selection.live.inFlight(upstream) + 1)) / usableWeight(upstream.weight)

/** Draws before a weighted draw settles for a uniform one (only very uneven weights need that many). */
const MAX_DRAWS = 32

/** The heaviest weight of each pool's upstreams (the candidates are some of them). */
const heaviest = new WeakMap<Topology.Pool, number>()

const heaviestOf = (pool: Topology.Pool): number => {
  let max = heaviest.get(pool)
  if (max === undefined) {
    max = 0
    for (const upstream of pool.upstreams) max = Math.max(max, usableWeight(upstream.weight))
    heaviest.set(pool, max)
  }
  return max
}

/**
 * A candidate index drawn in proportion to weight, other than `not`: rejection sampling against the
 * pool's heaviest weight, O(1) expected draws while weights are within a small factor of each other;
 * after {@link MAX_DRAWS}, a uniform draw. Weights must match the loads' divisor, or an upstream
 * drawn less often than its weight could not carry its share.
 */
const draw = (selection: Strategy.Selection, max: number, not: number): number => {
  const n = selection.candidates.length
  for (let tries = 0; tries < MAX_DRAWS && max > 0; tries++) {
    const i = Math.floor(selection.random() * n)
    if (i !== not && selection.random() * max < usableWeight(selection.candidates[i]!.weight)) return i
  }
  const i = Math.floor(selection.random() * (not < 0 ? n : n - 1))
  return not >= 0 && i >= not ? i + 1 : i
}

/** The lower-cost of two distinct random candidates, with both costs. */
const choose = (selection: Strategy.Selection): Strategy.Choice => {
  const { candidates, live } = selection
  if (candidates.length === 1) return candidates[0]
  const max = heaviestOf(selection.pool)
  const i = draw(selection, max, -1)
  const j = draw(selection, max, i)
  const a = candidates[i]!
  const b = candidates[j]!
  const kind = kindOf(selection)
  const la = live.latency(a, kind)
  const lb = live.latency(b, kind)
  const costA = costOf(a, estimate(la, lb?.peak ?? la?.peak ?? 1, selection.now), selection)
  const costB = costOf(b, estimate(lb, la?.peak ?? lb?.peak ?? 1, selection.now), selection)
  const chosen =
    costA < costB || Number.isNaN(costB)
      ? a
      : costB < costA || Number.isNaN(costA)
        ? b
        : selection.random() < 0.5
          ? a
          : b
  return Strategy.scored(chosen, { [a.id]: costA, [b.id]: costB })
}

/** The strategy. Holds no state of its own: latencies and counts are the live view's. */
export const service: Strategy.Service = Strategy.Strategy.of({ name, select: choose })

/** Builds the strategy (see {@link service}). */
export const make: Effect.Effect<Strategy.Service> = Effect.succeed(service)

/** Power of two choices for every pool. */
export const layer: Layer.Layer<Strategy.Strategy> = Layer.succeed(Strategy.Strategy, service)
