/**
 * The admin API (`/admin`, described in `AdminApi.ts`): config get / validate / replace / reload,
 * upstream status, breaker reset, disable / enable, add / remove, health check now, client keys,
 * models, the audit log of decisions (listed with filters, or live as server-sent events), the last
 * hour's per-minute totals and the OpenAPI document — behind its own token, compared in constant time.
 *
 * It runs off the request path: the gateway hands it requests under `/admin` only, and the server
 * loads this module only when `server.admin` is configured. Every change to the topology or the keys
 * is a change of the running config, made and validated as a whole and swapped in by
 * `Routing.update` — so what the admin API changed is what `GET /admin/config` shows, and a reload
 * from the file replaces it.
 */
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as OpenApi from "@effect/platform/OpenApi"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import type { Router, Topology } from "@sluice/core"
import { Config as SluiceConfig } from "@sluice/core"
import type { Scope } from "effect"
import { Clock, Effect, Either, Layer, Redacted, Stream } from "effect"
import * as Access from "./Access.js"
import * as AdminToken from "./internal/adminToken.js"
import { AdminApi, AdminAuth, Conflict, Forbidden, InvalidConfig, NotFound, Unauthorized } from "./AdminApi.js"
import type * as Gateway from "./Gateway.js"
import * as Audit from "./internal/audit.js"
import * as Redaction from "./internal/redaction.js"
import * as Observe from "./Observe.js"
import * as Reload from "./Reload.js"
import * as Routing from "./Routing.js"

/** What the admin API needs beyond the running config. */
export interface Options {
  /** The admin token (`server.admin.tokenEnv`). */
  readonly token: Redacted.Redacted<string>
  /** What configs are checked against (strategy names and provider kinds). */
  readonly decode: SluiceConfig.DecodeOptions
  /** The file the gateway was started from: `POST /admin/config/reload` reads it again. */
  readonly configPath?: string | undefined
}

/** The config as `GET /admin/config` shows it: key digests and upstream header values redacted. */
export const redact = Redaction.redact

const invalid = (error: SluiceConfig.ConfigError) =>
  new InvalidConfig({ message: `invalid configuration: ${error.problems.length} problem(s)`, problems: error.problems })

/**
 * The 400 of a change refused as invalid, logged first as a warning with every problem (as a
 * refused reload from the file is): the operator watching the logs sees what was refused and why.
 */
const refused = (change: string) => (error: SluiceConfig.ConfigError) =>
  Effect.zipRight(
    Effect.logWarning(`admin: ${change} refused, the running config stays: ${error.message}`),
    Effect.fail(invalid(error))
  )

/** A config edited by an admin action, checked as a whole as if loaded from a file. */
const checked = (config: SluiceConfig.ConfigFile, options: Options) =>
  SluiceConfig.decode(config, "admin", options.decode)

/**
 * A config document sent to `PUT` or validate, decoded as at start once its redaction placeholders
 * stand for the running values again; a placeholder with nothing to stand for is one more problem by
 * path (instead of the decoder's complaint about the placeholder itself).
 */
const decodeEdited = (payload: unknown, running: SluiceConfig.ConfigFile, options: Options) =>
  Effect.gen(function* () {
    const { document, unresolved } = Redaction.restore(payload, running)
    const decoded = yield* Effect.either(SluiceConfig.decodeWithEnvironment(document, "admin", options.decode))
    if (unresolved.length === 0) return yield* decoded
    const others = Either.isLeft(decoded)
      ? decoded.left.problems.filter((p) => !unresolved.some((at) => p.startsWith(`${at}:`)))
      : []
    return yield* new SluiceConfig.ConfigError({
      source: "admin",
      problems: [...unresolved.map(Redaction.unresolvedProblem), ...others]
    })
  })

