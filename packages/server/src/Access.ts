/**
 * Who may use the gateway: client keys (`server.auth`), their pools and models, their own RPM / TPM
 * limits and spend budgets, their queue priority, and CORS for browser apps.
 *
 * Everything here runs on the request path, so it is plain synchronous code: a key is found by its
 * SHA-256 digest, compared in constant time with every configured digest (no early exit), and the
 * key itself is dropped at once — it is never stored, logged, traced or returned. A key's usage lives
 * in the `StateStore` (`client:<name>`), so it carries over a config reload.
 */
import type { Decision } from "@sluice/core"
import type { Config as SluiceConfig, StateStore, Topology } from "@sluice/core"
import { Redacted } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import type { IncomingHttpHeaders } from "node:http"
import * as ClientUsage from "./internal/clientUsage.js"

/** An answer refusing a request, in OpenAI's error envelope. */
export class Refusal {
  constructor(
    readonly status: 401 | 403 | 429,
    readonly type: string,
    readonly code: string,
    readonly message: string,
    readonly headers: Readonly<Record<string, string>> = {}
  ) {}

  /** The JSON body: `{ error: { message, type, param, code } }`. */
  get body(): string {
    return JSON.stringify({ error: { message: this.message, type: this.type, param: null, code: this.code } })
  }
}

/** An authenticated client: a configured key (by name), or anyone on an open gateway. */
export interface Client {
  /** The key's name; `anonymous` on an open gateway when no key matched. */
  readonly name: string
  readonly priority: number
  /** Whether `x-sluice-priority` may set this client's priority per request. */
  readonly priorityHeader: boolean
  readonly limits: ClientUsage.Limits
  /** False when the client may use every model and pool: {@link allows} need not be asked. */
  readonly restricted: boolean
  /** Whether the client may ask for `model` (and the pool serving it). */
  readonly allows: (model: string) => boolean
  /** Whether usage is recorded (keys with limits or budgets, or shown by the admin API). */
  readonly tracked: boolean
  /** Whether its requests hold tokens and spend from admission on (a key with `tpm` or a budget). */
  readonly holds: boolean
  /** The hold of one admitted request on its key's `tpm` and budgets (see {@link Service.admit}). */
  readonly held?: Held
}

/**
 * What one request holds of its key's `tpm` and budgets: taken at admission, turned into the real
 * usage by {@link Service.record} or given back by {@link Service.release} — whichever comes first.
 */
export class Held implements ClientUsage.Reservation {
  settled = false
  constructor(
    readonly at: number,
    readonly tokens: number,
    readonly costUsd: number
  ) {}
}

/** What the gateway asks before and after routing. Every function is synchronous. */
export interface Service {
  /** True when every `/v1` request must bear a configured key. */
  readonly required: boolean
  /** The client bearing `authorization` (`Bearer <key>`), or the 401 refusal. */
  readonly authenticate: (headers: IncomingHttpHeaders) => Client | Refusal
  /**
   * Admits one request of `client` for `model` at `now` (epoch ms): the 403 for a model or pool the
   * key may not use, the 429 over its RPM / TPM (with `Retry-After`) or its budget
   * (`budget_exceeded`), else the client of this request — and then the request counts toward its
   * RPM. For a key with a TPM or a budget the request holds at once its `promptTokens` (an estimate)
   * plus `maxOutputTokens` (else its pool's `defaultMaxTokens`), priced at the most expensive upstream
   * its pool (or a fallback) may send it to; the client returned carries that hold ({@link Client.held}),
   * which {@link record} or {@link release} must settle. Synchronous; nothing is allocated for a key
   * without a TPM or a budget.
   */
  readonly admit: (
    client: Client,
    model: string,
    now: number,
    promptTokens: number,
    maxOutputTokens: number | undefined
  ) => Refusal | Client
  /** The queue priority of a request: the key's, or its `x-sluice-priority` header where allowed. */
  readonly priority: (client: Client, headers: IncomingHttpHeaders) => number | undefined
  /**
   * Records what a routed request used (tokens, and cost from the serving upstream's pricing); a
   * request holding tokens and spend has its hold turned into that usage — or, when the answer
   * reported none, kept if an upstream served it (or was cut off serving it) and given back if none did.
   */
  readonly record: (client: Client, decision: Decision.Decision, now: number) => void
  /** Gives back what a request still holds (it ended without a decision to record); else nothing. */
  readonly release: (client: Client, now: number) => void
  /**
   * The CORS headers for a request from `origin` (undefined when CORS is off or the origin is not
   * allowed).
   */
  readonly cors: (origin: string | undefined) => Record<string, string> | undefined
  /** What the admin API lists for each key: never the key or its digest. */
  readonly keys: (now: number) => ReadonlyArray<KeyStatus>
}

