/**
 * The gateway server: the HTTP gateway on Node's http server, with the router assembled from a
 * config, upstream calls over undici, and tracing. `layer` is everything `sluice serve` runs; it
 * provides `Gateway.Listening` (the bound address) and everything the router is built from.
 */
// The module, not the package's index (see Cli.ts): the index loads every Node service of the package.
import * as HttpClient from "@effect/platform/HttpClient"
import { Scheduling, Config as SluiceConfig, Topology } from "@sluice/core"
import { Console, Effect, Layer, Redacted } from "effect"
import * as Gateway from "./Gateway.js"
import * as Sluice from "./Sluice.js"
import * as Telemetry from "./Telemetry.js"

/** Options beyond the config file. */
export interface Options extends Sluice.Options {
  /** Print the start banner (where it listens, pools, upstreams, a first request). Default true. */
  readonly banner?: boolean
  /** Tracing layer; default {@link Telemetry.layer} (OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set). */
  readonly telemetry?: Layer.Layer<never>
}

/** The start banner: address, pools and upstreams (simulated ones labelled), and a first request. */
export const banner = Effect.gen(function* () {
  const address = yield* Gateway.Listening
  const topology = yield* Topology.Topology
  const simulators = yield* Sluice.Simulators
  const host = address.host === "0.0.0.0" || address.host === "::" ? "127.0.0.1" : address.host
  const base = `http://${host.includes(":") ? `[${host}]` : host}:${address.port}`
  const lines: Array<string> = [`Sluice gateway listening on ${base}  (OpenAI-compatible API at ${base}/v1)`, ""]
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
    `    -d '{"model":"${firstModel}","messages":[{"role":"user","content":"Hello!"}]}'`,
    ""
  )
  yield* Console.log(lines.join("\n"))
})

/**
 * Gateway options from the config. The keys of `server.priorities` are read from the environment
 * together with every other `apiKeyEnv` ({@link SluiceConfig.readEnvironment}); fails with one
 * {@link SluiceConfig.ConfigError} naming every variable that is not set.
 */
export const gatewayOptions = (config: SluiceConfig.ConfigFile) =>
  Layer.effect(
    Gateway.GatewayOptions,
    Effect.gen(function* () {
      const environment = yield* SluiceConfig.readEnvironment(config)
      if (environment.problems.length > 0)
        return yield* new SluiceConfig.ConfigError({ source: "environment", problems: environment.problems })
      const byKey = new Map(environment.priorityKeys.map((entry) => [Redacted.value(entry.apiKey), entry.priority]))
      return {
        maxBodyBytes: config.server.maxBodyBytes,
        ...(byKey.size > 0 ? { priorityOf: (apiKey: string) => byKey.get(apiKey) } : {})
      }
    })
  )

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
 * The whole gateway for a config: listens on `config.server.host:port` until interrupted. Upstream
 * calls go over the providers' own undici pools; the HTTP client of {@link healthClient} serves the
 * `http` health checks only.
 */
export const layer = (config: SluiceConfig.ConfigFile, options: Options = {}) => {
  const routing = Sluice.layer(config, options).pipe(Layer.provide(healthClient(config)))
  const serve = Gateway.layer({ host: config.server.host, port: config.server.port }).pipe(
    Layer.provide(gatewayOptions(config))
  )
  const announce = options.banner === false ? Layer.empty : Layer.effectDiscard(banner)
  return announce.pipe(
    Layer.provideMerge(serve),
    Layer.provideMerge(routing),
    // Every fiber of the gateway on one scheduler: see `Scheduling`.
    Layer.provide(Layer.merge(options.telemetry ?? Telemetry.layer, Scheduling.layer))
  )
}
