/**
 * The pools and upstreams a router serves, resolved from the config: defaults applied, API keys
 * read from the environment as `Redacted`.
 */
import type { Rules as TokenRules } from "./TokenCounter.js"
import type { Redacted } from "effect"
import { Context, Effect, Layer, Option } from "effect"
import * as SluiceConfig from "./Config.js"
import { ConfigError } from "./Config.js"

/** Defaults of every optional stage setting, decoded from the schemas so they never drift. */
export const defaults = {
  circuitBreaker: SluiceConfig.CircuitBreakerConfig.make({}),
  stream: SluiceConfig.StreamTimeoutsConfig.make({}),
  queue: SluiceConfig.QueueConfig.make({}),
  retry: SluiceConfig.RetryConfig.make({})
}

/** One upstream deployment, ready to be called. */
export interface Upstream {
  readonly id: string
  readonly name: string
  /** Provider kind; the Provider service dispatches on it. */
  readonly provider: string
  /** Base URL including the API prefix, without a trailing slash. */
  readonly baseUrl: string
  /** Model name sent upstream; `undefined` sends the model the client asked for. */
  readonly model: string | undefined
  readonly apiKey: Option.Option<Redacted.Redacted<string>>
  readonly weight: number
  readonly priority: number
  readonly enabled: boolean
  readonly limits: {
    readonly rpm?: number | undefined
    readonly tpm?: number | undefined
    readonly maxConcurrency?: number | undefined
  }
  readonly contextWindow: number | undefined
  /**
   * What it can take: its provider kind's capabilities narrowed by its own list; undefined when
   * neither says (it takes everything).
   */
  readonly capabilities: ReadonlyArray<SluiceConfig.Capability> | undefined
  /**
   * How it counts prompt tokens, when not by OpenAI's tiktoken rule for the model's name: its
   * provider kind's `tokens` (see `TokenCounter.Rules`); undefined for the default.
   */
  readonly tokens: TokenRules | undefined
  readonly pricing: { readonly inputPerMillion: number; readonly outputPerMillion: number } | undefined
  /** How good its answers are, 0 to 1, when the config says (`quality`). */
  readonly quality?: number | undefined
  readonly timeoutMs: number
  readonly headers: Readonly<Record<string, string>>
  /**
   * True when its provider kind says it only pretends to be a provider
   * ({@link SluiceConfig.ProviderKind.simulated}), so logs and displays can say so.
   */
  readonly simulated: boolean
  readonly circuitBreaker: SluiceConfig.CircuitBreakerConfig
  readonly healthCheck: SluiceConfig.HealthCheckConfig | undefined
  readonly passiveHealth: SluiceConfig.PassiveHealthConfig | undefined
  readonly stream: SluiceConfig.StreamTimeoutsConfig
}

/** A pool of upstreams serving a family of model names. */
export interface Pool {
  readonly id: string
  readonly name: string
  readonly models: ReadonlyArray<string>
  readonly aliases: Readonly<Record<string, string>>
  readonly strategy: string
  readonly upstreams: ReadonlyArray<Upstream>
  readonly fallback: string | undefined
  /** Attempts per request within this pool. */
  readonly maxAttempts: number
  readonly queue: SluiceConfig.QueueConfig
  readonly retry: SluiceConfig.RetryConfig
  readonly sticky: SluiceConfig.StickyConfig | undefined
  /** Hedged streams; undefined (the default) hedges nothing. */
  readonly hedge: SluiceConfig.HedgeConfig | undefined
  /** Settings of the `cost` strategy, when the config has them. */
  readonly cost?: SluiceConfig.CostConfig | undefined
  /** Settings of the `consistent-hash` strategy, when the config has them. */
  readonly consistentHash?: SluiceConfig.ConsistentHashConfig | undefined
  /** Completion tokens reserved when a request sets no `max_tokens`. */
  readonly defaultMaxTokens: number
  /** Whether a stream that breaks off after content is continued by another upstream (`stream.resume`). */
  readonly resume: boolean
}

/** The resolved pools and upstreams. */
export interface Service {
  readonly pools: ReadonlyMap<string, Pool>
  readonly upstreams: ReadonlyMap<string, Upstream>
}

/** The pools and upstreams a router serves. */
export class Topology extends Context.Tag("@sluice/core/Topology")<Topology, Service>() {}

/** What {@link fromConfig} takes besides the config. */
export interface Options {
  /**
   * URLs by upstream id for upstreams that have none in the file (the server starts simulated
   * upstreams and passes their addresses here).
   */
  readonly baseUrls?: ReadonlyMap<string, string>
  /**
   * The provider kind to call some upstreams as, by upstream id, when it is not their own: a
   * simulated upstream started in process that speaks another provider's API (its `simulate.dialect`)
   * is called — and takes what it takes — as that provider. It stays `simulated`.
   */
  readonly callAs?: ReadonlyMap<string, string>
  /**
   * The provider kinds the config was checked against ({@link SluiceConfig.DecodeOptions.providers}):
   * an upstream is `simulated` when its kind says so, and one without a `baseUrl` gets its kind's
   * `defaultBaseUrl`. Without them no upstream is simulated or defaulted.
   */
  readonly providers?: ReadonlyArray<SluiceConfig.ProviderKind>
}

/**
 * Builds a topology from a decoded config file. Every `apiKeyEnv` of the config (upstreams' and
 * `server.priorities`') is read in one pass ({@link SluiceConfig.readEnvironment}); fails with one
 * {@link ConfigError} naming every variable that is not set and every upstream left without a URL.
 */
