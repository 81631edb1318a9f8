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
   * (`budget_exceeded`), else undefined — and then the request counts toward its RPM.
   */
  readonly admit: (client: Client, model: string, now: number) => Refusal | undefined
  /** The queue priority of a request: the key's, or its `x-sluice-priority` header where allowed. */
  readonly priority: (client: Client, headers: IncomingHttpHeaders) => number | undefined
  /** Records what an answered request used (tokens, and cost from the serving upstream's pricing). */
  readonly record: (client: Client, decision: Decision.Decision, now: number) => void
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
  tracked: false
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
        tracked: true
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
      return new Refusal(
        429,
        "insufficient_quota",
        "budget_exceeded",
        `the key '${client.name}' has spent its ${daily ? "daily" : "monthly"} budget of $${daily ? limits.dailyUsd : limits.monthlyUsd}; it renews at the start of the next UTC ${daily ? "day" : "month"}`,
        headers
      )
    }
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

  const admit = (client: Client, model: string, now: number): Refusal | undefined => {
    if (client.restricted && !client.allows(model))
      return new Refusal(
        403,
        "invalid_request_error",
        "model_not_allowed",
        `the key '${client.name}' may not use model '${model}'; ask the gateway's operator for access`
      )
    if (!client.tracked) return undefined
    const over = local.modify<ClientUsage.Usage, ClientUsage.Over | undefined>(keyOf(client.name), (current) =>
      ClientUsage.admit(current, client.limits, now)
    )
    return over === undefined ? undefined : overLimit(client, over)
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
    if (tokens === 0 && cost === 0) return
    local.modify<ClientUsage.Usage, void>(keyOf(client.name), (current) => [
      undefined,
      ClientUsage.record(current, tokens, cost, now)
    ])
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

  return { required, authenticate, admit, priority, record, cors, keys }
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
