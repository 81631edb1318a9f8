/**
 * Least connections: the candidate with the fewest requests in flight relative to its `weight` —
 * `(in flight + 1) / weight`, so an idle pool still prefers its heavier upstreams and a busy one
 * keeps each upstream's share of the requests in flight near its share of the weights. Ties are
 * broken at random (`selection.random`), never by config order. Reads `selection.live.inFlight`,
 * which the Attempt stage counts from admission until the attempt finishes (a stream until it ends).
 */
import type { Topology } from "@sluice/core"
import { Strategy } from "@sluice/core"
import { Effect, Layer } from "effect"
import { best } from "./internal/scan.js"
import { usableWeight } from "./internal/weights.js"

/** The name pools use to pick this strategy (`strategy: least-connections`), and the one recorded in decisions. */
export const name = "least-connections"

/**
 * A candidate's load: `(in flight + 1) / weight` (the scores in the decision). A zero weight scores
 * infinitely high: such a candidate is chosen only when every candidate has a zero weight.
 */
export const load = (upstream: Topology.Upstream, selection: Strategy.Selection): number =>
  (selection.live.inFlight(upstream) + 1) / usableWeight(upstream.weight)

/** The strategy. Holds no state of its own: the counts are the live view's. */
export const service: Strategy.Service = Strategy.Strategy.of({
  name,
  select: (selection) => (selection.candidates.length === 1 ? selection.candidates[0] : best(selection, load))
})

/** Builds the strategy (see {@link service}). */
export const make: Effect.Effect<Strategy.Service> = Effect.succeed(service)

/** Least connections for every pool. */
export const layer: Layer.Layer<Strategy.Strategy> = Layer.succeed(Strategy.Strategy, service)
