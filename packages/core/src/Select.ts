/**
 * Select: the stage that picks the upstream of the next attempt — synchronously.
 *
 * For each pool of the fallback chain in turn: the candidates (enabled, context window fits, every
 * guard's `check` lets it through, not tried yet), the lowest priority tier that has any, the
 * session's sticky upstream when it is one of them, else the {@link Strategy}. Every upstream left
 * out lands in the decision with its stage and reason, and the ones that clear by themselves (a
 * spent budget, a full concurrency limit) are kept as reasons to wait in the queue. The `Attempt`
 * stage then admits the choice through every guard.
 *
 * In a pool that hedges, an upstream ejected for losing races to first content (see `Hedge`) is
 * left out too, stage `hedge`, not a reason to wait — unless no other upstream of the pool can take
 * the request: ejection moves attempts elsewhere, it never leaves a pool without one to serve.
 */
import { Effect } from "effect"
import type { Exclusion } from "./Errors.js"
import type { Attempt, Guard, RequestInfo } from "./Guard.js"
import * as Ejection from "./internal/ejection.js"
import type { Request } from "./internal/request.js"
import * as Live from "./Live.js"
import { needsExact } from "./TokenCounter.js"
import type * as StateStore from "./StateStore.js"
import type { Choice, Selection, Service as Strategy } from "./Strategy.js"
import { nameOf } from "./Strategy.js"
import type { Pool, Upstream } from "./Topology.js"

/** What the stage found for the next attempt. */
export type Selected =
  /** The upstream of the next attempt, for the `Attempt` stage to admit. */
  | { readonly _tag: "Chosen"; readonly attempt: Attempt }
  /** No upstream of the chain can take the request now; `request.pass.waitable` says whether waiting may help. */
  | { readonly _tag: "Unserved" }
  /** The prompt estimate is near a limit of `pool`: count it exactly, then select again. */
  | { readonly _tag: "CountExactly" }

/** The stage. */
export interface Service {
  /** Continues the request's pass over the chain to the upstream of the next attempt. Synchronous. */
  readonly next: (request: Request) => Selected
  /**
   * The next attempt within the pass's current pool, as {@link next} would choose it, or undefined
   * when none of its upstreams can take the request now or its attempts are spent: never a fallback
   * pool, never a wait. For a second attempt beside one in flight (a hedge): the strategy is asked
   * not to explore (`Selection.explore` false). Synchronous.
   */
  readonly another: (request: Request) => Attempt | undefined
  /**
   * Whether the prompt estimate comes near a context window or a guard's token headroom on an
   * enabled upstream of `pool` — near enough that an estimate twice too low would pass it.
   */
  readonly nearLimit: (request: Request, pool: Pool) => boolean
  /**
   * Milliseconds until some upstream of the chain that fits the request is expected to take it, from
   * the guards' exclusions (0 when one could now); undefined when only a release can tell.
   */
  readonly soonestFree: (request: Request) => number | undefined
  /** The guards' waitable exclusions of an attempt's upstream now (after it answered 429, say). */
  readonly waitableOn: (request: Request, attempt: Attempt) => ReadonlyArray<Exclusion>
}

/**
 * How wrong the prompt estimate may be before it could mislead a limit check: exact counting starts
 * where an estimate half the true count would be at the limit.
 */
const EXACT_MARGIN = 0.5

const UNSERVED: Selected = { _tag: "Unserved" }
const COUNT_EXACTLY: Selected = { _tag: "CountExactly" }

/** A stable, non-reversible digest, so API keys never sit in the state store as they are. */
const digest = (text: string): string => {
  let h1 = 0x811c9dc5
  let h2 = 0x01000193
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 0x01000193)
    h2 = Math.imul(h2 ^ c, 0x5bd1e995)
  }
  return (h1 >>> 0).toString(36) + (h2 >>> 0).toString(36)
}

/** The session key of a request for a pool's `sticky` settings. */
const sessionKeyFor = (pool: Pool, request: Request): string | undefined => {
  if (pool.sticky === undefined) return undefined
  const options = request.options
  if (options?.sessionKey !== undefined) return options.sessionKey
  switch (pool.sticky.key) {
    case "header":
      return options?.headers?.[pool.sticky.header.toLowerCase()]
    case "user":
      return request.user
    case "api-key":
      return options?.apiKey === undefined ? undefined : `key:${digest(options.apiKey)}`
  }
}