/** A key as the admin API shows it. */
export interface KeyStatus {
  readonly name: string
  readonly source: "env" | "sha256"
  readonly pools: ReadonlyArray<string> | undefined
  readonly models: ReadonlyArray<string> | undefined
  readonly priority: number
  readonly priorityHeader: boolean
  readonly limits: ClientUsage.Limits
  readonly usage: ReturnType<typeof ClientUsage.summary>
}

/** What {@link make} builds from. */
export interface Settings {
  readonly server: SluiceConfig.ConfigFile["server"]
  /** Keys read from `keyEnv` variables, by key name; legacy `server.priorities` keys. */
  readonly environment: Pick<SluiceConfig.Environment, "clientKeys" | "priorityKeys">
  readonly local: StateStore.Local
  /** The pool serving a model, or undefined. */
  readonly poolOf: (model: string) => string | undefined
  readonly upstreams: ReadonlyMap<string, Topology.Upstream>
  /** The pools by id: a hold's default completion tokens and prices come from a request's pool. */
  readonly pools: ReadonlyMap<string, Topology.Pool>
}

/** The SHA-256 digest of a key, as hex (what `server.auth.keys[].sha256` holds). */
export const digest = (key: string): string => createHash("sha256").update(key).digest("hex")

const BEARER = /^Bearer\s+(\S+)\s*$/i

/** A model pattern (`gpt-4o*`) as a test. */
const matcher = (patterns: ReadonlyArray<string> | undefined): ((model: string) => boolean) => {
  if (patterns === undefined) return () => true
  const exact = new Set(patterns.filter((p) => !p.includes("*")))
  const wild = patterns
    .filter((p) => p.includes("*"))
    .map(
      (p) =>
        new RegExp(
          `^${p
            .split("*")
            .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
            .join(".*")}$`
        )
    )
  return (model) => exact.has(model) || wild.some((re) => re.test(model))
}

const ANYTHING = () => true

const anonymous: Client = {
  name: "anonymous",
  priority: 0,
  priorityHeader: false,
  limits: {},
  restricted: false,
  allows: ANYTHING,
  tracked: false,
  holds: false
}

const keyOf = (name: string) => `client:${name}`

/** A client key as `make` holds it: its digest, its client, and its config (none for a legacy key). */
interface Entry {
  readonly digest: Buffer
  readonly client: Client
  readonly key?: SluiceConfig.ClientKeyConfig
}