/** An upstream's decayed latency for the status: rounded milliseconds, samples and when last updated. */
const latencyOf = (latency: Router.Latency & { readonly perOutputToken?: Router.Latency["answer"] }) => {
  const shown = (d: NonNullable<Router.Latency["answer"]>, digits = 0) => ({
    ms: round(d.ms, digits),
    samples: d.samples,
    updatedAt: new Date(d.at).toISOString()
  })
  return {
    ...(latency.answer === undefined ? {} : { answer: shown(latency.answer) }),
    ...(latency.firstContent === undefined ? {} : { firstContent: shown(latency.firstContent) }),
    ...(latency.perOutputToken === undefined ? {} : { perOutputToken: shown(latency.perOutputToken, 2) })
  }
}

const round = (n: number, digits: number) => Math.round(n * 10 ** digits) / 10 ** digits

/** What the strategies read of an upstream (see `Live`), for the status; absent when the router shows none. */
const liveOf = (live: Router.LiveStatus | undefined) =>
  live === undefined
    ? {}
    : {
        live: {
          counted: live.counted,
          inFlight: live.inFlight,
          reservedTokens: live.reservedTokens,
          errorRate: round(live.errorRate, 4),
          budgetLeft: round(live.budgetLeft, 4)
        }
      }

/** The decayed latencies of a live view, as `latencyOf` takes them. */
const liveLatency = (live: Router.LiveStatus) => ({
  ...(live.latency === undefined ? {} : { answer: live.latency }),
  ...(live.firstContent === undefined ? {} : { firstContent: live.firstContent }),
  ...(live.perOutputToken === undefined ? {} : { perOutputToken: live.perOutputToken })
})

/** The state of one upstream of a generation. */
const upstreamStatus = (generation: Routing.Generation, upstream: Topology.Upstream) =>
  Effect.gen(function* () {
    const used = yield* generation.limiter.snapshot(upstream)
    const { rpm, tpm } = used.limits
    // What is left this minute, where a limit is set.
    const budget = {
      ...used,
      ...(rpm === undefined ? {} : { requestsLeft: Math.max(0, rpm - used.requestsUsed) }),
      ...(tpm === undefined ? {} : { tokensLeft: Math.max(0, tpm - used.tokensUsed) })
    }
    const live = generation.router.live?.(upstream, yield* Clock.currentTimeMillis)
    const latency = live === undefined ? (generation.router.latency?.(upstream.id) ?? {}) : liveLatency(live)
    return {
      id: upstream.id,
      name: upstream.name,
      provider: upstream.provider,
      pools: [...generation.topology.pools.values()]
        .filter((p) => p.upstreams.some((u) => u.id === upstream.id))
        .map((p) => p.id),
      enabled: upstream.enabled,
      simulated: upstream.simulated,
      health: yield* generation.health.status(upstream.id),
      breaker: yield* generation.breaker.snapshot(upstream),
      budget,
      inFlight: budget.inFlight,
      // Decayed averages (half-life `Router.HALF_LIFE_MS`), absent before the upstream's first answer.
      latency: latencyOf(latency),
      ...liveOf(live)
    }
  })

const upstreamOf = (generation: Routing.Generation, id: string) => {
  const upstream = generation.topology.upstreams.get(id)
  return upstream === undefined
    ? Effect.fail(
        new NotFound({
          message: `no upstream '${id}'; known: ${[...generation.topology.upstreams.keys()].join(", ")}`
        })
      )
    : Effect.succeed(upstream)
}

/** The index of upstream `id` in a config, or the 404. */
const indexOf = (config: SluiceConfig.ConfigFile, id: string) => {
  const index = config.upstreams.findIndex((u) => u.id === id)
  return index === -1
    ? Effect.fail(
        new NotFound({ message: `no upstream '${id}'; known: ${config.upstreams.map((u) => u.id).join(", ")}` })
      )
    : Effect.succeed(index)
}

const applied = (generation: Routing.Generation) => ({ generation: generation.number })