/** What the guards see of the request in `pool`. */
const infoFor = (request: Request, pool: Pool): RequestInfo => ({
  pool,
  model: request.match.model,
  promptTokens: request.count.tokens,
  reservedOutputTokens: request.requestedOutputTokens ?? pool.defaultMaxTokens,
  sessionKey: sessionKeyFor(pool, request),
  priority: request.priority,
  stream: request.stream,
  needs: request.needs
})

/**
 * An attempt on `upstream` with the request's info (written out: a spread of it costs more, per
 * request); its prompt tokens as the upstream counts them, for its budgets.
 */
const attemptOf = (
  info: RequestInfo,
  upstream: Upstream,
  attempt: number,
  promptTokens: number,
  scores: Attempt["scores"]
): Attempt => ({
  pool: info.pool,
  model: info.model,
  promptTokens,
  reservedOutputTokens: info.reservedOutputTokens,
  sessionKey: info.sessionKey,
  priority: info.priority,
  stream: info.stream,
  needs: info.needs,
  upstream,
  attempt,
  scores
})

/**
 * What the strategy is handed: the request's figures, the live view, and what only some strategies
 * need (the session key without `sticky`, the prefix hash) read when asked. A class, so a selection
 * allocates no closures.
 */
class Choosing implements Selection {
  readonly model: string
  readonly attempt: number
  readonly promptTokens: number
  readonly reservedOutputTokens: number
  readonly stream: boolean
  readonly now: number
  readonly random: () => number

  constructor(
    readonly pool: Pool,
    readonly candidates: readonly [Upstream, ...Array<Upstream>],
    readonly live: Live.View,
    readonly explore: boolean,
    private readonly request: Request,
    private readonly info: RequestInfo
  ) {
    this.model = request.match.model
    this.attempt = request.attempts + 1
    this.promptTokens = request.count.tokens
    this.reservedOutputTokens = info.reservedOutputTokens
    this.stream = request.stream
    this.now = request.now
    this.random = request.random
  }

  get sessionKey(): string | undefined {
    const options = this.request.options
    return this.info.sessionKey ?? options?.sessionKey ?? options?.headers?.["x-session-id"]
  }

  prefixHash(): number | undefined {
    return this.request.prompt.prefixHash?.()
  }
}

/**
 * The prompt tokens of an attempt on an upstream that counts by its own rules, or the first after
 * one that did: the decision then tells the count of the upstream it tried last, and by what rules.
 */
const countedBy = (request: Request, upstream: Upstream): number => {
  const count = request.countFor(upstream)
  request.decision.promptTokens = count.tokens
  request.decision.promptTokensExact = count.exact
  request.decision.promptTokensRules = upstream.tokens
  return count.tokens
}

/** Why `upstream` cannot take `request` whatever the guards say: disabled, or its context window too small. */
const unfit = (request: Request, upstream: Upstream): Exclusion | undefined =>
  !upstream.enabled
    ? { upstream: upstream.id, stage: "config", reason: "disabled in config" }
    : request.fits(upstream)
      ? undefined
      : {
          upstream: upstream.id,
          stage: "context-window",
          reason:
            `needs ${request.countFor(upstream).tokens + request.completionRoom} tokens` +
            (upstream.tokens === undefined ? "" : ` (${upstream.tokens} rules, an estimate)`) +
            `, context window is ${upstream.contextWindow}`
        }

/**
 * The upstream the request's session is bound to in a pool that keeps sessions, when it is a
 * candidate; records in the decision whether the session hit, moved or was new.
 */
const stickyChoice = (
  local: StateStore.Local,
  request: Request,
  pool: Pool,
  key: string | undefined,
  candidates: ReadonlyArray<Upstream>
): Upstream | undefined => {
  if (pool.sticky === undefined || key === undefined) return undefined
  const bound = local.get(`sticky:${pool.id}:${key}`, request.now)
  if (bound === undefined) {
    request.decision.sticky ??= "miss"
    return undefined
  }
  const hit = candidates.find((u) => u.id === bound)
  if (hit === undefined) request.decision.sticky = "moved"
  else request.decision.sticky ??= "hit"
  return hit
}

