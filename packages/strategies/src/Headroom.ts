/**
 * Headroom: the candidate with the largest share of its RPM / TPM budgets left
 * (`selection.live.budgetLeft`: the smaller of the two shares, capped by what the upstream reported
 * remaining; 0 while a 429 holds it back). Every upstream's budget drains at the same pace, so a pool
 * serves its whole summed quota before any upstream runs out, and none is pushed into answering 429.
 * An upstream without `rpm` or `tpm` limits counts as having all of its budget left. Ties are broken
 * at random. The scores in the decision are the shares left (higher is better).
 */
import type { Topology } from "@sluice/core"
import { Strategy } from "@sluice/core"
import { Effect, Layer } from "effect"
import { best } from "./internal/scan.js"

/** The name pools use to pick this strategy (`strategy: headroom`), and the one recorded in decisions. */
export const name = "headroom"

/** A candidate's share of its budgets left (the score; the highest wins). */
export const left = (upstream: Topology.Upstream, selection: Strategy.Selection): number =>
  selection.live.budgetLeft(upstream)

/** The strategy. Holds no state of its own: the budgets are the rate limiter's. */
export const service: Strategy.Service = Strategy.Strategy.of({
  name,
  // Reads the rate limiter's budgets, not the per-attempt counts: attempts need not be counted for it.
  live: false,
  select: (selection) => (selection.candidates.length === 1 ? selection.candidates[0] : best(selection, left, -1))
})

/** Builds the strategy (see {@link service}). */
export const make: Effect.Effect<Strategy.Service> = Effect.succeed(service)

/** Most budget left for every pool. */
export const layer: Layer.Layer<Strategy.Strategy> = Layer.succeed(Strategy.Strategy, service)