/** Every key as its digest; a legacy `server.priorities` key (only without keys) is a client with a priority only. */
const entriesOf = (settings: Settings, required: boolean): Array<Entry> => {
  const { server, environment } = settings
  const entries: Array<Entry> = []
  for (const key of server.auth.keys) {
    const secret = environment.clientKeys.get(key.name)
    const hex = key.sha256 ?? (secret === undefined ? undefined : digest(Redacted.value(secret)))
    if (hex === undefined) continue
    const models = matcher(key.models)
    const pools = key.pools === undefined ? undefined : new Set(key.pools)
    const limits: ClientUsage.Limits = {
      rpm: key.limits?.rpm,
      tpm: key.limits?.tpm,
      dailyUsd: key.budget?.dailyUsd,
      monthlyUsd: key.budget?.monthlyUsd
    }
    entries.push({
      digest: Buffer.from(hex, "hex"),
      key,
      client: {
        name: key.name,
        priority: key.priority,
        priorityHeader: key.priorityHeader,
        limits,
        restricted: key.models !== undefined || pools !== undefined,
        allows: (model) => {
          if (!models(model)) return false
          if (pools === undefined) return true
          const pool = settings.poolOf(model)
          // A model no pool serves is the router's 404, not a 403.
          return pool === undefined || pools.has(pool)
        },
        tracked: true,
        holds: limits.tpm !== undefined || limits.dailyUsd !== undefined || limits.monthlyUsd !== undefined
      }
    })
  }
  if (!required)
    environment.priorityKeys.forEach((entry, i) =>
      entries.push({
        digest: Buffer.from(digest(Redacted.value(entry.apiKey)), "hex"),
        client: { ...anonymous, name: `server.priorities[${i}]`, priority: entry.priority }
      })
    )
  return entries
}

/** The 429 of a client over one of its limits or budgets. */
const overLimit = (client: Client, over: ClientUsage.Over): Refusal => {
  const limits = client.limits
  const retryAfter = String(Math.max(1, Math.ceil(over.retryAfterMs / 1000)))
  const headers = { "retry-after": retryAfter }
  switch (over.limit) {
    case "rpm":
    case "tpm": {
      const unit = over.limit === "rpm" ? "requests" : "tokens"
      return new Refusal(
        429,
        unit,
        "rate_limit_exceeded",
        `the key '${client.name}' is over its limit of ${limits[over.limit]} ${unit} per minute; retry after ${retryAfter}s`,
        headers
      )
    }
    default: {
      const daily = over.limit === "dailyUsd"
      const budget = `${daily ? "daily" : "monthly"} budget of $${daily ? limits.dailyUsd : limits.monthlyUsd}`
      const renews = `it renews at the start of the next UTC ${daily ? "day" : "month"}`
      const spent =
        over.leftUsd !== undefined && over.leftUsd > 0
          ? `this request may cost up to $${dollars(over.costUsd ?? 0)}, more than the $${dollars(over.leftUsd)} left of the key '${client.name}''s ${budget} (a lower max_tokens may fit); ${renews}`
          : `the key '${client.name}' has spent its ${budget}; ${renews}`
      return new Refusal(429, "insufficient_quota", "budget_exceeded", spent, headers)
    }
  }
}

/** Dollars as a message shows them: enough digits for a fraction of a cent. */
const dollars = (usd: number) => String(Number(usd.toPrecision(4)))

/** A pool's completion tokens for a request without `max_tokens`, and the prices of every upstream it may use. */
interface Pricing {
  readonly defaultMaxTokens: number
  readonly prices: ReadonlyArray<NonNullable<Topology.Upstream["pricing"]>>
}

/**
 * What a request for a model holds ({@link ClientUsage.Hold}): its prompt and completion tokens, and
 * their price at the most expensive upstream of its pool and fallbacks (the upstream is not chosen
 * yet). Each pool's prices are gathered once.
 */
const holdOf = (settings: Settings) => {
  const byPool = new Map<string, Pricing>()
  const pricingOf = (poolId: string): Pricing => {
    let found = byPool.get(poolId)
    if (found !== undefined) return found
    const prices: Array<NonNullable<Topology.Upstream["pricing"]>> = []
    const seen = new Set<string>()
    for (let pool = settings.pools.get(poolId); pool !== undefined && !seen.has(pool.id);) {
      seen.add(pool.id)
      for (const upstream of pool.upstreams) if (upstream.pricing !== undefined) prices.push(upstream.pricing)
      pool = pool.fallback === undefined ? undefined : settings.pools.get(pool.fallback)
    }
    found = { defaultMaxTokens: settings.pools.get(poolId)?.defaultMaxTokens ?? 0, prices }
    byPool.set(poolId, found)
    return found
  }
  return (model: string, promptTokens: number, maxOutputTokens: number | undefined): ClientUsage.Hold => {
    const pool = settings.poolOf(model)
    if (pool === undefined) return { tokens: promptTokens + (maxOutputTokens ?? 0), costUsd: 0 }
    const { defaultMaxTokens, prices } = pricingOf(pool)
    const output = maxOutputTokens ?? defaultMaxTokens
    let costUsd = 0
    for (const price of prices)
      costUsd = Math.max(costUsd, (promptTokens * price.inputPerMillion + output * price.outputPerMillion) / 1_000_000)
    return { tokens: promptTokens + output, costUsd }
  }
}