/** Makes the stage over the pipeline's guards, strategy and this instance's state. */
export const make = (guards: ReadonlyArray<Guard>, strategy: Strategy, local: StateStore.Local): Service => {
  const headroomOf = guards.flatMap((g) => (g.tokenHeadroom === undefined ? [] : [g.tokenHeadroom]))
  // One reader for every selection: `select` is synchronous, so setting its moment before each is safe.
  const live = Live.make(local)

  /** The first guard's exclusion of `upstream`, or undefined when all let it through. */
  const checkAll = (upstream: Upstream, info: RequestInfo, request: Request): Exclusion | undefined => {
    for (let i = 0; i < guards.length; i++) {
      const excluded = guards[i]!.check(upstream, info, request)
      if (excluded !== undefined) return excluded
    }
    return undefined
  }

  /** Candidates of the pass's pool, of its lowest priority tier; exclusions go to the decision and the pass. */
  const candidatesOf = (request: Request, pool: Pool, info: RequestInfo): Array<Upstream> => {
    const { decision, pass } = request
    let live: Array<Upstream> = []
    let tier = Number.POSITIVE_INFINITY
    // Pools without hedging, or without its ejections, read nothing more.
    const ejects = Ejection.ejects(pool)
    let ejected: Array<Upstream> | undefined
    for (const upstream of pool.upstreams) {
      if (pass.tried !== undefined && pass.tried.includes(upstream.id)) continue
      const excluded = unfit(request, upstream) ?? checkAll(upstream, info, request)
      if (excluded !== undefined) {
        decision.exclude(excluded)
        if (excluded.waitable === true) request.waitFor(excluded, guards)
        continue
      }
      if (ejects && Ejection.isEjected(local, pool, upstream.id, request.now)) {
        ;(ejected ??= []).push(upstream)
        continue
      }
      live.push(upstream)
      if (upstream.priority < tier) tier = upstream.priority
    }
    if (ejected !== undefined) {
      if (live.length > 0) for (const u of ejected) decision.exclude(Ejection.exclusionOf(local, pool, u))
      else for (const u of (live = ejected)) if (u.priority < tier) tier = u.priority
    }
    if (live.length <= 1) return live
    for (const u of live) if (u.priority !== tier) return live.filter((c) => c.priority === tier)
    return live
  }

  /** Sticky upstream first when it is a candidate; otherwise the strategy. */
  const choose = (
    request: Request,
    pool: Pool,
    info: RequestInfo,
    candidates: ReadonlyArray<Upstream>,
    explore: boolean
  ): Upstream => {
    request.pass.scores = undefined
    const bound = stickyChoice(local, request, pool, info.sessionKey, candidates)
    if (bound !== undefined) return bound
    live.now = request.now
    // A strategy's bug may return nothing, or no object at all: it is caught below.
    const choice: Choice | null | undefined = strategy.select(
      new Choosing(pool, candidates as unknown as readonly [Upstream, ...Array<Upstream>], live, explore, request, info)
    )
    let chosen: Upstream | undefined
    if (typeof choice === "object" && choice !== null && "scores" in choice) {
      chosen = choice.upstream
      request.decision.scores = request.pass.scores = choice.scores
    } else chosen = choice ?? undefined
    if (chosen !== undefined && candidates.includes(chosen)) return chosen
    // A strategy's bug must not send a request where the stages excluded it (disabled, unhealthy,
    // over budget): the first candidate serves instead, and the log says why.
    const name = nameOf(strategy, pool)
    request.after(
      Effect.logWarning(
        `strategy '${name}' chose ${chosen === undefined ? "nothing" : `'${chosen.id}'`}, which is not a candidate of pool '${pool.id}' (${candidates.map((u) => u.id).join(", ")}); using '${candidates[0]!.id}'`
      )
    )
    return candidates[0]!
  }

  /** Enters the pass's pool: the decision names it, and its guards' view of the request is made. */
  const enter = (request: Request, pool: Pool): RequestInfo => {
    const { decision, pass } = request
    if (!decision.pools.includes(pool.id)) decision.pools.push(pool.id)
    decision.pool = pool.id
    decision.strategy = nameOf(strategy, pool)
    pass.tried = request.failed === undefined ? undefined : [...request.failed]
    pass.attempts = 0
    pass.backoff = undefined
    return (pass.info = infoFor(request, pool))
  }

  const next = (request: Request): Selected => {
    const { pass, chain } = request
    for (; pass.pool < chain.length; pass.pool++, pass.info = undefined) {
      const pool = chain[pass.pool]!
      if (pass.info === undefined) {
        if (!request.counted && nearLimit(headroomOf, request, pool)) return COUNT_EXACTLY
        enter(request, pool)
      }
      const attempt = within(request, pool, pass.info!, true)
      if (attempt !== undefined) return { _tag: "Chosen", attempt }
    }
    return UNSERVED
  }

  /**
   * The next attempt in `pool`, the pass's current one, or undefined when it has none; `explore`
   * says whether the strategy may explore (see `Selection.explore`).
   */
  const within = (request: Request, pool: Pool, info: RequestInfo, explore: boolean): Attempt | undefined => {
    const { pass, decision } = request
    if (pass.attempts >= pool.maxAttempts) return undefined
    const candidates = candidatesOf(request, pool, info)
    if (candidates.length === 0) return undefined
    if (decision.candidates.length === 0) decision.candidates = candidates.map((u) => u.id)
    const upstream = choose(request, pool, info, candidates, explore)
    ;(pass.tried ??= []).push(upstream.id)
    let promptTokens = info.promptTokens
    if (upstream.tokens !== undefined || decision.promptTokensRules !== undefined) {
      promptTokens = countedBy(request, upstream)
    }
    return attemptOf(info, upstream, request.attempts + 1, promptTokens, request.pass.scores)
  }

  const another = (request: Request): Attempt | undefined => {
    const { pass, chain } = request
    const pool = chain[pass.pool]
    // A hedge exists to be fast: the best known candidate, never one picked to learn its figure.
    return pool === undefined || pass.info === undefined ? undefined : within(request, pool, pass.info, false)
  }

  return {
    next,
    another,
    nearLimit: (request, pool) => nearLimit(headroomOf, request, pool),
    soonestFree: (request) => soonestFree(guards, request),
    waitableOn: (request, attempt) => waitableOn(guards, request, attempt)
  }
}

