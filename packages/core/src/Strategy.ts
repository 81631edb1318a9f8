/**
 * Strategy: picks one upstream among the live candidates of a pool. Strategies ship as Layers in
 * `@sluice/strategies`; a custom strategy is any Layer that provides this service.
 *
 * A selection is part of the hot path, so `select` is a plain synchronous function: state it keeps
 * goes through `StateStore.local` (this instance's state, synchronously), randomness through
 * `selection.random` (the request's `Random`, seedable in tests) and time through `selection.now`.
 */
import { Context, Layer } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import type { Pool, Upstream } from "./Topology.js"

/** What a strategy chooses from. */
export interface Selection {
  readonly pool: Pool
  /**
   * Upstreams that can serve now, in config order, all of the pool's lowest priority tier that has
   * any: enabled, not excluded by any stage, large enough context window, not yet tried.
   */
  readonly candidates: NonEmptyReadonlyArray<Upstream>
  /** The model requested (after alias resolution). */
  readonly model: string
  /** 1 for the first attempt, 2 for the first retry... */
  readonly attempt: number
  /** Prompt tokens of the request (0 for embeddings). */
  readonly promptTokens: number
  /** The session key of the request, when the client sent one. */
  readonly sessionKey: string | undefined
  /** Epoch milliseconds from the request's `Clock`. */
  readonly now: number
  /** A uniform draw in [0, 1) from the request's `Random` (seedable with `Random.make` in tests). */
  readonly random: () => number
}

/** Picks one upstream among the candidates. */
export interface Service {
  /** The name recorded in decisions (`sluice.strategy`). */
  readonly name: string
  /** Picks one of `selection.candidates`, synchronously. Must return one of them. */
  readonly select: (selection: Selection) => Upstream
  /** For strategies that dispatch per pool: the name of the strategy serving `pool`. */
  readonly nameFor?: (pool: Pool) => string
}

/** Picks one upstream among the candidates. */
export class Strategy extends Context.Tag("@sluice/core/Strategy")<Strategy, Service>() {}

/** A strategy from a plain function (custom strategies in a few lines). */
export const make = (name: string, select: (selection: Selection) => Upstream): Service => Strategy.of({ name, select })

/** Unknown strategy names in pools, as `ConfigError`-ready problems. */
export const unknownNames = (pools: Iterable<Pool>, known: ReadonlyArray<string>): Array<string> => {
  const problems: Array<string> = []
  for (const pool of pools) {
    if (!known.includes(pool.strategy)) {
      problems.push(`pools.${pool.id}.strategy: unknown strategy '${pool.strategy}'; known: ${known.join(", ")}`)
    }
  }
  return problems
}

/**
 * A strategy that dispatches on each pool's `strategy` name. Pools naming a strategy that is not in
 * `strategies` use `fallback` (check names at start with {@link unknownNames}).
 */
export const byName = (strategies: Readonly<Record<string, Service>>, fallback: Service): Service => {
  const pick = (pool: Pool): Service => strategies[pool.strategy] ?? fallback
  return Strategy.of({
    name: "by-name",
    select: (selection) => pick(selection.pool).select(selection),
    nameFor: (pool) => pick(pool).name
  })
}

/** A layer providing one strategy for every pool. */
export const layer = (service: Service) => Layer.succeed(Strategy, service)

/** The strategy name to record for a pool. */
export const nameOf = (strategy: Service, pool: Pool): string =>
  strategy.nameFor === undefined ? strategy.name : strategy.nameFor(pool)

/** Picks the first candidate. Used where no choice is needed. */
export const first: Service = make("first", (selection) => selection.candidates[0])
