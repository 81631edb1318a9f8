/**
 * The gateway server: the HTTP gateway on Node's http server, with the router assembled from a
 * config, upstream calls over undici, and tracing. `layer` is everything `sluice serve` runs; it
 * provides `Gateway.Listening` (the bound address) and everything the router is built from.
 */
// The module, not the package's index (see Cli.ts): the index loads every Node service of the package.
import * as HttpClient from "@effect/platform/HttpClient"
import type { Decision } from "@sluice/core"
import { Scheduling, Config as SluiceConfig } from "@sluice/core"
import { Effect, Layer } from "effect"
import { networkInterfaces } from "node:os"
import { Providers } from "@sluice/providers"
import { Strategies } from "@sluice/strategies"
import * as Access from "./Access.js"
import * as ConfigFile from "./ConfigFile.js"
import * as Gateway from "./Gateway.js"
import type * as Audit from "./internal/audit.js"
import * as Logging from "./Logging.js"
import * as Observe from "./Observe.js"
import * as Reload from "./Reload.js"
import * as Routing from "./Routing.js"
import type * as Sluice from "./Sluice.js"
import * as Telemetry from "./Telemetry.js"

/** Options beyond the config file. */
export interface Options extends Sluice.Options {
  /** Print the start banner (where it listens, pools, upstreams, a first request). Default true. */
  readonly banner?: boolean
  /**
   * Tracing layer; default {@link Telemetry.layerConfig} with `server.tracing` (the standard `OTEL_*`
   * variables: OTLP when an endpoint is set).
   */
  readonly telemetry?: Layer.Layer<never>
  /**
   * Logging layer, or a function making it from the log settings in force (which follow reloads);
   * default {@link Logging.layer} with `server.log` (and `LOG_LEVEL`). Tests that collect log lines
   * pass their own logger.
   */
  readonly logging?: Layer.Layer<never> | ((live: Logging.Live) => Layer.Layer<never>)
  /** Overrides `server.drainMs` (tests stop at once with 0). */
  readonly drainMs?: number
  /** The file to reload the config from on `SIGHUP` (and on changes with `watch`); no reloads without. */
  readonly reload?: { readonly path: string } & Reload.Options
}

/** The addresses a host really listens on: every interface's for a wildcard host. */
export const addresses = (host: string): ReadonlyArray<string> => {
  if (host !== "0.0.0.0" && host !== "::") return [host]
  const all = Object.values(networkInterfaces()).flatMap((list) => list ?? [])
  return all.filter((a) => host === "::" || a.family === "IPv4").map((a) => a.address)
}

const urlOf = (host: string, port: number) => `http://${host.includes(":") ? `[${host}]` : host}:${port}`

/**
 * The start banner: the addresses it listens on, whether clients must authenticate, pools and
 * upstreams (simulated ones labelled), and a first request.
 */
export const banner = Effect.gen(function* () {
  const address = yield* Gateway.Listening
  const routing = yield* Routing.Routing
  const { topology, simulators, config } = routing.current()
  const urls = addresses(address.host).map((host) => urlOf(host, address.port))
  const base = urls.find((url) => url.includes("127.0.0.1")) ?? urls[0] ?? urlOf(address.host, address.port)
  const keys = config.server.auth.keys.length
  const lines: Array<string> = [
    `Sluice gateway listening on ${urls.join(", ")}  (OpenAI-compatible API at ${base}/v1)`,
    keys > 0
      ? `Clients must authenticate: ${keys} client key${keys === 1 ? "" : "s"} (Authorization: Bearer <key>).`
      : "Open: clients need no key (no server.auth.keys).",
    config.server.admin === undefined
      ? "Admin API off (set server.admin.tokenEnv to turn it on)."
      : `Admin API at ${base}/admin (token from ${config.server.admin.tokenEnv}); OpenAPI at ${base}/admin/openapi.json; dashboard at ${base}/dashboard (sign in with the token); metrics at ${base}/metrics (with the token)`,
    ""
  ]
  lines.push("Pools:")
  for (const pool of topology.pools.values()) {
    const fallback = pool.fallback === undefined ? "" : `, fallback -> ${pool.fallback}`
    lines.push(`  ${pool.id}: models ${pool.models.join(", ")} (strategy ${pool.strategy}${fallback})`)
    for (const u of pool.upstreams) {
      const sim = simulators.find((s) => s.upstream === u.id)
      const where = sim !== undefined ? `SIMULATED in-process at ${sim.url}` : u.baseUrl
      lines.push(`    - ${u.id} [${u.provider}] ${where}${u.enabled ? "" : " (disabled)"}`)
    }
  }
  const firstModel =
    topology.pools
      .values()
      .next()
      .value?.models.find((m) => !m.includes("*")) ?? "gpt-4o-mini"
  lines.push(
    "",
    "Try it:",
    `  curl ${base}/v1/chat/completions -H 'content-type: application/json' \\`,
    ...(keys > 0 ? ["    -H 'authorization: Bearer <your key>' \\"] : []),
    `    -d '{"model":"${firstModel}","messages":[{"role":"user","content":"Hello!"}]}'`,
    ""
  )
  yield* Effect.logInfo(lines.join("\n"))
})

