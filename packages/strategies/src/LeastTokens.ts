/**
 * Least tokens: the candidate with the fewest tokens reserved by its requests in flight relative to
 * its `weight` — `(reserved + this request's prompt and reserved completion) / weight`. Requests
 * differ a hundredfold in size, so counting tokens rather than requests keeps one long generation
 * from weighing as little as a one-line answer. Reads `selection.live.reservedTokens` (prompt +
 * reserved completion of each attempt in flight, counted from admission until it finishes). Ties are
 * broken at random. The scores in the decision are the tokens per unit of weight.
 */
import type { Topology } from "@sluice/core"
import { Strategy } from "@sluice/core"
import { Effect, Layer } from "effect"
import { best } from "./internal/scan.js"
import { usableWeight } from "./internal/weights.js"

/** The name pools use to pick this strategy (`strategy: least-tokens`), and the one recorded in decisions. */
export const name = "least-tokens"

/** A candidate's load in tokens per unit of weight, this request included (the score). */
export const load = (upstream: Topology.Upstream, selection: Strategy.Selection): number =>
  (selection.live.reservedTokens(upstream) + selection.promptTokens + selection.reservedOutputTokens) /
  usableWeight(upstream.weight)

/** The strategy. Holds no state of its own: the counts are the live view's. */
export const service: Strategy.Service = Strategy.Strategy.of({
  name,
  select: (selection) => (selection.candidates.length === 1 ? selection.candidates[0] : best(selection, load))
})

/** Builds the strategy (see {@link service}). */
export const make: Effect.Effect<Strategy.Service> = Effect.succeed(service)

/** Least outstanding tokens for every pool. */
export const layer: Layer.Layer<Strategy.Strategy> = Layer.succeed(Strategy.Strategy, service)