/** The admin token check: 401 without a token, 403 with another one. */
const authLayer = (options: Options) => {
  const check = AdminToken.checker(options.token)
  return Layer.succeed(
    AdminAuth,
    AdminAuth.of({
      bearer: (token) => {
        switch (check(Redacted.value(token))) {
          case "ok":
            return Effect.void
          case "missing":
            return Effect.fail(
              new Unauthorized({ message: "the admin API needs the admin token: send 'Authorization: Bearer <token>'" })
            )
          case "wrong":
            return Effect.fail(new Forbidden({ message: "the token is not the admin token" }))
        }
      }
    })
  )
}

const configGroup = (options: Options) =>
  HttpApiBuilder.group(AdminApi, "config", (handlers) =>
    handlers
      .handle("get", () => Effect.map(Routing.Routing, (routing) => redact(routing.current().config)))
      .handle("validate", ({ payload }) =>
        Effect.gen(function* () {
          const running = (yield* Routing.Routing).current().config
          const decoded = yield* Effect.either(decodeEdited(payload, running, options))
          if (Either.isLeft(decoded)) return { valid: false, problems: decoded.left.problems }
          const exposed = Access.exposureProblem({ ...decoded.right.server, host: running.server.host })
          return exposed === undefined ? { valid: true, problems: [] } : { valid: false, problems: [exposed] }
        })
      )
      .handle("replace", ({ payload }) =>
        Effect.gen(function* () {
          const routing = yield* Routing.Routing
          // Restored against the config it replaces, in the same step as the swap.
          const generation = yield* routing.update((running) => decodeEdited(payload, running, options))
          yield* Effect.logInfo("admin: config replaced")
          return applied(generation)
        }).pipe(Effect.catchTag("ConfigError", refused("config replacement")))
      )
      .handle("reload", () =>
        Effect.gen(function* () {
          if (options.configPath === undefined)
            return yield* new Conflict({
              message: "the gateway was not started from a config file; use PUT /admin/config"
            })
          const generation = yield* Reload.fromFile(options.configPath).pipe(
            Effect.catchTag("ConfigError", refused("reload from the file"))
          )
          yield* Effect.logInfo("admin: config reloaded from its file")
          return applied(generation)
        })
      )
  )

