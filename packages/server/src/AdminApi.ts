/**
 * The admin API's description: endpoints, bodies, answers and errors as `@effect/platform`
 * `HttpApi` groups under `/admin`, behind a bearer token. `Admin.ts` implements it; the OpenAPI
 * document (`/admin/openapi.json`) is made from this description, and `sluice` CLI commands call it.
 *
 * Bodies are decoded with these schemas: a bad body is a 400 whose issues name each path.
 */
import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpApiMiddleware from "@effect/platform/HttpApiMiddleware"
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as HttpApiSecurity from "@effect/platform/HttpApiSecurity"
import * as OpenApi from "@effect/platform/OpenApi"
import { Config as SluiceConfig } from "@sluice/core"
import { ParseResult, Schema } from "effect"

/** No token was sent. */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()(
  "Unauthorized",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 401 })
) {}

/** The token sent is not the admin token. */
export class Forbidden extends Schema.TaggedError<Forbidden>()(
  "Forbidden",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 403 })
) {}

/** No such upstream, pool or key. */
export class NotFound extends Schema.TaggedError<NotFound>()(
  "NotFound",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 404 })
) {}

/** The change cannot be made as asked (it would leave a pool empty, the name is taken...). */
export class Conflict extends Schema.TaggedError<Conflict>()(
  "Conflict",
  { message: Schema.String },
  HttpApiSchema.annotations({ status: 409 })
) {}

/** The config (given, or made by a change) is invalid: every problem by path; the running one stays. */
export class InvalidConfig extends Schema.TaggedError<InvalidConfig>()(
  "InvalidConfig",
  { message: Schema.String, problems: Schema.Array(Schema.String) },
  HttpApiSchema.annotations({ status: 400 })
) {}

/** The admin token, checked on every endpoint. */
export class AdminAuth extends HttpApiMiddleware.Tag<AdminAuth>()("@sluice/server/AdminAuth", {
  failure: Schema.Union(Unauthorized, Forbidden),
  security: { bearer: HttpApiSecurity.bearer }
}) {}

/** Bodies report every bad field at once, not the first. */
const ALL_ERRORS = { errors: "all", onExcessProperty: "error" } as const

/** What a config change did. */
export const Applied = Schema.Struct({
  /** The generation now serving new requests. */
  generation: Schema.Number
})

/** `POST /admin/config/validate`'s answer. */
export const Validation = Schema.Struct({ valid: Schema.Boolean, problems: Schema.Array(Schema.String) })

const Json = Schema.Unknown.annotations({ description: "a Sluice config document, as the config file holds it" })

/** Config: get (secrets redacted), validate, replace, reload from the file. */
export class ConfigGroup extends HttpApiGroup.make("config")
  .add(HttpApiEndpoint.get("get", "/config").addSuccess(Json))
  .add(HttpApiEndpoint.post("validate", "/config/validate").setPayload(Json).addSuccess(Validation))
  .add(HttpApiEndpoint.put("replace", "/config").setPayload(Json).addSuccess(Applied).addError(InvalidConfig))
  .add(
    HttpApiEndpoint.post("reload", "/config/reload").addSuccess(Applied).addError(InvalidConfig).addError(Conflict)
  ) {}

const Id = Schema.Struct({ id: Schema.String })

/** A decayed latency average as the admin API shows it. */
const Decayed = Schema.Struct({ ms: Schema.Number, samples: Schema.Number, updatedAt: Schema.String })

/** An upstream's state as the admin API shows it. */
export const UpstreamStatus = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  provider: Schema.String,
  pools: Schema.Array(Schema.String),
  enabled: Schema.Boolean,
  simulated: Schema.Boolean,
  health: Schema.Unknown,
  breaker: Schema.Unknown,
  budget: Schema.Unknown,
  inFlight: Schema.Number,
  /**
   * Decayed latency (half of an old average's weight goes every 10 s) of whole answers, apart from
   * that of streams to their first content, and per output token (ms to 2 decimals): rounded ms,
   * samples, last update. Absent before the first.
   */
  latency: Schema.Struct({
    answer: Schema.optional(Decayed),
    firstContent: Schema.optional(Decayed),
    perOutputToken: Schema.optional(Decayed)
  }),
  /**
   * What the strategies read of the upstream now (the live view): attempts in flight and the tokens
   * they reserved (prompt + reserved completion), the decayed share of recent attempts it failed
   * (0 to 1), and the share of its RPM / TPM budgets left (0 to 1). With `counted` false the pool's
   * strategy reads no load, so attempts are not counted (`inFlight` above, the rate limiter's, still is).
   */
  live: Schema.optional(
    Schema.Struct({
      counted: Schema.Boolean,
      inFlight: Schema.Number,
      reservedTokens: Schema.Number,
      errorRate: Schema.Number,
      budgetLeft: Schema.Number
    })
  )
})