/** The CORS headers for a request's `origin`, when `server.cors` allows it. */
const corsOf = (server: Settings["server"]): ((origin: string | undefined) => Record<string, string> | undefined) => {
  const origins = server.cors === undefined ? undefined : new Set(server.cors.origins)
  const maxAge = String(server.cors?.maxAgeSeconds ?? 0)
  return (origin) => {
    if (origins === undefined || origin === undefined) return undefined
    if (!origins.has("*") && !origins.has(origin)) return undefined
    return {
      "access-control-allow-origin": origins.has("*") ? "*" : origin,
      "access-control-allow-methods": "GET, POST, OPTIONS",
      "access-control-allow-headers": "authorization, content-type, x-request-id, x-sluice-priority, x-session-id",
      "access-control-expose-headers": "x-request-id, x-sluice-pool, x-sluice-upstream, x-sluice-attempts, retry-after",
      "access-control-max-age": maxAge,
      vary: "origin"
    }
  }
}

/** Builds the access rules of one config. */
export const make = (settings: Settings): Service => {
  const { server, local } = settings
  const required = server.auth.keys.length > 0
  const entries = entriesOf(settings, required)

  const find = (presented: string): Client | undefined => {
    const wanted = createHash("sha256").update(presented).digest()
    let found: Client | undefined
    // No early exit: the time taken does not tell which key, or how much of one, matched.
    for (const entry of entries) if (timingSafeEqual(entry.digest, wanted) && found === undefined) found = entry.client
    return found
  }

  const authenticate = (headers: IncomingHttpHeaders): Client | Refusal => {
    if (entries.length === 0 && !required) return anonymous
    const authorization = headers["authorization"]
    const match = typeof authorization === "string" ? BEARER.exec(authorization) : null
    const client = match === null || entries.length === 0 ? undefined : find(match[1]!)
    if (client !== undefined) return client
    if (!required) return anonymous
    return match === null
      ? new Refusal(
          401,
          "invalid_request_error",
          "missing_api_key",
          "this gateway requires a client key: send it as 'Authorization: Bearer <key>'",
          { "www-authenticate": "Bearer" }
        )
      : new Refusal(401, "invalid_request_error", "invalid_api_key", "the client key is not valid for this gateway", {
          "www-authenticate": "Bearer"
        })
  }

  const hold = holdOf(settings)

  const admit = (
    client: Client,
    model: string,
    now: number,
    promptTokens: number,
    maxOutputTokens: number | undefined
  ): Refusal | Client => {
    if (client.restricted && !client.allows(model))
      return new Refusal(
        403,
        "invalid_request_error",
        "model_not_allowed",
        `the key '${client.name}' may not use model '${model}'; ask the gateway's operator for access`
      )
    if (!client.tracked) return client
    const held = client.holds ? hold(model, promptTokens, maxOutputTokens) : undefined
    const over = local.modify<ClientUsage.Usage, ClientUsage.Over | undefined>(keyOf(client.name), (current) =>
      ClientUsage.admit(current, client.limits, now, held)
    )
    if (over !== undefined) return overLimit(client, over)
    return held === undefined ? client : { ...client, held: new Held(now, held.tokens, held.costUsd) }
  }

  /** Turns a request's hold into `tokens` and `costUsd` (0 and 0 give it back). */
  const settleHold = (client: Client, held: Held, tokens: number, costUsd: number, now: number) => {
    held.settled = true
    local.modify<ClientUsage.Usage, void>(keyOf(client.name), (current) => [
      undefined,
      ClientUsage.correct(current, held, tokens, costUsd, now)
    ])
  }

  const priority = (client: Client, headers: IncomingHttpHeaders): number | undefined => {
    if (client.priorityHeader) {
      const sent = headers["x-sluice-priority"]
      const value = typeof sent === "string" ? Number(sent) : Number.NaN
      if (Number.isFinite(value)) return value
    }
    return client.priority === 0 ? undefined : client.priority
  }

  const record = (client: Client, decision: Decision.Decision, now: number): void => {
    if (!client.tracked) return
    const tokens = (decision.inputTokens ?? 0) + (decision.outputTokens ?? 0)
    const cost = costOf(settings.upstreams, decision)
    const held = client.held
    if (held !== undefined && !held.settled) {
      if (decision.inputTokens !== undefined || decision.outputTokens !== undefined)
        return settleHold(client, held, tokens, cost, now)
      // No usage reported: what an upstream served, or was cut off while serving, stays held (it may
      // well have used it); nothing was used when every attempt failed or none was sent.
      return decision.upstream === undefined && !decision.attempts.some((a) => a.outcome === "interrupted")
        ? settleHold(client, held, 0, 0, now)
        : void (held.settled = true)
    }
    if (tokens === 0 && cost === 0) return
    local.modify<ClientUsage.Usage, void>(keyOf(client.name), (current) => [
      undefined,
      ClientUsage.record(current, tokens, cost, now)
    ])
  }

  const release = (client: Client, now: number): void => {
    const held = client.held
    if (held !== undefined && !held.settled) settleHold(client, held, 0, 0, now)
  }

  const cors = corsOf(server)

  const keys = (now: number): ReadonlyArray<KeyStatus> =>
    entries.flatMap(({ key, client }) =>
      key === undefined
        ? []
        : [
            {
              name: key.name,
              source: key.sha256 === undefined ? ("env" as const) : ("sha256" as const),
              pools: key.pools,
              models: key.models,
              priority: key.priority,
              priorityHeader: key.priorityHeader,
              limits: client.limits,
              usage: ClientUsage.summary(
                local.modify<ClientUsage.Usage, ClientUsage.Usage | undefined>(keyOf(key.name), (current) => [
                  current,
                  current
                ]),
                now
              )
            }
          ]
    )

  return { required, authenticate, admit, priority, record, release, cors, keys }
}

