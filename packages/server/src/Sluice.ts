/**
 * Assembles the whole pipeline from a config file: simulated upstreams (started in-process when the
 * config asks for them), topology, matcher, tiktoken counter, strategies by name, providers, state
 * store and the router. The server and in-process users share this one assembly.
 */
import type { Provider, Strategy } from "@sluice/core"
import {
  Capabilities,
  CircuitBreaker,
  Config as SluiceConfig,
  Guard,
  Health,
  Matcher,
  RateLimiter,
  Router,
  StateStore,
  TokenCounter,
  Topology
} from "@sluice/core"
import { Providers, Simulator } from "@sluice/providers"
import { Strategies } from "@sluice/strategies"
import { Context, Effect, Either, Layer } from "effect"

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
   * upstreams of that `provider:` use it. `ConfigFile` accepts the kinds in `Providers.kinds`; for a
   * config naming a new kind, load it with that kind too
   * (`ConfigFile.load(path, { providers: [...Providers.kinds, { name: "acme", needsBaseUrl: true }] })`).
   */
  readonly providers?: Readonly<Record<string, Provider.Service>>
}

/**
 * Starts a simulator for every `simulated` upstream that has no `baseUrl`, set up by its `simulate:`
 * block. Fails with a `ConfigError` listing every bad setting by path (a config decoded without the
 * provider kinds was not checked), or a `SimulatorError` when one cannot start.
 */
export const startSimulators = (config: SluiceConfig.ConfigFile) =>
  Effect.gen(function* () {
    const wanted = config.upstreams.flatMap((upstream, index) =>
      upstream.provider === Providers.simulated.name && upstream.baseUrl === undefined ? [{ upstream, index }] : []
    )
    const settings = wanted.map(({ upstream, index }) =>
      SluiceConfig.decodeProviderOptions(Providers.simulated.options, upstream, index)
    )
    const problems = settings.flatMap((decoded) => (Either.isLeft(decoded) ? decoded.left : []))
    if (problems.length > 0) return yield* new SluiceConfig.ConfigError({ source: "config", problems })
    return yield* Effect.forEach(wanted, ({ upstream }, i) =>
      Effect.map(
        Simulator.start({ name: upstream.id, ...Either.getOrUndefined(settings[i]!) }),
        (simulator): RunningSimulator => ({ upstream: upstream.id, url: simulator.url, simulator })
      )
    )
  })

/** Where each simulator dialect's API lives below its URL, as its provider expects its `baseUrl`. */
const API_PREFIX: Readonly<Record<Simulator.Dialect, string>> = {
  openai: "/v1",
  anthropic: "/v1",
  gemini: "/v1beta",
  ollama: ""
}

const dialectOf = (running: RunningSimulator): Simulator.Dialect => running.simulator.options().dialect ?? "openai"

/** Simulators and topology for a config. */
export const layerTopology = (config: SluiceConfig.ConfigFile) =>
  Layer.unwrapScoped(
    Effect.gen(function* () {
      const simulators = yield* startSimulators(config)
      const baseUrls = new Map(simulators.map((s) => [s.upstream, s.url + API_PREFIX[dialectOf(s)]]))
      // A simulator of another provider's API is called as that provider (its dialect names the kind).
      const callAs = new Map(
        simulators.flatMap((s) => {
          const dialect = dialectOf(s)
          return dialect === "openai" ? [] : [[s.upstream, dialect] as const]
        })
      )
      return Layer.merge(
        Layer.succeed(Simulators, simulators),
        Topology.layer(config, { baseUrls, callAs, providers: Providers.kinds })
      )
    })
  )

/**
 * What every config shares, for as long as the process runs: the providers (their connection pools),
 * the token counter, the state store, and the rate limiter and circuit breakers over it — so a
 * config reload keeps connections, encoders and the state of upstreams (budgets, breakers, health,
 * sticky sessions, learned holds), and requests waiting for capacity hear of releases made by
 * requests of either config.
 */
export const layerShared = (options: Options = {}) =>
  Layer.mergeAll(RateLimiter.layer, CircuitBreaker.layer).pipe(
    Layer.provideMerge(
      Layer.mergeAll(Providers.layer(options.providers ?? {}), TokenCounter.layer, StateStore.layerMemory)
    )
  )

/**
 * The router of one config and the stages built from its pools and upstreams (matcher, strategies,
 * health checks and the guards), over the shared services of {@link layerShared}. Its health checks
 * and simulators stop when the layer closes.
 */
export const layerRouting = (config: SluiceConfig.ConfigFile, options: Options = {}) => {
  const topology = layerTopology(config)
  // The same guards, in the same order, as `Resilience.layer`; the limiter and breakers are shared.
  const guards = Guard.layer(Capabilities.guard, Health.guard, CircuitBreaker.guard, RateLimiter.guard).pipe(
    Layer.provideMerge(Health.layer)
  )
  const stages = Layer.mergeAll(Matcher.layer, Strategies.layer(options.strategies ?? {}), guards)
  return Router.layer.pipe(Layer.provideMerge(stages), Layer.provideMerge(topology))
}

/**
 * The router and everything it needs, from a config. Upstream calls go over the providers' own
 * undici pools; the `HttpClient` it requires is for the health checks (the server provides
 * `NodeHttpClient.layerUndici`).
 */
export const layer = (config: SluiceConfig.ConfigFile, options: Options = {}) =>
  layerRouting(config, options).pipe(Layer.provideMerge(layerShared(options)))
