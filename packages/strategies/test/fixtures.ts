import { Strategy, Topology } from "@sluice/core"
import { Array as Arr, Effect } from "effect"

/** Upstreams named by id, each with the given weight. */
export const upstreams = (weights: Readonly<Record<string, number>>): Array<Topology.Upstream> =>
  Object.entries(weights).map(([id, weight]) =>
    Topology.upstream({ id, provider: "simulated", baseUrl: `http://127.0.0.1/${id}`, weight })
  )

/** A pool over the given upstreams. */
export const poolOf = (id: string, members: ReadonlyArray<Topology.Upstream>, strategy = "round-robin") =>
  Topology.pool({ id, models: [`${id}-*`], upstreams: members, strategy })

/** A first-attempt selection among `candidates` (default: all the pool's upstreams). */
export const selection = (
  pool: Topology.Pool,
  candidates: ReadonlyArray<Topology.Upstream> = pool.upstreams
): Strategy.Selection => {
  if (!Arr.isNonEmptyReadonlyArray(candidates)) throw new Error("a selection needs at least one candidate")
  return { pool, candidates, model: pool.models[0] ?? "model", attempt: 1, promptTokens: 0, sessionKey: undefined }
}

/** The ids of `count` consecutive picks. */
export const picks = (
  strategy: Strategy.Service,
  select: Strategy.Selection,
  count: number
): Effect.Effect<Array<string>> =>
  Effect.replicateEffect(
    Effect.map(
      Effect.suspend(() => strategy.select(select)),
      (upstream) => upstream.id
    ),
    count
  )

/** How many times each id occurs. */
export const tally = (ids: ReadonlyArray<string>): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const id of ids) counts[id] = (counts[id] ?? 0) + 1
  return counts
}