/** A pool's state. */
export const PoolStatus = Schema.Struct({
  id: Schema.String,
  models: Schema.Array(Schema.String),
  strategy: Schema.String,
  upstreams: Schema.Array(Schema.String),
  queueDepth: Schema.Number
})

/** Every pool and upstream now. */
export const Status = Schema.Struct({
  generation: Schema.Number,
  pools: Schema.Array(PoolStatus),
  upstreams: Schema.Array(UpstreamStatus)
})

/** `POST /admin/upstreams`: an upstream as the config file writes it, and the pools to add it to. */
export const AddUpstream = Schema.Struct({
  pools: Schema.Array(Schema.String).pipe(Schema.minItems(1)),
  upstream: SluiceConfig.UpstreamConfig
}).annotations({ parseOptions: ALL_ERRORS })

/** Upstreams: status, breaker reset, disable / enable, add / remove, health check now. */
export class UpstreamsGroup extends HttpApiGroup.make("upstreams")
  .add(HttpApiEndpoint.get("status", "/upstreams").addSuccess(Status))
  .add(
    HttpApiEndpoint.post("resetBreaker", "/upstreams/:id/breaker/reset")
      .setPath(Id)
      .addSuccess(UpstreamStatus)
      .addError(NotFound)
  )
  .add(
    HttpApiEndpoint.post("disable", "/upstreams/:id/disable")
      .setPath(Id)
      .addSuccess(Applied)
      .addError(NotFound)
      .addError(InvalidConfig)
  )
  .add(
    HttpApiEndpoint.post("enable", "/upstreams/:id/enable")
      .setPath(Id)
      .addSuccess(Applied)
      .addError(NotFound)
      .addError(InvalidConfig)
  )
  .add(
    HttpApiEndpoint.post("checkNow", "/upstreams/:id/health-check")
      .setPath(Id)
      .addSuccess(UpstreamStatus)
      .addError(NotFound)
  )
  .add(
    HttpApiEndpoint.post("add", "/upstreams")
      .setPayload(AddUpstream)
      .addSuccess(Applied, { status: 201 })
      .addError(NotFound)
      .addError(Conflict)
      .addError(InvalidConfig)
  )
  .add(
    HttpApiEndpoint.del("remove", "/upstreams/:id")
      .setPath(Id)
      .addSuccess(Applied)
      .addError(NotFound)
      .addError(Conflict)
      .addError(InvalidConfig)
  ) {}

/** A key as listed: never the key or its digest. */
export const KeyStatus = Schema.Struct({
  name: Schema.String,
  source: Schema.Literal("env", "sha256"),
  pools: Schema.optional(Schema.Array(Schema.String)),
  models: Schema.optional(Schema.Array(Schema.String)),
  priority: Schema.Number,
  priorityHeader: Schema.Boolean,
  limits: Schema.Unknown,
  usage: Schema.Struct({
    requestsLastMinute: Schema.Number,
    tokensLastMinute: Schema.Number,
    spentTodayUsd: Schema.Number,
    spentThisMonthUsd: Schema.Number
  })
})

/**
 * `POST /admin/keys`: a key as the config file writes it, except that `key` may carry the key
 * itself — it is turned into its SHA-256 digest at once, and only the digest is kept.
 */
export const AddKey = Schema.Struct({
  ...SluiceConfig.ClientKeyConfig.fields,
  // Messages that never quote the value: a key must not come back in an error.
  key: Schema.optionalWith(
    Schema.Redacted(
      Schema.String.pipe(
        Schema.minLength(16, { message: () => "expected a key of at least 16 characters; the value is not shown" })
      )
    ).annotations({ message: () => "expected a key of at least 16 characters; the value is not shown" }),
    { exact: true }
  )
}).annotations({ parseOptions: ALL_ERRORS })

/** Keys: list, add, revoke. */
export class KeysGroup extends HttpApiGroup.make("keys")
  .add(HttpApiEndpoint.get("list", "/keys").addSuccess(Schema.Array(KeyStatus)))
  .add(
    HttpApiEndpoint.post("add", "/keys")
      .setPayload(AddKey)
      .addSuccess(Applied, { status: 201 })
      .addError(Conflict)
      .addError(InvalidConfig)
  )
  .add(
    HttpApiEndpoint.del("revoke", "/keys/:name")
      .setPath(Schema.Struct({ name: Schema.String }))
      .addSuccess(Applied)
      .addError(NotFound)
      .addError(InvalidConfig)
  ) {}