/**
 * What a decision cost in US dollars: its tokens used × the serving upstream's `pricing` (0 without
 * pricing or an upstream). Client budgets, the spend metric and the audit log all count with it.
 */
export const costOf = (upstreams: ReadonlyMap<string, Topology.Upstream>, decision: Decision.Decision): number => {
  const pricing = decision.upstream === undefined ? undefined : upstreams.get(decision.upstream)?.pricing
  return pricing === undefined
    ? 0
    : ((decision.inputTokens ?? 0) * pricing.inputPerMillion +
        (decision.outputTokens ?? 0) * pricing.outputPerMillion) /
        1_000_000
}

/** True for addresses only this machine can reach (`127.0.0.0/8`, `::1`, `localhost`). */
export const isLoopback = (host: string): boolean =>
  host === "localhost" || host === "::1" || host === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)

/**
 * Why `server` must not start: an open gateway (no client keys) on an address other machines can
 * reach, unless `server.auth.open: true` says so on purpose.
 */
export const exposureProblem = (server: SluiceConfig.ConfigFile["server"]): string | undefined =>
  server.auth.keys.length === 0 && !server.auth.open && !isLoopback(server.host)
    ? `server.host: '${server.host}' is reachable from other machines and no client keys are set; add server.auth.keys, bind 127.0.0.1, or set server.auth.open: true to serve anyone on purpose`
    : undefined
