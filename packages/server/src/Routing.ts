/**
 * The running config and its router, replaceable without a restart.
 *
 * Each config is built into a {@link Generation}: its topology, router, stages and client access
 * rules, over services every generation shares (providers, token counter, state store; see
 * `Sluice.layerShared`). Replacing the config builds the new generation first — a config that does
 * not build is refused with its problems, and the running one stays — then swaps it in one
 * assignment: new requests use it at once, requests and streams in flight finish on the one they
 * started on, which closes (its health checks and simulators stop) once the last of them ends.
 * Upstream state lives in the shared store under the upstream's id, so budgets used, breakers,
 * health, sticky sessions and learned holds of upstreams that remain carry over.
 *
 * The `Router` this module provides is a thin proxy to the current generation's router that counts
 * what is in flight on each generation.
 */
import type { Provider } from "@sluice/core"
import {
  CircuitBreaker,
  Config as SluiceConfig,
  Health,
  Matcher,
  RateLimiter,
  Router,
  StateStore,
  TokenCounter,
  Topology
} from "@sluice/core"
import type * as HttpClient from "@effect/platform/HttpClient"
import { Cause, Context, Effect, Exit, Layer, Runtime, Scope } from "effect"
import * as Access from "./Access.js"
import * as Sluice from "./Sluice.js"

/** One config, built. */
export interface Generation {
  /** 1 for the config the gateway started with, then one more per replacement. */
  readonly number: number
  readonly config: SluiceConfig.ConfigFile
  readonly router: Router.Service
  readonly topology: Topology.Service
  readonly matcher: Matcher.Service
  readonly breaker: CircuitBreaker.Service
  readonly health: Health.Service
  readonly limiter: RateLimiter.Service
  readonly simulators: ReadonlyArray<Sluice.RunningSimulator>
  readonly access: Access.Service
  /** Requests and streams in flight on this generation. */
  readonly inFlight: () => number
}

/** The running config. */
export interface Service {
  /** The generation new requests use. */
  readonly current: () => Generation
  /**
   * Builds `config` and swaps it in; fails with a `ConfigError` listing every problem (the running
   * config stays). `server.host` / `server.port` are those the gateway listens on: changing them
   * needs a restart, and the config's own are ignored here.
   */
  readonly replace: (config: SluiceConfig.ConfigFile) => Effect.Effect<Generation, SluiceConfig.ConfigError>
  /**
   * {@link replace} with the config `f` makes from the running one, both in one step: no other
   * change runs in between (an admin action edits the config this way).
   */
  readonly update: <E>(
    f: (running: SluiceConfig.ConfigFile) => Effect.Effect<SluiceConfig.ConfigFile, E>
  ) => Effect.Effect<Generation, E | SluiceConfig.ConfigError>
  /**
   * Calls `f` with each generation swapped in from now on, as it is swapped in, until the scope
   * closes: how the parts of the gateway built once (the audit sink, the loggers) follow a reload.
   * `f` is synchronous and must not throw.
   */
  readonly watch: (f: (generation: Generation) => void) => Effect.Effect<void, never, Scope.Scope>
  /** Whether some pool has an upstream that can take requests now (enabled, healthy, breaker not open). */
  readonly readiness: Effect.Effect<{ readonly ready: boolean; readonly pools: Record<string, ReadonlyArray<string>> }>
}

/** The running config. */
export class Routing extends Context.Tag("@sluice/server/Routing")<Routing, Service>() {}

/** What a generation is built from. */
type Shared =
  | StateStore.StateStore
  | Provider.Provider
  | TokenCounter.TokenCounter
  | RateLimiter.RateLimiter
  | CircuitBreaker.CircuitBreaker

/** A generation's own state: what is in flight, and whether it was replaced. */
interface Slot {
  readonly generation: Generation
  readonly scope: Scope.CloseableScope
}

/** Builds one config in its own scope; the scope is closed again when the build fails. */
const build = (
  config: SluiceConfig.ConfigFile,
  options: Sluice.Options,
  shared: Context.Context<Shared>,
  health: (config: SluiceConfig.ConfigFile) => Layer.Layer<HttpClient.HttpClient>,
  number: number
): Effect.Effect<{ generation: Generation; scope: Scope.CloseableScope }, SluiceConfig.ConfigError> =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const built = yield* Layer.buildWithScope(
      Sluice.layerRouting(config, options).pipe(Layer.provide(health(config))),
      scope
    ).pipe(
      Effect.provide(shared),
      Effect.mapError((error) =>
        error._tag === "ConfigError"
          ? error
          : new SluiceConfig.ConfigError({ source: "config", problems: [`(simulators): ${error.message}`] })
      ),
      Effect.tapErrorCause(() => Scope.close(scope, Exit.void))
    )
    const environment = yield* SluiceConfig.readEnvironment(config)
    const topology = Context.get(built, Topology.Topology)
    const matcher = Context.get(built, Matcher.Matcher)
    const access = Access.make({
      server: config.server,
      environment,
      local: Context.get(shared, StateStore.StateStore).local,
      poolOf: (model) => {
        const match = matcher.find(model)
        return "pool" in match ? match.pool.id : undefined
      },
      upstreams: topology.upstreams,
      pools: topology.pools
    })
    const router = Context.get(built, Router.Router)
    const generation: Generation = {
      number,
      config,
      router,
      topology,
      matcher,
      breaker: Context.get(shared, CircuitBreaker.CircuitBreaker),
      health: Context.get(built, Health.Health),
      limiter: Context.get(shared, RateLimiter.RateLimiter),
      simulators: Context.get(built, Sluice.Simulators),
      access,
      inFlight: () => router.inFlight?.() ?? 0
    }
    return { generation, scope }
  })