/** What each pool serves. */
export const PoolModels = Schema.Struct({
  pool: Schema.String,
  models: Schema.Array(Schema.String),
  aliases: Schema.Record({ key: Schema.String, value: Schema.String })
})

/** Models, and the OpenAPI document itself. */
export class ModelsGroup extends HttpApiGroup.make("models")
  .add(HttpApiEndpoint.get("list", "/models").addSuccess(Schema.Array(PoolModels)))
  .add(HttpApiEndpoint.get("openapi", "/openapi.json").addSuccess(Schema.Unknown)) {}

/** A time in a query: ISO 8601 (`2026-01-31T12:00:00Z`) or epoch milliseconds. */
const Instant = Schema.transformOrFail(Schema.String, Schema.Number, {
  strict: true,
  decode: (text, _, ast) => {
    const ms = /^\d+$/.test(text) ? Number(text) : Date.parse(text)
    return Number.isFinite(ms)
      ? ParseResult.succeed(ms)
      : ParseResult.fail(new ParseResult.Type(ast, text, "expected an ISO 8601 time or epoch milliseconds"))
  },
  encode: (ms) => ParseResult.succeed(String(ms))
})

/** What `GET /admin/decisions` and its live stream filter on; every given field must match. */
export const DecisionFilter = Schema.Struct({
  /** The matched pool or any fallback pool tried. */
  pool: Schema.optional(Schema.String),
  /** The serving upstream or any attempted one. */
  upstream: Schema.optional(Schema.String),
  /** The client key's name. */
  key: Schema.optional(Schema.String),
  outcome: Schema.optional(Schema.Literal("success", "error", "interrupted")),
  /** Decisions started at or after this time. */
  since: Schema.optional(Instant),
  /** Decisions started before this time. */
  until: Schema.optional(Instant),
  /** At most this many (the list only), newest first. */
  limit: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.positive()))
})

/** One audit entry: `{ time, key?, costUsd, decision }`. */
export const AuditEntry = Schema.Unknown.annotations({
  description: "an audit entry: time, key (the client key's name), costUsd and the decision"
})

/** The audit log of decisions: the last `server.audit.keep`, and a live stream (SSE). */
export class DecisionsGroup extends HttpApiGroup.make("decisions")
  .add(HttpApiEndpoint.get("list", "/decisions").setUrlParams(DecisionFilter).addSuccess(Schema.Array(AuditEntry)))
  .add(
    HttpApiEndpoint.get("stream", "/decisions/stream")
      .setUrlParams(DecisionFilter)
      .addSuccess(
        Schema.String.pipe(HttpApiSchema.withEncoding({ kind: "Text", contentType: "text/event-stream" })).annotations({
          description: "server-sent events, one `data:` line per new audit entry"
        })
      )
  ) {}

/** p50 and p99 of one minute, in milliseconds (bucketed: within about 9% of the exact value). */
const MinuteQuantiles = Schema.NullOr(Schema.Struct({ p50: Schema.Number, p99: Schema.Number }))

/** One minute's totals; `start` is the minute's start in epoch milliseconds. */
export const MinuteStats = Schema.Struct({
  start: Schema.Number,
  requests: Schema.Number,
  /** Requests whose outcome was `error`. */
  errors: Schema.Number,
  inputTokens: Schema.Number,
  outputTokens: Schema.Number,
  spendUsd: Schema.Number,
  /** Whole requests' latency; null in a minute without requests. */
  latencyMs: MinuteQuantiles,
  /** Time to the first chunk of streamed answers; null in a minute without one. */
  firstChunkMs: MinuteQuantiles
})

/** The last hour, minute by minute: sixty minutes, oldest first, the current (partial) minute last. */
export const Stats = Schema.Struct({ minutes: Schema.Array(MinuteStats) })

/** Per-minute totals of the last hour, kept on the server whatever `server.audit.keep` is. */
export class StatsGroup extends HttpApiGroup.make("stats").add(
  HttpApiEndpoint.get("get", "/stats").addSuccess(Stats)
) {}

/** The admin API. */
export class AdminApi extends HttpApi.make("sluice-admin")
  .add(ConfigGroup)
  .add(UpstreamsGroup)
  .add(KeysGroup)
  .add(ModelsGroup)
  .add(DecisionsGroup)
  .add(StatsGroup)
  .middleware(AdminAuth)
  .prefix("/admin")
  .annotate(OpenApi.Title, "Sluice admin API")
  .annotate(
    OpenApi.Description,
    "Operate a running Sluice gateway: config, upstreams, client keys, models, the audit log of decisions, the last hour's totals."
  ) {}