export const fromConfig = (
  config: SluiceConfig.ConfigFile,
  options: Options = {}
): Effect.Effect<Service, ConfigError> =>
  Effect.gen(function* () {
    const baseUrls = options.baseUrls ?? new Map<string, string>()
    const simulated = new Set(options.providers?.filter((kind) => kind.simulated === true).map((kind) => kind.name))
    const kinds = new Map(options.providers?.map((kind) => [kind.name, kind]))
    const environment = yield* SluiceConfig.readEnvironment(config)
    const problems: Array<string> = [...environment.problems]
    const upstreams = new Map<string, Upstream>()
    for (const [i, u] of config.upstreams.entries()) {
      const apiKey: Option.Option<Redacted.Redacted<string>> = Option.fromNullable(environment.upstreamKeys.get(u.id))
      const provider = options.callAs?.get(u.id) ?? u.provider
      const kind = kinds.get(provider)
      const baseUrl = u.baseUrl ?? baseUrls.get(u.id) ?? kind?.defaultBaseUrl
      if (baseUrl === undefined) {
        problems.push(`upstreams[${i}].baseUrl: '${u.id}' has no URL; set one in the config`)
        continue
      }
      upstreams.set(u.id, {
        id: u.id,
        name: u.name ?? u.id,
        provider,
        baseUrl: baseUrl.replace(/\/+$/, ""),
        model: u.model,
        apiKey,
        weight: u.weight,
        priority: u.priority,
        enabled: u.enabled,
        limits: u.limits ?? {},
        contextWindow: u.contextWindow,
        capabilities: capabilitiesOf(u.capabilities, kind?.capabilities),
        tokens: kind?.tokens,
        pricing: u.pricing,
        quality: u.quality,
        timeoutMs: u.timeoutMs,
        headers: u.headers ?? {},
        simulated: simulated.has(u.provider),
        circuitBreaker: u.circuitBreaker ?? defaults.circuitBreaker,
        healthCheck: u.healthCheck,
        passiveHealth: u.passiveHealth,
        stream: u.stream ?? defaults.stream
      })
    }
    if (problems.length > 0) return yield* new ConfigError({ source: "environment", problems })
    const pools = new Map<string, Pool>()
    for (const p of config.pools) {
      const members = p.upstreams.flatMap((id) => {
        const u = upstreams.get(id)
        return u === undefined ? [] : [u]
      })
      pools.set(p.id, {
        id: p.id,
        name: p.name ?? p.id,
        models: p.models,
        aliases: p.aliases,
        strategy: p.strategy,
        upstreams: members,
        fallback: p.fallback,
        maxAttempts: p.retry?.maxAttempts ?? p.maxAttempts ?? Math.min(3, Math.max(1, members.length)),
        queue: p.queue ?? defaults.queue,
        retry: p.retry ?? defaults.retry,
        sticky: p.sticky,
        hedge: p.hedge,
        cost: p.cost,
        consistentHash: p.consistentHash,
        defaultMaxTokens: p.defaultMaxTokens,
        resume: p.stream?.resume ?? false
      })
    }
    return { pools, upstreams }
  })

/**
 * An upstream's capabilities: its own list (with the finer capabilities its coarse ones imply, see
 * `Config.REFINEMENTS`) within its kind's; undefined when neither narrows them.
 */
const capabilitiesOf = (
  listed: ReadonlyArray<SluiceConfig.Capability> | undefined,
  kind: ReadonlyArray<SluiceConfig.Capability> | undefined
): ReadonlyArray<SluiceConfig.Capability> | undefined => {
  if (listed === undefined) return kind
  const own = [...listed]
  for (const [fine, parent] of SluiceConfig.REFINEMENTS) {
    if (!own.includes(fine) && (parent === undefined || own.includes(parent))) own.push(fine)
  }
  return kind === undefined ? own : own.filter((c) => kind.includes(c))
}

/** A topology layer from a decoded config file (see {@link fromConfig}). */
export const layer = (config: SluiceConfig.ConfigFile, options?: Options) =>
  Layer.effect(Topology, fromConfig(config, options))

/** A topology layer from already resolved pools (handy in code and tests). */
export const layerPools = (pools: ReadonlyArray<Pool>) =>
  Layer.succeed(
    Topology,
    Topology.of({
      pools: new Map(pools.map((p) => [p.id, p])),
      upstreams: new Map(pools.flatMap((p) => p.upstreams.map((u) => [u.id, u] as const)))
    })
  )

/** An upstream with defaults for everything but its id, provider and URL (not `simulated` unless told). */
export const upstream = (
  fields: Pick<Upstream, "id" | "provider" | "baseUrl"> & Partial<Omit<Upstream, "id" | "provider" | "baseUrl">>
): Upstream => ({
  name: fields.id,
  model: undefined,
  apiKey: Option.none(),
  weight: 1,
  priority: 0,
  enabled: true,
  limits: {},
  contextWindow: undefined,
  capabilities: undefined,
  tokens: undefined,
  pricing: undefined,
  timeoutMs: 60_000,
  headers: {},
  simulated: false,
  circuitBreaker: defaults.circuitBreaker,
  healthCheck: undefined,
  passiveHealth: undefined,
  stream: defaults.stream,
  ...fields
})

/** A pool with defaults for everything but its id, models and upstreams. */
export const pool = (
  fields: Pick<Pool, "id" | "models" | "upstreams"> & Partial<Omit<Pool, "id" | "models" | "upstreams">>
): Pool => ({
  name: fields.id,
  aliases: {},
  strategy: "round-robin",
  fallback: undefined,
  maxAttempts: Math.min(3, Math.max(1, fields.upstreams.length)),
  queue: defaults.queue,
  retry: defaults.retry,
  sticky: undefined,
  hedge: undefined,
  defaultMaxTokens: 1024,
  resume: false,
  ...fields
})