/**
 * The router that sends each request to the current generation. Each generation's router counts its
 * own requests in flight (a stream until its release), so a replaced one knows when it is idle; this
 * adds nothing per request.
 */
const proxy = (current: () => Slot): Router.Service =>
  Router.Router.of({
    chat: (request, options) => current().generation.router.chat(request, options),
    embeddings: (request, options) => current().generation.router.embeddings(request, options),
    chatStream: (request, options) => current().generation.router.chatStream(request, options),
    forward: (request, options) => current().generation.router.forward(request, options),
    forwardStream: (request, options) => current().generation.router.forwardStream(request, options),
    get models() {
      return current().generation.router.models
    },
    model: (id) => current().generation.router.model?.(id),
    countTokens: (request) =>
      current().generation.router.countTokens?.(request) ??
      Effect.succeed(TokenCounter.estimateAs(request, request.model, "estimate")),
    queueDepth: (pool) => current().generation.router.queueDepth?.(pool) ?? 0,
    inFlight: () => current().generation.router.inFlight?.() ?? 0,
    latency: (upstreamId) => current().generation.router.latency?.(upstreamId) ?? {},
    get idle() {
      return current().generation.router.idle ?? Effect.void
    }
  })

/**
 * The routing of `config`, replaceable: provides {@link Routing}, the `Router` (the proxy), and the
 * first generation's stages and shared services (as the layers of `Sluice.layer` do, for code that
 * reads them). `health` makes the `HttpClient` of a config's health checks.
 */
export const layer = (
  config: SluiceConfig.ConfigFile,
  options: Sluice.Options,
  health: (config: SluiceConfig.ConfigFile) => Layer.Layer<HttpClient.HttpClient>
) => {
  const routing = Layer.scopedContext(
    Effect.gen(function* () {
      const shared = yield* Effect.context<Shared>()
      const runtime = yield* Effect.runtime<never>()
      const close = (slot: Slot) =>
        Scope.close(slot.scope, Exit.void).pipe(
          Effect.catchAllCause((cause) =>
            Cause.isInterruptedOnly(cause) ? Effect.void : Effect.logError("closing a replaced config failed", cause)
          )
        )
      /** Closes a replaced generation once its router has no request in flight (a stream: until released). */
      const retire = (slot: Slot) =>
        void Runtime.runFork(runtime)(Effect.zipRight(slot.generation.router.idle ?? Effect.void, close(slot)))
      let number = 1
      const make = (config: SluiceConfig.ConfigFile): Effect.Effect<Slot, SluiceConfig.ConfigError> =>
        build(config, options, shared, health, number)
      let slot = yield* make(config)
      const first = slot
      // Whatever generation is running when the gateway stops closes with it.
      yield* Effect.addFinalizer(() => Scope.close(slot.scope, Exit.void))
      const lock = yield* Effect.makeSemaphore(1)
      const listen = { host: config.server.host, port: config.server.port }
      const watchers = new Set<(generation: Generation) => void>()
      const watch: Service["watch"] = (f) =>
        Effect.acquireRelease(
          Effect.sync(() => watchers.add(f)),
          () => Effect.sync(() => watchers.delete(f))
        )

      const swap = Effect.fnUntraced(function* (next: SluiceConfig.ConfigFile) {
        const pinned = { ...next, server: { ...next.server, ...listen } }
        const exposed = Access.exposureProblem(pinned.server)
        if (exposed !== undefined) return yield* new SluiceConfig.ConfigError({ source: "config", problems: [exposed] })
        number++
        const built = yield* make(pinned)
        const old = slot
        slot = built
        retire(old)
        for (const f of watchers) f(built.generation)
        yield* Effect.logInfo(`config replaced: generation ${built.generation.number} serves new requests`)
        return built.generation
      })
      const update: Service["update"] = (f) =>
        lock
          .withPermits(1)(Effect.flatMap(f(slot.generation.config), swap))
          .pipe(Effect.withSpan("Routing.update"))
      const replace: Service["replace"] = (next) => update(() => Effect.succeed(next))

      const readiness = Effect.gen(function* () {
        const generation = slot.generation
        const pools: Record<string, ReadonlyArray<string>> = {}
        let ready = false
        for (const pool of generation.topology.pools.values()) {
          const usable: Array<string> = []
          for (const upstream of pool.upstreams) {
            if (!upstream.enabled) continue
            const health = yield* generation.health.status(upstream.id)
            const breaker = yield* generation.breaker.snapshot(upstream)
            if (health.healthy && breaker.state !== "open") usable.push(upstream.id)
          }
          pools[pool.id] = usable
          if (usable.length > 0) ready = true
        }
        return { ready, pools }
      })

      const service = Routing.of({ current: () => slot.generation, replace, update, watch, readiness })
      const g = first.generation
      return Context.make(Routing, service).pipe(
        Context.add(
          Router.Router,
          proxy(() => slot)
        ),
        Context.add(Topology.Topology, g.topology),
        Context.add(Matcher.Matcher, g.matcher),
        Context.add(CircuitBreaker.CircuitBreaker, g.breaker),
        Context.add(Health.Health, g.health),
        Context.add(RateLimiter.RateLimiter, g.limiter),
        Context.add(Sluice.Simulators, g.simulators)
      )
    })
  )
  return routing.pipe(Layer.provideMerge(Sluice.layerShared(options)))
}