/** See {@link Service.nearLimit}; `headroomOf` are the guards' token headroom functions. */
const nearLimit = (
  headroomOf: ReadonlyArray<NonNullable<Guard["tokenHeadroom"]>>,
  request: Request,
  pool: Pool
): boolean => {
  const tokens = request.count.tokens
  const reserved = request.requestedOutputTokens ?? pool.defaultMaxTokens
  for (const upstream of pool.upstreams) {
    if (!upstream.enabled) continue
    if (
      upstream.contextWindow !== undefined &&
      needsExact(tokens, upstream.contextWindow - request.completionRoom, EXACT_MARGIN)
    ) {
      return true
    }
    for (let g = 0; g < headroomOf.length; g++) {
      const headroom = headroomOf[g]!(upstream, request.now)
      if (headroom !== undefined && needsExact(tokens, headroom - reserved, EXACT_MARGIN)) return true
    }
  }
  return false
}

/**
 * Milliseconds until some upstream of the chain that fits the request is expected to take it, from
 * the guards' exclusions (0 when one could now); undefined when only a release can tell.
 */
const soonestFree = (guards: ReadonlyArray<Guard>, request: Request): number | undefined => {
  let soonest: number | undefined
  for (const pool of request.chain) {
    const info = infoFor(request, pool)
    for (const upstream of pool.upstreams) {
      if (!upstream.enabled || !request.fits(upstream)) continue
      // Back when every guard lets it through: the longest of their waits; unknown if any is.
      let wait: number | undefined = 0
      for (const guard of guards) {
        const excluded = guard.check(upstream, info, request)
        if (excluded === undefined) continue
        if (excluded.retryAfterMs === undefined) {
          wait = undefined
          break
        }
        wait = Math.max(wait, excluded.retryAfterMs)
      }
      if (wait !== undefined && (soonest === undefined || wait < soonest)) soonest = wait
    }
  }
  return soonest
}

/** The guards' waitable exclusions of the attempt's upstream now, for the request as that attempt was. */
const waitableOn = (guards: ReadonlyArray<Guard>, request: Request, attempt: Attempt): ReadonlyArray<Exclusion> => {
  const out: Array<Exclusion> = []
  for (const guard of guards) {
    const excluded = guard.check(attempt.upstream, attempt, request)
    if (excluded?.waitable === true) out.push(excluded)
  }
  return out
}

/** Binds a session to the upstream that served it, when the pool keeps sessions. */
export const bindSession = (local: StateStore.Local, request: Request, attempt: Attempt): void => {
  const sticky = attempt.pool.sticky
  if (sticky !== undefined && attempt.sessionKey !== undefined) {
    local.set(`sticky:${attempt.pool.id}:${attempt.sessionKey}`, attempt.upstream.id, request.now, sticky.ttlMs)
  }
}