/**
 * The access rules of the running config, for the gateway: each call goes to the current
 * generation's rules (so a reload changes keys and limits at once).
 */
const currentAccess = (routing: Routing.Service): Access.Service => ({
  get required() {
    return routing.current().access.required
  },
  authenticate: (headers) => routing.current().access.authenticate(headers),
  admit: (client, model, now, promptTokens, maxOutputTokens) =>
    routing.current().access.admit(client, model, now, promptTokens, maxOutputTokens),
  priority: (client, headers) => routing.current().access.priority(client, headers),
  record: (client, decision, now) => routing.current().access.record(client, decision, now),
  release: (client, now) => routing.current().access.release(client, now),
  cors: (origin) => routing.current().access.cors(origin),
  keys: (now) => routing.current().access.keys(now)
})

/**
 * The admin API's handler when `server.admin` names its token's variable (the module is loaded only
 * then); fails with a `ConfigError` when the variable is not set.
 */
const adminHandler = (config: SluiceConfig.ConfigFile, options: Options) =>
  Effect.gen(function* () {
    if (config.server.admin === undefined) return undefined
    const environment = yield* SluiceConfig.readEnvironment(config)
    const token = environment.adminToken
    if (token === undefined)
      return yield* new SluiceConfig.ConfigError({
        source: "environment",
        problems: environment.problems.filter((p) => p.startsWith("server.admin"))
      })
    const Admin = yield* Effect.promise(() => import("./Admin.js"))
    return yield* Admin.make({
      token,
      decode: {
        ...ConfigFile.defaultOptions,
        strategies: [...Strategies.names, ...Object.keys(options.strategies ?? {})],
        ...(options.providers === undefined
          ? {}
          : {
              providers: [
                ...Providers.kinds,
                ...Object.keys(options.providers)
                  .filter((name) => !Providers.kinds.some((k) => k.name === name))
                  .map((name) => ({ name, needsBaseUrl: true }))
              ]
            })
      },
      configPath: options.reload?.path
    })
  })

/**
 * Gateway options from the config, the running {@link Routing.Routing} and {@link Observe.Observe}
 * (metrics, audit log), with the admin API when configured.
 */
export const gatewayOptions = (
  config: SluiceConfig.ConfigFile,
  options: Options = {},
  live: Logging.Live = new Logging.Live(config.server.log)
) =>
  Layer.scoped(
    Gateway.GatewayOptions,
    Effect.gen(function* () {
      const routing = yield* Routing.Routing
      const observe = yield* Observe.Observe
      const accessLog = yield* Logging.accessLog(live)
      // The log settings follow reloads (the audit log's follow them in `Observe`).
      yield* routing.watch((generation) => live.set(generation.config.server.log))
      const admin = yield* adminHandler(config, options)
      const access = currentAccess(routing)
      const token =
        config.server.admin === undefined ? undefined : (yield* SluiceConfig.readEnvironment(config)).adminToken
      return {
        maxBodyBytes: config.server.maxBodyBytes,
        access,
        readiness: routing.readiness,
        observe: (decision: Decision.Decision, key: string | undefined, status: number, content?: Audit.Content) => {
          // The audit file's thread writes the JSON access line to standard output when it can,
          // off the event loop; otherwise (another format or console, no audit file) it is written here.
          if (!observe.record(decision, key, content, accessLog.jsonToStdout() ? status : -1))
            accessLog.write(decision, key, status)
        },
        get observeContent() {
          return routing.current().config.server.audit.content
        },
        // The address listened on stays for the process's life: a reload cannot change it.
        metrics: yield* Observe.metricsHandler(Observe.metricsGuard(token, config.server.host, access)),
        ...(admin !== undefined && token !== undefined
          ? { admin, dashboard: yield* (yield* Effect.promise(() => import("./Dashboard.js"))).make(token) }
          : {})
      }
    })
  )

