/**
 * One request as it moves through the stages: a small record passed explicitly from stage to stage
 * (instead of variables shared by nested closures). It is also the {@link Guard.Step} of the
 * synchronous parts: `now` is refreshed before each, and effects a guard leaves with `after` run on
 * the request's fiber once the part is over.
 */
import type { Clock, Tracer } from "effect"
import { Effect } from "effect"
import type { Builder, Decision } from "../Decision.js"
import type { Exclusion, UpstreamError } from "../Errors.js"
import type { Attempt, Guard, RequestInfo, Step } from "../Guard.js"
import { versions } from "../Guard.js"
import type { Match } from "../Matcher.js"
import type { Count, Rules } from "../TokenCounter.js"
import type { Pool, Upstream } from "../Topology.js"
import type { Ticket } from "./admissionQueue.js"

/** Per-request options. */
export interface RouteOptions {
  /** Correlates logs, traces and the audit log; generated when absent. */
  readonly requestId?: string
  /** Session affinity key; overrides what the pool's `sticky.key` would read from the request. */
  readonly sessionKey?: string
  /** Request headers (lower-case names), for `sticky.key: header`. */
  readonly headers?: Readonly<Record<string, string | undefined>>
  /** The client's API key, for `sticky.key: api-key`. Only hashed into state, never stored as is. */
  readonly apiKey?: string
  /** Higher is more urgent in the queue; 0 by default. */
  readonly priority?: number
  /**
   * The client's JSON body exactly as received (the gateway passes it), so a provider that needs to
   * change nothing but `model` forwards the bytes instead of serializing the request again.
   */
  readonly body?: string
  /** Upstreams not to try (a stream's continuation avoids the one that broke off). */
  readonly avoid?: ReadonlyArray<string>
  /**
   * Called with the decision of a request interrupted before its answer (its client went away),
   * which no return value can carry — the gateway audits it. Synchronous.
   */
  readonly onInterrupted?: (decision: Decision) => void
}

/** A prompt's token count: a synchronous estimate, and the exact count asked for near a limit. */
export interface Prompt {
  readonly estimate: (poolModel: string) => Count
  readonly exact: (poolModel: string) => Effect.Effect<Count>
  /** A hash of the prompt's prefix, for strategies that key on it (see `Strategy.Selection.prefixHash`). */
  readonly prefixHash?: () => number | undefined
  /** The count as an upstream that counts by `rules` would make it (a chat prompt; see `TokenCounter.Rules`). */
  readonly as?: (model: string, rules: Rules) => Count
}

/** Where a pass over the fallback chain stands. */
export interface Pass {
  /** Index in `chain` of the pool being tried. */
  pool: number
  /** Attempts made on that pool in this pass. */
  attempts: number
  /** Upstreams not to select again in this pass (tried, or failed earlier in the request); a handful at most. */
  tried: Array<string> | undefined
  /** The pool's `RequestInfo` for the guards, made when the pass enters the pool. */
  info: RequestInfo | undefined
  /** Exclusions of this pass that clear by themselves: a reason to wait in the queue (made on the first). */
  waitable: Array<Exclusion> | undefined
  /**
   * The guards' versions when the first of them was found: the queue waits for a change since then,
   * so capacity freed later in the pass (during a long attempt on another upstream) is not missed.
   */
  versions: ReadonlyArray<number> | undefined
  /** The backoff schedule's state on this pool, from its first failure on. */
  backoff: unknown
  /** The scores the strategy returned with its last choice; undefined when it returned none (or a sticky session chose). */
  scores: Readonly<Record<string, number>> | undefined
}

/** Decides which of a request's concurrent attempts serves it (see `Request.race`). */
export interface Race {
  /** True for the first attempt to ask (and for it again), false for any other. Synchronous. */
  readonly claim: (attempt: object) => boolean
}

