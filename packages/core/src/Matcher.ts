/**
 * Matcher: model name → pool. Exact names win over aliases, aliases over `*` wildcards; among
 * wildcards the longest pattern wins, then config order.
 */
import { Context, Effect, Layer } from "effect"
import { ModelNotFound } from "./Errors.js"
import type { Pool } from "./Topology.js"
import { Topology } from "./Topology.js"

/** A matched model: the pool and the model name to route (an alias is replaced by its target). */
export interface Match {
  readonly pool: Pool
  readonly model: string
}

/** Resolves model names to pools. */
export interface Service {
  /** The pool serving `model`; fails with {@link ModelNotFound} listing the known models. */
  readonly match: (model: string) => Effect.Effect<Match, ModelNotFound>
  /** The pool serving `model`, or the {@link ModelNotFound} error, synchronously (the router's hot path). */
  readonly find: (model: string) => Match | ModelNotFound
  /** The pool with this id (fallback chains use it). */
  readonly pool: (id: string) => Pool | undefined
  /** Model names to advertise in `GET /v1/models`: exact names and aliases. */
  readonly models: ReadonlyArray<{ readonly id: string; readonly pool: string }>
}

/** Resolves model names to pools. */
export class Matcher extends Context.Tag("@sluice/core/Matcher")<Matcher, Service>() {}

const escape = (s: string) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")

/** Builds a matcher over the given pools. */
export const make = (pools: Iterable<Pool>): Service => {
  const exact = new Map<string, Pool>()
  const aliases = new Map<string, { pool: Pool; model: string }>()
  const wildcards: Array<{ pattern: string; regex: RegExp; pool: Pool }> = []
  const byId = new Map<string, Pool>()
  for (const pool of pools) {
    byId.set(pool.id, pool)
    for (const name of pool.models) {
      if (name.includes("*")) {
        wildcards.push({ pattern: name, regex: new RegExp(`^${name.split("*").map(escape).join(".*")}$`), pool })
      } else if (!exact.has(name)) {
        exact.set(name, pool)
      }
    }
    for (const [alias, model] of Object.entries(pool.aliases)) {
      if (!aliases.has(alias)) aliases.set(alias, { pool, model })
    }
  }
  wildcards.sort((a, b) => b.pattern.length - a.pattern.length)
  const known = [...exact.keys(), ...aliases.keys(), ...wildcards.map((w) => w.pattern)]
  const cache = new Map<string, Match>()
  const lookup = (model: string): Match | undefined => {
    const hit = exact.get(model)
    if (hit !== undefined) return { pool: hit, model }
    const alias = aliases.get(model)
    if (alias !== undefined) return { pool: alias.pool, model: alias.model }
    const wildcard = wildcards.find((w) => w.regex.test(model))
    return wildcard === undefined ? undefined : { pool: wildcard.pool, model }
  }
  const find = (model: string): Match | ModelNotFound => {
    let found = cache.get(model)
    if (found === undefined) {
      found = lookup(model)
      // Bounded: only names that matched are cached, and a typo storm cannot grow it without end.
      if (found !== undefined && cache.size < 10_000) cache.set(model, found)
    }
    return found ?? new ModelNotFound({ model, known })
  }
  return {
    find,
    match: (model) => {
      const found = find(model)
      return found instanceof ModelNotFound ? Effect.fail(found) : Effect.succeed(found)
    },
    pool: (id) => byId.get(id),
    models: [
      ...[...exact.entries()].map(([id, pool]) => ({ id, pool: pool.id })),
      // An alias shadowed by an exact name is never routed, so it is not advertised (no duplicate id).
      ...[...aliases.entries()].filter(([id]) => !exact.has(id)).map(([id, a]) => ({ id, pool: a.pool.id }))
    ]
  }
}

/** A matcher over the pools of the {@link Topology}. */
export const layer = Layer.effect(
  Matcher,
  Effect.map(Topology, (topology) => make(topology.pools.values()))
)
