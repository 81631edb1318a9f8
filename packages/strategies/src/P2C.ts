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

/** The lower-cost of two distinct random candidates, with both costs. */
const choose = (selection: Strategy.Selection): Strategy.Choice => {
  const { candidates, live } = selection
  const n = candidates.length
  if (n === 1) return candidates[0]
  const i = Math.floor(selection.random() * n)
  let j = Math.floor(selection.random() * (n - 1))
  if (j >= i) j++
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