/** A request in flight through the stages. */
export class Request implements Step {
  /** Epoch milliseconds of the current synchronous part, from `clock`. */
  now: number
  count: Count
  /** True once the prompt was counted exactly. */
  counted = false
  /** Upstreams that failed (other than with a 429): never tried again in this request. */
  failed: Array<string> | undefined = undefined
  lastError: UpstreamError | undefined = undefined
  /** The last attempt made (its pool and the guards' view of the request), once one was. */
  lastAttempt: Attempt | undefined = undefined
  /** Attempts made so far, over every pool. */
  attempts = 0
  pass: Pass
  /** The request's place in the queue, while it has one. */
  ticket: Ticket | undefined = undefined
  waitStartedAt: number | undefined = undefined
  /**
   * The release of a stream this request started, set as the stream is handed over: if routing then
   * ends without returning it (interrupted just after the first event), the router runs it, as
   * nobody else holds the stream.
   */
  unclaimed: Effect.Effect<void> | undefined = undefined
  /** The capabilities the request needs, when it needs any (see `Capabilities.needsOf`). */
  needs: ReadonlyArray<string> | undefined = undefined
  /**
   * In a pool that hedges streams (see `Hedge`): asked by an attempt whose first content has come
   * whether it is the first, and so serves the request; the other one lost. Undefined elsewhere.
   */
  race: Race | undefined = undefined
  /** The pools that hedge whose budget has counted this request (once each; see `Hedge`). */
  hedgeCounted: Array<string> | undefined = undefined
  /**
   * Makes an effect interruptible as the caller of the route was. A route runs uninterruptibly — so
   * that whatever ends it, its handlers finish its attempts and leave the queue, with no mask per
   * attempt — except where it waits: the provider call, the queue, a backoff, an exact count.
   */
  restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R> = identity
  /** Ends the request for the router's count of requests in flight; see {@link end}. */
  onEnd: (() => void) | undefined = undefined
  private pending: Array<Effect.Effect<void>> | undefined = undefined
  /** Counts by other rules than the request's own, by rules and model (see {@link countFor}). */
  private counts: Map<string, Count> | undefined = undefined

  constructor(
    readonly clock: Clock.Clock,
    readonly span: Tracer.Span | undefined,
    readonly match: Match,
    /** The matched pool and its fallbacks, in order. */
    readonly chain: ReadonlyArray<Pool>,
    readonly options: RouteOptions | undefined,
    readonly user: string | undefined,
    readonly stream: boolean,
    /** `max_tokens` (or its equivalents) when the client set it. */
    readonly requestedOutputTokens: number | undefined,
    readonly prompt: Prompt,
    readonly decision: Builder,
    readonly random: () => number
  ) {
    this.now = decision.startedAt
    this.count = { tokens: decision.promptTokens, exact: decision.promptTokensExact }
    this.pass = newPass()
  }

  /** Higher is more urgent in the queue. */
  get priority(): number {
    return this.options?.priority ?? 0
  }

  /**
   * Room the completion needs in a context window: what the client asked for, else one token.
   * (Budgets reserve the pool's `defaultMaxTokens` instead; a window is a hard limit the upstream
   * enforces on what was asked.)
   */
  get completionRoom(): number {
    return this.requestedOutputTokens ?? 1
  }

  /**
   * The prompt's count as `upstream` counts it: the request's own, unless its provider counts by
   * other rules (`Upstream.tokens`), whose estimate is made once per rules and model.
   */
  countFor(upstream: Upstream): Count {
    const rules = upstream.tokens
    if (rules === undefined || this.prompt.as === undefined) return this.count
    const model = upstream.model ?? this.match.model
    const key = `${rules} ${model}`
    let count = (this.counts ??= new Map()).get(key)
    if (count === undefined) this.counts.set(key, (count = this.prompt.as(model, rules)))
    return count
  }

  /** Whether the prompt, as `upstream` counts it, and the completion's room fit its context window. */
  fits(upstream: Upstream): boolean {
    const window = upstream.contextWindow
    return window === undefined || this.countFor(upstream).tokens + this.completionRoom <= window
  }

  /** Refreshes `now` from the clock, for the next synchronous part. */
  tick(): this {
    this.now = this.clock.unsafeCurrentTimeMillis()
    return this
  }

  after(effect: Effect.Effect<void>): void {
    ;(this.pending ??= []).push(effect)
  }

  /** The effects left by the last synchronous parts, to run now; `Effect.void` when there are none. */
  flush(): Effect.Effect<void> {
    const effects = this.pending
    if (effects === undefined) return Effect.void
    this.pending = undefined
    return Effect.forEach(effects, (effect) => effect, { discard: true })
  }

  /** Keeps an exclusion that clears by itself as a reason to wait; the first one fixes the versions to wait from. */
  waitFor(exclusion: Exclusion, guards: ReadonlyArray<Guard>): void {
    const pass = this.pass
    if (pass.waitable === undefined) {
      pass.waitable = []
      pass.versions = versions(guards)
    }
    pass.waitable.push(exclusion)
  }

  /** The request is over (its answer or error is ready; a stream's, released): counted once. */
  end(): void {
    const onEnd = this.onEnd
    this.onEnd = undefined
    onEnd?.()
  }

  /** Starts a new pass over the fallback chain (after a wait in the queue). */
  restart(): void {
    this.pass = newPass()
  }
}

const identity = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => effect

const newPass = (): Pass => ({
  pool: 0,
  attempts: 0,
  tried: undefined,
  info: undefined,
  waitable: undefined,
  versions: undefined,
  backoff: undefined,
  scores: undefined
})
