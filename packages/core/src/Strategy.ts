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
import { hashText } from "./internal/prefix.js"
import type { View } from "./Live.js"
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
  /** Completion tokens reserved for the request: its `max_tokens`, else the pool's `defaultMaxTokens`. */
  readonly reservedOutputTokens: number
  /** Whether the request streams (its time to first content matters more than its whole answer's). */
  readonly stream: boolean
  /**
   * The session key of the request, when the client sent one: where the pool's `sticky.key` says,
   * else (a pool without `sticky`) the route's `sessionKey` option or the `x-session-id` header.
   */
  readonly sessionKey: string | undefined
  /**
   * A 32-bit hash of the prompt's prefix — its system (and developer) messages and its tools, else
   * its first message — that requests sharing the prefix share (what provider and vLLM prompt caches
   * key on); undefined when the request has no messages (embeddings). Computed on the first call, so
   * a strategy that does not call it pays nothing. Call it as a method.
   */
  readonly prefixHash: () => number | undefined
  /**
   * The live state of the candidates (in flight, reserved tokens, decayed latency, error rate,
   * budget left), read when asked: a strategy that reads nothing pays nothing. Valid during this call.
   */
  readonly live: View
  /** Epoch milliseconds from the request's `Clock`. */
  readonly now: number
  /** A uniform draw in [0, 1) from the request's `Random` (seedable with `Random.make` in tests). */
  readonly random: () => number
  /**
   * Whether the strategy may explore: send the request to a candidate it knows little of (no
   * latency sample, or a stale one) to learn its figure. False when choosing a hedge, a second
   * attempt beside one that is late (see `Hedge`), which exists to be fast: pick the best candidate
   * by what is known, and leave exploring to first attempts. A strategy that never explores ignores it.
   */
  readonly explore: boolean
}

/**
 * A choice with the scores it rested on, by upstream id (what the strategy compared: in flight per
 * weight, milliseconds, dollars...). They go into the decision (`Decision.scores`) and its trace
 * (`sluice.strategy.scores`).
 */
export interface Scored {
  readonly upstream: Upstream
  readonly scores: Readonly<Record<string, number>>
}

/** What `select` returns: an upstream, or an upstream with its scores. */
export type Choice = Upstream | Scored

/** Picks one upstream among the candidates. */
export interface Service {
  /** The name recorded in decisions (`sluice.strategy`). */
  readonly name: string
  /**
   * Picks one of `selection.candidates`, synchronously. Must return one of them, alone or with the
   * scores that chose it ({@link Scored}).
   */
  readonly select: (selection: Selection) => Choice
  /** For strategies that dispatch per pool: the name of the strategy serving `pool`. */
  readonly nameFor?: (pool: Pool) => string
  /**
   * Whether `select` reads the load in `selection.live` (in flight, reserved tokens, error rate,
   * output tokens): a pipeline whose strategy does not skips counting them per attempt (latencies are
   * kept either way). Absent means it may (true); the built-ins that read none say false.
   */
  readonly live?: boolean
}

/** Picks one upstream among the candidates. */
export class Strategy extends Context.Tag("@sluice/core/Strategy")<Strategy, Service>() {}

/**
 * A strategy from a plain function (custom strategies in a few lines): it returns an upstream, or an
 * upstream with its scores ({@link scored}).
 */
export const make = (name: string, select: (selection: Selection) => Choice): Service => Strategy.of({ name, select })

/**
 * A well-spread 32-bit hash of `text` (FNV-1a with Murmur3's finaliser), as `Selection.prefixHash`
 * is made: for strategies that key on a text, such as a session key.
 */
export const hash = (text: string): number => hashText(text)

/** A choice with its scores. */
export const scored = (upstream: Upstream, scores: Readonly<Record<string, number>>): Scored => ({ upstream, scores })

/** The upstream of a choice. */
export const chosen = (choice: Choice): Upstream => ("scores" in choice ? choice.upstream : choice)

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
export const byName = (
  strategies: Readonly<Record<string, Service>>,
  fallback: Service,
  pools?: Iterable<Pool>
): Service => {
  const pick = (pool: Pool): Service => strategies[pool.strategy] ?? fallback
  // Only the strategies pools use decide whether attempts are counted; without the pools, all of them.
  const used = pools === undefined ? [...Object.values(strategies), fallback] : [...pools].map(pick)
  return Strategy.of({
    name: "by-name",
    select: (selection) => pick(selection.pool).select(selection),
    nameFor: (pool) => pick(pool).name,
    live: used.some((strategy) => strategy.live !== false)
  })
}

/** A layer providing one strategy for every pool. */
export const layer = (service: Service) => Layer.succeed(Strategy, service)

/** The strategy name to record for a pool. */
export const nameOf = (strategy: Service, pool: Pool): string =>
  strategy.nameFor === undefined ? strategy.name : strategy.nameFor(pool)

/** Picks the first candidate. Used where no choice is needed. */
export const first: Service = Strategy.of({
  name: "first",
  select: (selection) => selection.candidates[0],
  live: false
})
