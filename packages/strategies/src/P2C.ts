/**
 * P2C: the power of two choices with peak-EWMA, as Finagle, tower and agentgateway balance. Each
 * pick draws two distinct candidates at random and takes the one with the lower
 * `latency × (in flight + 1) / weight`, where latency is the candidate's peak-EWMA (a slow answer
 * counts at once, then is forgotten as the average is; for a stream, of its time to first content),
 * divided by the candidate's share of recent successes (a failure costs another try).
 * Two candidates read, whatever the size of the pool: O(1) per pick, and no herd — a candidate that
 * just looked best is not what every request piles onto.
 *
 * A candidate without a sample, or whose sample is older than `Latency.STALE_MS`, is explored:
 * with nothing in flight it costs 0, so it gets one probe request, whose answer gives it a figure (an
 * upstream that was slow a while ago is tried again rather than starved by its old figure); while
 * that probe is in flight it takes the other candidate's latency (with neither known, both count 1),
 * so load and weight decide and a burst is not all sent to an unknown. A hedge never explores
 * (`selection.explore` is false): a stale latency counts as it is, and an unknown one loses to a
 * known one. Equal costs are broken at random. The scores in the decision are the two costs compared.
 */
import type { Topology } from "@sluice/core"
import { Strategy } from "@sluice/core"
import { Effect, Layer } from "effect"
import { kindOf, stale, withFailures } from "./Latency.js"
import { usableWeight } from "./internal/weights.js"

/** The name pools use to pick this strategy (`strategy: p2c`), and the one recorded in decisions. */
export const name = "p2c"

/**
 * The latency a candidate is judged by: its peak, divided by its share of recent successes (as
 * `latency` judges failures); undefined when it has none, or a stale one while the selection may explore.
 */
const judged = (upstream: Topology.Upstream, selection: Strategy.Selection): number | undefined => {
  const own = selection.live.latency(upstream, kindOf(selection))
  return own === undefined || (selection.explore && stale(own, selection.now))
    ? undefined
    : withFailures(own.peak, upstream, selection)
}

/**
 * The cost of sending the request to `upstream`, judged by `own` latency (else `other`'s, else 1):
 * 0 to explore it when its latency is unknown and nothing is in flight there. A selection that may
 * not explore (a hedge's) takes an unknown latency as ∞ while the other is known.
 */
const costOf = (
  upstream: Topology.Upstream,
  own: number | undefined,
  other: number | undefined,
  selection: Strategy.Selection
): number => {
  const inFlight = selection.live.inFlight(upstream)
  if (own === undefined && inFlight === 0 && selection.explore) return 0
  if (own === undefined && other !== undefined && !selection.explore) return Number.POSITIVE_INFINITY
  return ((own ?? other ?? 1) * (inFlight + 1)) / usableWeight(upstream.weight)
}

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
  const { candidates } = selection
  if (candidates.length === 1) return candidates[0]
  const max = heaviestOf(selection.pool)
  const i = draw(selection, max, -1)
  const j = draw(selection, max, i)
  const a = candidates[i]!
  const b = candidates[j]!
  const la = judged(a, selection)
  const lb = judged(b, selection)
  const costA = costOf(a, la, lb, selection)
  const costB = costOf(b, lb, la, selection)
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