/**
 * Refuses an open gateway on an address other machines can reach: without client keys, binding
 * anything but loopback needs `server.auth.open: true`.
 */
export const checkExposure = (config: SluiceConfig.ConfigFile): Effect.Effect<void, SluiceConfig.ConfigError> => {
  const problem = Access.exposureProblem(config.server)
  return problem === undefined
    ? Effect.void
    : Effect.fail(new SluiceConfig.ConfigError({ source: "config", problems: [problem] }))
}

/**
 * The HTTP client of `http` health checks: `@effect/platform-node`'s over undici, loaded only when
 * some upstream has such a check (loading it costs the gateway ~10 MB of memory). Without one,
 * nothing calls the client; a call would be a bug.
 */
const healthClient = (config: SluiceConfig.ConfigFile): Layer.Layer<HttpClient.HttpClient> =>
  config.upstreams.some((u) => u.healthCheck?.type === "http")
    ? Layer.unwrapEffect(
        Effect.map(
          Effect.promise(() => import("@effect/platform-node/NodeHttpClient")),
          (NodeHttpClient) => NodeHttpClient.layerUndici
        )
      )
    : Layer.succeed(
        HttpClient.HttpClient,
        HttpClient.make((request) => Effect.die(`no upstream has an http health check, yet ${request.url} was asked`))
      )

/**
 * The whole gateway for a config: listens on `config.server.host:port` until interrupted, then
 * drains for up to `server.drainMs`. Upstream calls go over the providers' own undici pools; the
 * HTTP client of {@link healthClient} serves the `http` health checks only. Fails with a
 * `ConfigError` when the config would serve anyone on a reachable address without saying so
 * ({@link checkExposure}).
 */
export const layer = (config: SluiceConfig.ConfigFile, options: Options = {}) => {
  const routing = Routing.layer(config, options, healthClient)
  const live = new Logging.Live(config.server.log)
  const serve = Gateway.layer(
    { host: config.server.host, port: config.server.port },
    { drainMs: options.drainMs ?? config.server.drainMs }
  ).pipe(Layer.provide(gatewayOptions(config, options, live)))
  // Kept decisions are read only by the admin API: without it, keeping them would only cost memory
  // (each would outlive its request long enough to be promoted to the old generation).
  const observe = Observe.layer(
    config.server.audit,
    config.server.admin === undefined ? (audit) => ({ ...audit, keep: 0 }) : undefined
  )
  const announce = options.banner === false ? Layer.empty : Layer.effectDiscard(banner)
  const reload = options.reload === undefined ? Layer.empty : Reload.layer(options.reload.path, options.reload)
  const logging =
    typeof options.logging === "function" ? options.logging(live) : (options.logging ?? Logging.layer(live))
  // Tracing logs too (where it exports, a collector that refuses): through the same loggers, at the
  // same level, not Effect's default.
  const telemetry = (options.telemetry ?? Telemetry.layerConfig(config.server.tracing)).pipe(Layer.provide(logging))
  return Layer.merge(announce, reload).pipe(
    Layer.provideMerge(serve),
    Layer.provideMerge(observe),
    Layer.provideMerge(routing),
    Layer.provide(Layer.effectDiscard(checkExposure(config))),
    // Every fiber of the gateway on one scheduler: see `Scheduling`.
    Layer.provide(Layer.mergeAll(telemetry, Scheduling.layer, logging))
  )
}
