/**
 * Latency: the candidate with the lowest decayed latency — for a stream its time to first content,
 * for a whole answer its latency (`selection.live.latency`). It explores, and it forgives:
 *
 * - A candidate with no sample yet is tried first (score 0), one request at a time: while that
 *   request is in flight it waits its turn (score ∞), so a burst does not all land on an unknown.
 * - A candidate with nothing in flight is judged by its average leaned toward 0 by its age (by
 *   half every `Live.HALF_LIFE_MS`): one found slow long ago is tried again once its figure falls
 *   below the best one's, and that one request brings a fresh sample. While it has a request in
 *   flight its average counts as it is, so the probe stays a single request.
 *
 * Ties are broken at random. The scores in the decision are the milliseconds compared.
 */
import type { Topology } from "@sluice/core"
import { Live, Strategy } from "@sluice/core"
import { Effect, Layer } from "effect"
import { best } from "./internal/scan.js"

/** The name pools use to pick this strategy (`strategy: latency`), and the one recorded in decisions. */
export const name = "latency"

/** The latency a request of this selection is judged by: time to first content for a stream. */
export const kindOf = (selection: Strategy.Selection): Live.LatencyKind =>
  selection.stream ? "first-content" : "answer"

/**
 * A candidate's expected latency in milliseconds (the score): 0 to explore it, ∞ while its first
 * request is in flight, else its decayed average, leaned toward 0 by its age when it is idle.
 */
export const expected = (upstream: Topology.Upstream, selection: Strategy.Selection): number => {
  const average = selection.live.latency(upstream, kindOf(selection))
  const busy = selection.live.inFlight(upstream) > 0
  if (average === undefined) return busy ? Number.POSITIVE_INFINITY : 0
  return busy ? average.ms : average.ms * Live.weightAfter(selection.now - average.at)
}

/** The strategy. Holds no state of its own: the averages are the live view's. */
export const service: Strategy.Service = Strategy.Strategy.of({
  name,
  select: (selection) => (selection.candidates.length === 1 ? selection.candidates[0] : best(selection, expected))
})

/** Builds the strategy (see {@link service}). */
export const make: Effect.Effect<Strategy.Service> = Effect.succeed(service)

/** Lowest latency for every pool. */
export const layer: Layer.Layer<Strategy.Strategy> = Layer.succeed(Strategy.Strategy, service)
