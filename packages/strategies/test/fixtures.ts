import { Strategy, Topology } from "@sluice/core"
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

/**
 * A first-attempt selection at time 0 among `candidates` (default: all the pool's upstreams). Its
 * `random` draws from `Random.make(seed)` (default seed 0), one draw after another across picks.
 */
export const selection = (
  pool: Topology.Pool,
  options: { readonly candidates?: ReadonlyArray<Topology.Upstream>; readonly seed?: unknown } = {}
): Strategy.Selection => {
  const candidates = options.candidates ?? pool.upstreams
  if (!Arr.isNonEmptyReadonlyArray(candidates)) throw new Error("a selection needs at least one candidate")
  return {
    pool,
    candidates,
    model: pool.models[0] ?? "model",
    attempt: 1,
    promptTokens: 0,
    sessionKey: undefined,
    now: 0,
    random: seeded(options.seed ?? 0)
  }
}

/** The ids of `count` consecutive picks. */
export const picks = (strategy: Strategy.Service, select: Strategy.Selection, count: number): Array<string> => {
  const ids: Array<string> = []
  for (let i = 0; i < count; i++) ids.push(strategy.select(select).id)
  return ids
}

/** How many times each id occurs. */
export const tally = (ids: ReadonlyArray<string>): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const id of ids) counts[id] = (counts[id] ?? 0) + 1
  return counts
}
