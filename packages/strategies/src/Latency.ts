/**
 * Latency: the candidate with the lowest decayed latency — for a stream its time to first content,
 * for a whole answer its latency (`selection.live.latency`). It explores, and it forgives:
 *
 * - A candidate with no sample yet is tried first (score 0), one request at a time: while that
 *   request is in flight it waits its turn (score ∞), so a burst does not all land on an unknown.
 * - A candidate whose last sample is older than {@link STALE_MS} (three half-lives of the averages)
 *   and that has nothing in flight is explored again the same way: one found slow a while ago gets a
 *   single probe request, whose answer refreshes its figure (an average that old keeps little weight
 *   against a new sample), so an upstream that recovered is not starved by its old average. At most
 *   one such probe per upstream every {@link STALE_MS} while another upstream is preferred.
 *
 * Failures count too: latency is taken from answers, and a failing upstream often fails fast, so its
 * average is divided by its share of recent attempts that succeeded (`1 - selection.live.errorRate`,
 * at least 5%) — the expected time to an answer when each failure costs another try. Ties are broken
 * at random. The scores in the decision are the milliseconds compared.
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

/** After this long without a sample, an idle candidate's average no longer counts: it is explored again. */
export const STALE_MS = 3 * Live.HALF_LIFE_MS

/** Whether `average` is missing or too old to judge an idle candidate by. */
export const stale = (average: Live.Decayed | undefined, now: number): boolean =>
  average === undefined || now - average.at > STALE_MS

/**
 * `ms` as the time to an answer from `upstream` when each of its recent failures costs another try:
 * divided by its share of recent successes (at least 5%).
 */
export const withFailures = (ms: number, upstream: Topology.Upstream, selection: Strategy.Selection): number =>
  ms / Math.max(0.05, 1 - selection.live.errorRate(upstream))

/**
 * A candidate's expected latency in milliseconds (the score): 0 to explore it (no sample, or a stale
 * one, and nothing in flight), ∞ while its first request is in flight, else its decayed average
 * divided by its share of recent successes. A selection that may not explore (a hedge's: see
 * `Selection.explore`) judges by what is known: a stale average as it is, no sample as ∞.
 */
export const expected = (upstream: Topology.Upstream, selection: Strategy.Selection): number => {
  const average = selection.live.latency(upstream, kindOf(selection))
  const explorable = selection.explore && selection.live.inFlight(upstream) === 0
  if (average === undefined) return explorable ? 0 : Number.POSITIVE_INFINITY
  return explorable && stale(average, selection.now) ? 0 : withFailures(average.ms, upstream, selection)
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