const upstreamsGroup = (options: Options) =>
  HttpApiBuilder.group(AdminApi, "upstreams", (handlers) => {
    const setEnabled = (id: string, enabled: boolean) =>
      Effect.gen(function* () {
        const routing = yield* Routing.Routing
        const generation = yield* routing.update((config) =>
          Effect.flatMap(indexOf(config, id), (index) =>
            checked(
              { ...config, upstreams: config.upstreams.map((u, i) => (i === index ? { ...u, enabled } : u)) },
              options
            )
          )
        )
        yield* Effect.logInfo(`admin: upstream ${id} ${enabled ? "enabled" : "disabled"}`)
        return applied(generation)
      }).pipe(Effect.catchTag("ConfigError", refused(`${enabled ? "enabling" : "disabling"} upstream ${id}`)))
    return handlers
      .handle("status", () =>
        Effect.gen(function* () {
          const generation = (yield* Routing.Routing).current()
          const router = generation.router
          return {
            generation: generation.number,
            pools: [...generation.topology.pools.values()].map((pool) => ({
              id: pool.id,
              models: pool.models,
              strategy: pool.strategy,
              upstreams: pool.upstreams.map((u) => u.id),
              queueDepth: router.queueDepth?.(pool.id) ?? 0
            })),
            upstreams: yield* Effect.forEach(generation.topology.upstreams.values(), (u) =>
              upstreamStatus(generation, u)
            )
          }
        })
      )
      .handle("resetBreaker", ({ path }) =>
        Effect.gen(function* () {
          const generation = (yield* Routing.Routing).current()
          const upstream = yield* upstreamOf(generation, path.id)
          yield* generation.breaker.reset(upstream.id)
          yield* Effect.logInfo(`admin: breaker of ${upstream.id} reset`)
          return yield* upstreamStatus(generation, upstream)
        })
      )
      .handle("disable", ({ path }) => setEnabled(path.id, false))
      .handle("enable", ({ path }) => setEnabled(path.id, true))
      .handle("checkNow", ({ path }) =>
        Effect.gen(function* () {
          const generation = (yield* Routing.Routing).current()
          const upstream = yield* upstreamOf(generation, path.id)
          yield* generation.health.checkNow(upstream.id)
          return yield* upstreamStatus(generation, upstream)
        })
      )
      .handle("add", ({ payload }) =>
        Effect.gen(function* () {
          const routing = yield* Routing.Routing
          const id = payload.upstream.id
          const generation = yield* routing.update((config) =>
            Effect.gen(function* () {
              if (config.upstreams.some((u) => u.id === id))
                return yield* new Conflict({ message: `an upstream '${id}' exists already; remove it first` })
              const unknown = payload.pools.filter((p) => !config.pools.some((pool) => pool.id === p))
              if (unknown.length > 0)
                return yield* new NotFound({
                  message: `no pool ${unknown.map((p) => `'${p}'`).join(", ")}; known: ${config.pools.map((p) => p.id).join(", ")}`
                })
              return yield* checked(
                {
                  ...config,
                  upstreams: [...config.upstreams, payload.upstream],
                  pools: config.pools.map((p) =>
                    payload.pools.includes(p.id) ? { ...p, upstreams: [...p.upstreams, id] } : p
                  )
                },
                options
              )
            })
          )
          yield* Effect.logInfo(`admin: upstream ${id} added to ${payload.pools.join(", ")}`)
          return applied(generation)
        }).pipe(Effect.catchTag("ConfigError", refused(`adding upstream ${payload.upstream.id}`)))
      )
      .handle("remove", ({ path }) =>
        Effect.gen(function* () {
          const routing = yield* Routing.Routing
          const generation = yield* routing.update((config) =>
            Effect.gen(function* () {
              yield* indexOf(config, path.id)
              const emptied = config.pools.filter((p) => p.upstreams.length === 1 && p.upstreams[0] === path.id)
              if (emptied.length > 0)
                return yield* new Conflict({
                  message: `removing '${path.id}' would leave pool ${emptied.map((p) => `'${p.id}'`).join(", ")} without upstreams; add another first`
                })
              return yield* checked(
                {
                  ...config,
                  upstreams: config.upstreams.filter((u) => u.id !== path.id),
                  pools: config.pools.map((p) => ({ ...p, upstreams: p.upstreams.filter((u) => u !== path.id) }))
                },
                options
              )
            })
          )
          yield* Effect.logInfo(`admin: upstream ${path.id} removed`)
          return applied(generation)
        }).pipe(Effect.catchTag("ConfigError", refused(`removing upstream ${path.id}`)))
      )
  })

const keysGroup = (options: Options) =>
  HttpApiBuilder.group(AdminApi, "keys", (handlers) =>
    handlers
      .handle("list", () =>
        Effect.gen(function* () {
          const routing = yield* Routing.Routing
          return routing.current().access.keys(yield* Clock.currentTimeMillis)
        })
      )
      .handle("add", ({ payload }) =>
        Effect.gen(function* () {
          const routing = yield* Routing.Routing
          const { key, ...entry } = payload
          if (key !== undefined && (entry.sha256 !== undefined || entry.keyEnv !== undefined))
            return yield* new InvalidConfig({
              message: "invalid key",
              problems: ["key: give the key, its sha256 or its keyEnv, only one"]
            })
          const stored = key === undefined ? entry : { ...entry, sha256: Access.digest(Redacted.value(key)) }
          const generation = yield* routing.update((config) =>
            Effect.gen(function* () {
              if (config.server.auth.keys.some((k) => k.name === entry.name))
                return yield* new Conflict({ message: `a key named '${entry.name}' exists already; revoke it first` })
              const server = {
                ...config.server,
                auth: { ...config.server.auth, keys: [...config.server.auth.keys, stored] }
              }
              return yield* checked({ ...config, server }, options)
            })
          )
          yield* Effect.logInfo(`admin: key ${entry.name} added`)
          return applied(generation)
        }).pipe(Effect.catchTag("ConfigError", refused(`adding key ${payload.name}`)))
      )
      .handle("revoke", ({ path }) =>
        Effect.gen(function* () {
          const routing = yield* Routing.Routing
          const generation = yield* routing.update((config) =>
            Effect.gen(function* () {
              const keys = config.server.auth.keys
              if (!keys.some((k) => k.name === path.name))
                return yield* new NotFound({
                  message: `no key named '${path.name}'; known: ${keys.map((k) => k.name).join(", ")}`
                })
              const server = {
                ...config.server,
                auth: { ...config.server.auth, keys: keys.filter((k) => k.name !== path.name) }
              }
              return yield* checked({ ...config, server }, options)
            })
          )
          yield* Effect.logInfo(`admin: key ${path.name} revoked`)
          return applied(generation)
        }).pipe(Effect.catchTag("ConfigError", refused(`revoking key ${path.name}`)))
      )
  )

