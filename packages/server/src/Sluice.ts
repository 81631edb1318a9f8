/**
 * Assembles the whole pipeline from a config file: simulated upstreams (started in-process when the
 * config asks for them), topology, matcher, tiktoken counter, strategies by name, providers, state
 * store and the router. The server and in-process users share this one assembly.
 */
import type { Config as SluiceConfig, Provider, Strategy } from "@sluice/core"
import { Matcher, Resilience, Router, StateStore, TokenCounter, Topology } from "@sluice/core"
import { Providers, Simulator } from "@sluice/providers"
import { Strategies } from "@sluice/strategies"
import { Context, Effect, Layer } from "effect"

/** An in-process simulated upstream the config started. */
export interface RunningSimulator {
  readonly upstream: string
  readonly url: string
  readonly simulator: Simulator.Simulator
}

/** The simulated upstreams started for a config (empty when it names none). */
export class Simulators extends Context.Tag("@sluice/server/Simulators")<
  Simulators,
  ReadonlyArray<RunningSimulator>
>() {}

/** Extension points for code that assembles Sluice from a config. */
export interface Options {
  /** Custom strategies by name (pools select them with `strategy: <name>`). */
  readonly strategies?: Readonly<Record<string, Strategy.Service>>
  /**
   * Providers by kind, replacing the built-in one for that kind (`openai`, `groq`, `simulated`...):
   * upstreams of that `provider:` use it. A config file accepts only the built-in kind names, so a
   * provider for a new kind is reached in code (`Topology.upstream({ provider: ... })`), not by name.
   */
  readonly providers?: Readonly<Record<string, Provider.Service>>
}

/** Starts a simulator for every `simulated` upstream that has no `baseUrl`. */
export const startSimulators = (config: SluiceConfig.ConfigFile) =>
  Effect.forEach(
    config.upstreams.filter((u) => u.provider === "simulated" && u.baseUrl === undefined),
    (u) =>
      Effect.map(Simulator.start({ name: u.id, ...u.simulate }), (simulator): RunningSimulator => ({
        upstream: u.id,
        url: simulator.url,
        simulator
      }))
  )

/** Simulators and topology for a config. */
export const layerTopology = (config: SluiceConfig.ConfigFile) =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      const simulators = yield* startSimulators(config)
      const baseUrls = new Map(simulators.map((s) => [s.upstream, `${s.url}/v1`]))
      return Layer.merge(Layer.succeed(Simulators, simulators), Topology.layer(config, baseUrls))
    })
  )

/**
 * The router and everything it needs, from a config. Upstream calls go over the providers' own
 * undici pools; the `HttpClient` it requires is for the health checks (the server provides
 * `NodeHttpClient.layerUndici`).
 */
export const layer = (config: SluiceConfig.ConfigFile, options: Options = {}) => {
  const topology = layerTopology(config)
  const providers = Providers.layer(options.providers ?? {})
  // The resilience stages are reachable by the admin API too (breaker reset, health status, budgets).
  const stages = Layer.mergeAll(
    Matcher.layer,
    TokenCounter.layer,
    Strategies.layer(options.strategies ?? {}),
    Resilience.layer
  ).pipe(Layer.provideMerge(providers))
  return Router.layer.pipe(
    Layer.provideMerge(stages),
    Layer.provideMerge(Layer.merge(topology, StateStore.layerMemory))
  )
}
