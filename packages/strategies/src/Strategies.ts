/**
 * The strategy registry: one `Strategy` service that serves each pool with the strategy its config
 * names (`pools[].strategy`), from the built-ins and any custom strategies registered in code.
 */
import { Config, StateStore, Strategy, Topology } from "@sluice/core"
import { Effect, Layer } from "effect"
import * as ConsistentHash from "./ConsistentHash.js"
import * as Cost from "./Cost.js"
import * as Headroom from "./Headroom.js"
import * as Latency from "./Latency.js"
import * as LeastConnections from "./LeastConnections.js"
import * as LeastTokens from "./LeastTokens.js"
import * as P2C from "./P2C.js"
import * as Priority from "./Priority.js"
import * as Random from "./Random.js"
import * as RoundRobin from "./RoundRobin.js"
import * as Weighted from "./Weighted.js"

/**
 * The built-in strategies by name: round-robin, weighted, random, priority, least-connections,
 * latency, p2c, least-tokens, cost, headroom, consistent-hash.
 */
export const builtins: Readonly<Record<string, Effect.Effect<Strategy.Service, never, StateStore.StateStore>>> = {
  [RoundRobin.name]: RoundRobin.make,
  [Weighted.name]: Weighted.make,
  [Random.name]: Random.make,
  [Priority.name]: Priority.make,
  [LeastConnections.name]: LeastConnections.make,
  [Latency.name]: Latency.make,
  [P2C.name]: P2C.make,
  [LeastTokens.name]: LeastTokens.make,
  [Cost.name]: Cost.make,
  [Headroom.name]: Headroom.make,
  [ConsistentHash.name]: ConsistentHash.make
}

/** What a built-in strategy needs of a pool that names it, as `ConfigError`-ready problems. */
const requirements: Readonly<Record<string, (pool: Topology.Pool) => ReadonlyArray<string>>> = {
  [Cost.name]: Cost.problems
}

/** The names of the built-in strategies, in the order error messages list them. */
export const names: ReadonlyArray<string> = Object.keys(builtins)

/**
 * Builds the dispatching strategy for the pools of the `Topology`. `custom` strategies are added
 * by name and win over a built-in of the same name. Fails with a `Config.ConfigError` (source
 * `config`) naming `pools.<id>.strategy` and the known names for every pool that names an unknown
 * strategy, and what a pool lacks for the strategy it names (`cost` needs `pricing` on every
 * upstream), so a mistake stops the gateway at start rather than at the first request.
 */
export const make = (
  custom: Readonly<Record<string, Strategy.Service>> = {}
): Effect.Effect<Strategy.Service, Config.ConfigError, Topology.Topology | StateStore.StateStore> =>
  Effect.gen(function* () {
    const topology = yield* Topology.Topology
    const known = [...new Set([...names, ...Object.keys(custom)])]
    const problems = Strategy.unknownNames(topology.pools.values(), known)
    for (const pool of topology.pools.values())
      if (custom[pool.strategy] === undefined) problems.push(...(requirements[pool.strategy]?.(pool) ?? []))
    if (problems.length > 0) return yield* new Config.ConfigError({ source: "config", problems })
    const strategies: Record<string, Strategy.Service> = {}
    for (const [strategyName, build] of Object.entries(builtins)) {
      strategies[strategyName] = yield* build
    }
    Object.assign(strategies, custom)
    // Every pool's name was checked above; the fallback only serves a pool that is not in the topology.
    return Strategy.byName(strategies, strategies[RoundRobin.name] ?? Strategy.first, topology.pools.values())
  })

/**
 * The `Strategy` layer that dispatches per pool on `pool.strategy` (see {@link make}). Requires the
 * `Topology` and a `StateStore`; fails to build with a `Config.ConfigError` on an unknown strategy
 * name.
 *
 * @example
 * ```ts
 * Strategies.layer({ cheapest: Strategy.make("cheapest", pickCheapest) })
 * ```
 */
export const layer = (
  custom: Readonly<Record<string, Strategy.Service>> = {}
): Layer.Layer<Strategy.Strategy, Config.ConfigError, Topology.Topology | StateStore.StateStore> =>
  Layer.effect(Strategy.Strategy, make(custom))
