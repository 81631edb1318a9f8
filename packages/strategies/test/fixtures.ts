import { Live, StateStore, Strategy, Topology } from "@sluice/core"
import { Array as Arr, Effect, Random } from "effect"

/** Upstreams named by id, each with the given weight. */
export const upstreams = (weights: Readonly<Record<string, number>>): Array<Topology.Upstream> =>
  Object.entries(weights).map(([id, weight]) =>
    Topology.upstream({ id, provider: "simulated", baseUrl: `http://127.0.0.1/${id}`, weight })
  )

/** A pool over the given upstreams. */
export const poolOf = (id: string, members: ReadonlyArray<Topology.Upstream>, strategy = "round-robin") =>
  Topology.pool({ id, models: [`${id}-*`], upstreams: members, strategy })

/**
 * Successive draws of Effect's `Random.make(seed)`: the draws a request under
 * `Effect.withRandom(Random.make(seed))` sees.
 */
export const seeded = (seed: unknown): (() => number) => {
  const random = Random.make(seed)
  return () => Effect.runSync(random.next)
}

/** What a test may set of a selection beyond its pool. */
export interface SelectionOptions {
  /** Default: all the pool's upstreams. */
  readonly candidates?: ReadonlyArray<Topology.Upstream>
  /** Seed of `random` (default 0). */
  readonly seed?: unknown
  /** The state its live view reads (default: a fresh memory store). */
  readonly local?: StateStore.Local
  readonly now?: number
  readonly promptTokens?: number
  readonly reservedOutputTokens?: number
  readonly stream?: boolean
  readonly sessionKey?: string
  readonly prefixHash?: number
  /** Whether the strategy may explore (default true: a first attempt's selection). */
  readonly explore?: boolean
}

/** A fresh memory store's `local` state, synchronously. */
export const memoryLocal = (): StateStore.Local => Effect.runSync(StateStore.makeMemory).local

/**
 * A first-attempt selection at time 0 among `candidates` (default: all the pool's upstreams). Its
 * `random` draws from `Random.make(seed)` (default seed 0), one draw after another across picks; its
 * live view reads `local` (default: a fresh memory store) at `now`.
 */
export const selection = (pool: Topology.Pool, options: SelectionOptions = {}): Strategy.Selection => {
  const candidates = options.candidates ?? pool.upstreams
  if (!Arr.isNonEmptyReadonlyArray(candidates)) throw new Error("a selection needs at least one candidate")
  const now = options.now ?? 0
  const prefix = options.prefixHash
  return {
    pool,
    candidates,
    model: pool.models[0] ?? "model",
    attempt: 1,
    promptTokens: options.promptTokens ?? 0,
    reservedOutputTokens: options.reservedOutputTokens ?? pool.defaultMaxTokens,
    stream: options.stream ?? false,
    sessionKey: options.sessionKey,
    prefixHash: () => prefix,
    now,
    random: seeded(options.seed ?? 0),
    explore: options.explore ?? true,
    live: Live.make(options.local ?? memoryLocal(), now)
  }
}

/** The id of the upstream a strategy picks. */
export const pick = (strategy: Strategy.Service, select: Strategy.Selection): string =>
  Strategy.chosen(strategy.select(select)).id

/** The ids of `count` consecutive picks. */
export const picks = (strategy: Strategy.Service, select: Strategy.Selection, count: number): Array<string> => {
  const ids: Array<string> = []
  for (let i = 0; i < count; i++) ids.push(pick(strategy, select))
  return ids
}

/** How many times each id occurs. */
export const tally = (ids: ReadonlyArray<string>): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const id of ids) counts[id] = (counts[id] ?? 0) + 1
  return counts
}