const modelsGroup = HttpApiBuilder.group(AdminApi, "models", (handlers) =>
  handlers
    .handle("list", () =>
      Effect.map(Routing.Routing, (routing) =>
        [...routing.current().topology.pools.values()].map((pool) => ({
          pool: pool.id,
          models: pool.models,
          aliases: pool.aliases
        }))
      )
    )
    .handle("openapi", () => Effect.succeed(document))
)

/** The live audit log as server-sent events: one `data:` line per new entry matching `filter`. */
const live = (log: Audit.Log, filter: Audit.Filter): Stream.Stream<string> =>
  Stream.concat(
    // Sent at once, so the client sees the answer start before the first decision.
    Stream.make(": live decisions\n\n"),
    Stream.async<string>((emit) => {
      const stop = log.listen((decision, key, line) => {
        if (Audit.matches(filter, decision, key)) void emit.single(`data: ${line.trimEnd()}\n\n`)
      })
      return Effect.sync(stop)
    })
  )

const decisionsGroup = HttpApiBuilder.group(AdminApi, "decisions", (handlers) =>
  handlers
    .handle("list", ({ urlParams }) => Effect.map(Observe.Observe, (observe) => observe.audit.query(urlParams)))
    .handleRaw("stream", ({ urlParams }) =>
      Effect.map(Observe.Observe, (observe) =>
        HttpServerResponse.stream(Stream.encodeText(live(observe.audit, urlParams)), {
          contentType: "text/event-stream",
          headers: { "cache-control": "no-cache" }
        })
      )
    )
)

const statsGroup = HttpApiBuilder.group(AdminApi, "stats", (handlers) =>
  handlers.handle("get", () =>
    Effect.flatMap(Observe.Observe, (observe) => Effect.map(observe.stats, (minutes) => ({ minutes })))
  )
)

/** The OpenAPI document of the admin API. */
export const document: OpenApi.OpenAPISpec = OpenApi.fromApi(AdminApi)

/**
 * The admin API as a `node:http` handler (the gateway passes it the requests under `/admin`). Its
 * handlers read and change the running {@link Routing.Routing}.
 */
export const make = (
  options: Options
): Effect.Effect<Gateway.Handler, never, Routing.Routing | Observe.Observe | Scope.Scope> =>
  Effect.gen(function* () {
    const api = HttpApiBuilder.api(AdminApi).pipe(
      Layer.provide([
        configGroup(options),
        upstreamsGroup(options),
        keysGroup(options),
        modelsGroup,
        decisionsGroup,
        statsGroup,
        authLayer(options)
      ])
    )
    const context = yield* Layer.build(
      Layer.mergeAll(api, HttpApiBuilder.Router.Live, HttpApiBuilder.Middleware.layer, NodeHttpServer.layerContext)
    )
    const app = yield* Effect.provide(HttpApiBuilder.httpApp, context)
    return yield* Effect.provide(NodeHttpServer.makeHandler(app), context)
  })
