/**
 * Cost: the candidate that would serve this request cheapest — prompt tokens × input price +
 * expected output tokens × output price (`pricing`, US dollars per million tokens). The expected
 * output is what the candidates' answers have averaged (`selection.live.outputTokens`), capped by
 * the request's reserved completion; before any answer reported usage, the reserved completion.
 *
 * Pool settings (`cost:` in the pool's config):
 *
 * - `weights: { cost, latency }` trades cost against latency: each candidate scores
 *   `cost × its cost / mean cost + latency × its latency / mean latency` over the candidates, the
 *   latency judged as the `latency` strategy judges it (a candidate without a sample counts as the
 *   mean). Default: cost alone.
 * - `minQuality` leaves out candidates whose `quality` is below it; when none reaches it, the
 *   candidates of the highest quality serve (a request is better served than refused).
 *
 * Every upstream of a pool using it needs `pricing` (checked when the strategies are built). Ties are
 * broken at random. The scores in the decision are expected US dollars, or with `weights` the
 * weighted scores.
 */
import type { Topology } from "@sluice/core"
import { Strategy } from "@sluice/core"
import { Effect, Layer } from "effect"
import { best } from "./internal/scan.js"
import { expected as expectedLatency } from "./Latency.js"

/** The name pools use to pick this strategy (`strategy: cost`), and the one recorded in decisions. */
export const name = "cost"

/** Output tokens expected of this request: the candidates' mean answer, capped by the reservation. */
export const expectedOutput = (selection: Strategy.Selection): number => {
  let sum = 0
  let known = 0
  for (const upstream of selection.candidates) {
    const output = selection.live.outputTokens(upstream)
    if (output !== undefined) {
      sum += output
      known++
    }
  }
  const reserved = selection.reservedOutputTokens
  return known === 0 ? reserved : Math.min(reserved, sum / known)
}

/** The expected cost in US dollars of serving `promptTokens` and `outputTokens` on `upstream` (∞ unpriced). */
export const dollars = (upstream: Topology.Upstream, promptTokens: number, outputTokens: number): number =>
  upstream.pricing === undefined
    ? Number.POSITIVE_INFINITY
    : (promptTokens * upstream.pricing.inputPerMillion + outputTokens * upstream.pricing.outputPerMillion) / 1e6

/** What one pick compares candidates by (made once per pick, read by the score functions). */
interface Basis {
  readonly output: number
  readonly floor: number
  readonly costWeight: number
  readonly latencyWeight: number
  readonly meanCost: number
  readonly meanLatency: number
}

const below = (upstream: Topology.Upstream, basis: Basis) => (upstream.quality ?? 0) < basis.floor

/** Expected dollars, ∞ below the quality floor. */
const priced = (upstream: Topology.Upstream, selection: Strategy.Selection, basis: Basis): number =>
  below(upstream, basis) ? Number.POSITIVE_INFINITY : dollars(upstream, selection.promptTokens, basis.output)

/** Cost and latency, each relative to the candidates' mean, weighted; ∞ below the quality floor. */
const traded = (upstream: Topology.Upstream, selection: Strategy.Selection, basis: Basis): number => {
  if (below(upstream, basis)) return Number.POSITIVE_INFINITY
  const cost = dollars(upstream, selection.promptTokens, basis.output)
  const latency = expectedLatency(upstream, selection)
  return (
    (basis.meanCost > 0 ? (basis.costWeight * cost) / basis.meanCost : 0) +
    (basis.meanLatency > 0 && Number.isFinite(latency) && latency > 0
      ? (basis.latencyWeight * latency) / basis.meanLatency
      : basis.latencyWeight)
  )
}

const quality = (upstream: Topology.Upstream): number => upstream.quality ?? 0

/** The means `traded` compares with, over the candidates above the floor (latencies known only). */
const means = (selection: Strategy.Selection, output: number, floor: number) => {
  let cost = 0
  let costs = 0
  let latency = 0
  let latencies = 0
  for (const upstream of selection.candidates) {
    if ((upstream.quality ?? 0) < floor) continue
    const c = dollars(upstream, selection.promptTokens, output)
    if (Number.isFinite(c)) {
      cost += c
      costs++
    }
    const l = expectedLatency(upstream, selection)
    if (Number.isFinite(l) && l > 0) {
      latency += l
      latencies++
    }
  }
  return { meanCost: costs === 0 ? 0 : cost / costs, meanLatency: latencies === 0 ? 0 : latency / latencies }
}

const choose = (selection: Strategy.Selection): Strategy.Choice => {
  if (selection.candidates.length === 1) return selection.candidates[0]
  const settings = selection.pool.cost
  const costWeight = settings?.weights?.cost ?? 1
  const latencyWeight = settings?.weights?.latency ?? 0
  const floor = settings?.minQuality ?? Number.NEGATIVE_INFINITY
  const output = expectedOutput(selection)
  const trading = latencyWeight > 0
  const basis: Basis = {
    output,
    floor,
    costWeight,
    latencyWeight,
    ...(trading ? means(selection, output, floor) : { meanCost: 0, meanLatency: 0 })
  }
  const chosen = best(selection, trading ? traded : priced, 1, basis)
  if (Number.isFinite(chosen.scores[chosen.upstream.id] ?? Number.NaN) || !Number.isFinite(floor)) return chosen
  // Nobody reaches the floor: the best quality serves.
  return best(selection, quality, -1)
}

/** The strategy. Holds no state of its own. */
export const service: Strategy.Service = Strategy.Strategy.of({ name, select: choose })

/** Builds the strategy (see {@link service}). */
export const make: Effect.Effect<Strategy.Service> = Effect.succeed(service)

/** Cheapest expected cost for every pool. */
export const layer: Layer.Layer<Strategy.Strategy> = Layer.succeed(Strategy.Strategy, service)

/** What is wrong with `pool` for this strategy: every upstream needs `pricing`. `ConfigError`-ready. */
export const problems = (pool: Topology.Pool): Array<string> => {
  const unpriced = pool.upstreams.filter((u) => u.pricing === undefined).map((u) => `'${u.id}'`)
  return unpriced.length === 0
    ? []
    : [
        `pools.${pool.id}.strategy: 'cost' needs pricing on every upstream of the pool; ${unpriced.join(", ")} has none (set pricing: { inputPerMillion, outputPerMillion })`
      ]
}
