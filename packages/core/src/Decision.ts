/**
 * Decision: what the router did with one request and why — the pool, the candidates, every
 * exclusion with its reason, the strategy, each attempt and its outcome, tokens and timing. It is
 * returned with every response, recorded on the trace, and kept in the audit log.
 */
import type { Exclusion } from "./Errors.js"

/** One attempt on one upstream. */
export interface AttemptRecord {
  readonly attempt: number
  readonly pool: string
  readonly upstream: string
  readonly outcome: "success" | "failure" | "interrupted"
  readonly latencyMs: number
  /** The upstream's HTTP status, when it answered with an error. */
  readonly status?: number
  readonly error?: string
  /**
   * The scores the strategy gave the candidates when it chose this attempt's upstream (a retry's and
   * a hedge's selection score anew); absent when the strategy returned none or a sticky session chose.
   */
  readonly scores?: Readonly<Record<string, number>>
}

/** A stream continued by another upstream after its upstream failed mid-stream (a pool's `stream.resume`). */
export interface Resumption {
  /** The upstream that continued. */
  readonly upstream: string
  /** The continuation's own request id (`<id>-resume-<n>`), as its trace and logs name it. */
  readonly requestId: string
  /** Characters of content the client had received when the stream broke off. */
  readonly afterChars: number
  /** The failure that broke it off. */
  readonly after: string
}

/** A hedged stream: its two attempts, and which delivered content first. */
export interface Hedge {
  /** The upstream of the attempt that was hedged. */
  readonly primary: string
  /** The upstream of the hedge, the second attempt. */
  readonly hedge: string
  /** Milliseconds after the hedged attempt was admitted when the hedge started. */
  readonly afterMs: number
  /** The upstream that delivered content first; undefined when neither did. */
  readonly winner: string | undefined
  /** The other upstream; undefined when neither delivered. */
  readonly loser: string | undefined
  /** Why the loser lost (slower to first content, or how it failed), or how both failed. */
  readonly reason: string | undefined
}

/** What the router did with one request. */
export interface Decision {
  readonly requestId: string
  /** `completions` and `responses` are requests forwarded to an endpoint of the upstream's own API. */
  readonly operation: "chat" | "embeddings" | "completions" | "responses"
  readonly stream: boolean
  /** The model the client asked for. */
  readonly model: string
  /** The pools tried, in order (the first is the matched pool, the rest fallbacks). */
  readonly pools: ReadonlyArray<string>
  /** The pool of the last attempt. */
  readonly pool: string
  readonly strategy: string
  /**
   * The scores the strategy gave upstreams, by upstream id, when it scores (what it compared: in
   * flight per weight, milliseconds, dollars...; the strategy's docs say which): those of the
   * selection that chose the attempt that served — after a hedge, the winner's, whichever of the two
   * was chosen last — and undefined when that one was chosen without scores (a sticky session, a
   * strategy that returns none). When none served, those of the last selection that scored.
   * Each attempt's own are in its {@link AttemptRecord.scores}.
   */
  readonly scores: Readonly<Record<string, number>> | undefined
  /** Upstreams that were candidates on the first selection. */
  readonly candidates: ReadonlyArray<string>
  /** Every upstream left out, with the stage and reason (one entry per upstream and reason). */
  readonly excluded: ReadonlyArray<Exclusion>
  /** The upstream that served the request, if one did. */
  readonly upstream: string | undefined
  /** The serving upstream's provider kind (`openai`, `anthropic`...), if one served. */
  readonly provider?: string | undefined
  /** The model the upstream said it answered with (its answer's `model`), when it said. */
  readonly responseModel?: string | undefined
  readonly attempts: ReadonlyArray<AttemptRecord>
  /** Time spent waiting in the pool's queue for capacity, in milliseconds. */
  readonly queueWaitMs: number
  /** Time spent backing off between attempts, in milliseconds. */
  readonly backoffMs: number
  /** Session affinity: `hit` (went to the session's upstream), `miss` (new session), `moved` (its upstream could not serve). */
  readonly sticky: "hit" | "miss" | "moved" | undefined
  readonly promptTokens: number
  /** True when `promptTokens` was counted with the model's own tokenizer. */
  readonly promptTokensExact: boolean
  /**
   * True when `promptTokens` was counted with a tokenizer (a limit was near); false when the fast
   * calibrated estimate decided (every limit was far).
   */
  readonly promptTokensCounted: boolean
  /**
   * How the upstream of the last attempt counts prompt tokens, when not by OpenAI's tiktoken rule
   * for the model's name (`TokenCounter.Rules`: `anthropic`, `gemini`, `estimate`): `promptTokens`
   * is then that rule's count, an estimate. Undefined for the default.
   */
  readonly promptTokensRules: string | undefined
  /**
   * A stream's continuations, when its upstream failed after content and another continued it;
   * `attempts` then lists the continuations' attempts too, and `upstream` the one that ended it.
   */
  readonly resumed?: ReadonlyArray<Resumption>
  readonly inputTokens: number | undefined
  readonly outputTokens: number | undefined
  readonly outcome: "success" | "error" | "interrupted"
  /** The error tag and message when the outcome is an error. */
  readonly error: string | undefined
  /** Epoch milliseconds (from the Clock) when routing started. */
  readonly startedAt: number
  readonly durationMs: number
  /** For a stream: milliseconds from when routing started to its first content event. */
  readonly firstChunkMs: number | undefined
  /**
   * Set when a hedge started (see `Hedge`): the last race, the one whose winner served when one
   * did. An earlier race of the request failed entirely (both attempts, listed in `attempts`), or it
   * would have served: {@link hedges} counts it.
   */
  readonly hedge: Hedge | undefined
  /**
   * Hedges started for the request, over all its attempts: 0 without any, 2 when a race failed
   * entirely and a later attempt was hedged again (each counted in the pool's hedge budget too).
   */
  readonly hedges: number
}

/** Span attributes for a decision (OpenTelemetry GenAI names where they exist, `sluice.*` otherwise). */
export const spanAttributes = (d: Decision): Record<string, unknown> => {
  const attributes: Record<string, unknown> = {
    "gen_ai.operation.name": d.operation,
    "gen_ai.request.model": d.model,
    "sluice.request_id": d.requestId,
    "sluice.stream": d.stream,
    "sluice.pool": d.pool,
    "sluice.pools": [...d.pools],
    "sluice.strategy": d.strategy,
    "sluice.decision.candidates": [...d.candidates],
    "sluice.decision.excluded": d.excluded.map((e) => `${e.upstream}: ${e.stage}: ${e.reason}`),
    "sluice.attempts": d.attempts.length,
    "sluice.queue_wait_ms": d.queueWaitMs,
    "sluice.backoff_ms": d.backoffMs,
    "sluice.tokens.prompt": d.promptTokens,
    "sluice.tokens.prompt_exact": d.promptTokensExact,
    "sluice.tokens.prompt_counted": d.promptTokensCounted,
    "sluice.outcome": d.outcome
  }
  if (d.upstream !== undefined) attributes["sluice.upstream"] = d.upstream
  if (d.provider !== undefined) attributes["gen_ai.provider.name"] = d.provider
  if (d.responseModel !== undefined) attributes["gen_ai.response.model"] = d.responseModel
  if (d.sticky !== undefined) attributes["sluice.sticky"] = d.sticky
  if (d.scores !== undefined) attributes["sluice.strategy.scores"] = scoreList(d.scores)
  if (d.promptTokensRules !== undefined) attributes["sluice.tokens.prompt_rules"] = d.promptTokensRules
  if (d.inputTokens !== undefined) attributes["gen_ai.usage.input_tokens"] = d.inputTokens
  if (d.outputTokens !== undefined) attributes["gen_ai.usage.output_tokens"] = d.outputTokens
  if (d.error !== undefined) attributes["sluice.error"] = d.error
  if (d.firstChunkMs !== undefined) attributes["sluice.time_to_first_chunk_ms"] = d.firstChunkMs
  if (d.hedge !== undefined) {
    attributes["sluice.hedged"] = true
    attributes["sluice.hedges"] = d.hedges
    attributes["sluice.hedge.upstream"] = d.hedge.hedge
    attributes["sluice.hedge.after_ms"] = d.hedge.afterMs
    if (d.hedge.loser !== undefined) attributes["sluice.hedge.loser"] = d.hedge.loser
    if (d.hedge.reason !== undefined) attributes["sluice.hedge.reason"] = d.hedge.reason
  }
  return attributes
}

/** Scores as the `sluice.strategy.scores` span attribute lists them: `<upstream>=<score>`. */
export const scoreList = (scores: Readonly<Record<string, number>>): Array<string> => {
  const list: Array<string> = []
  for (const id in scores) list.push(`${id}=${scores[id]}`)
  return list
}

/** A decision's fields, writable while the request moves through the stages. */
type Mutable<T> = { -readonly [K in keyof T]: T[K] }

/**
 * Builds a {@link Decision} as the request moves through the stages: each stage sets what it
 * decided on the builder, which is itself the decision once {@link Builder.end} has set how it
 * ended (no copy: a request ends once, and nothing changes a decision after that).
 */
export class Builder implements Mutable<Omit<Decision, "pools" | "excluded" | "attempts">> {
  readonly pools: Array<string> = []
  readonly excluded: Array<Exclusion> = []
  readonly attempts: Array<AttemptRecord> = []
  /** Upstreams that were candidates on the first selection; empty until one was made. */
  candidates: ReadonlyArray<string> = []
  upstream: string | undefined = undefined
  provider: string | undefined = undefined
  responseModel: string | undefined = undefined
  queueWaitMs = 0
  backoffMs = 0
  sticky: Decision["sticky"] = undefined
  scores: Decision["scores"] = undefined
  promptTokensCounted = false
  promptTokensRules: string | undefined = undefined
  inputTokens: number | undefined = undefined
  outputTokens: number | undefined = undefined
  outcome: Decision["outcome"] = "interrupted"
  error: string | undefined = undefined
  durationMs = 0
  firstChunkMs: number | undefined = undefined
  hedge: Hedge | undefined = undefined
  hedges = 0

  constructor(
    readonly requestId: string,
    readonly operation: Decision["operation"],
    readonly stream: boolean,
    readonly model: string,
    public pool: string,
    public strategy: string,
    public promptTokens: number,
    public promptTokensExact: boolean,
    readonly startedAt: number
  ) {}

  /** Records why an upstream was left out (once per upstream and reason). */
  exclude(exclusion: Exclusion): void {
    for (const e of this.excluded) if (e.upstream === exclusion.upstream && e.reason === exclusion.reason) return
    this.excluded.push(exclusion)
  }

  /** Ends the decision at `now` with `outcome`: from here on it is the request's {@link Decision}. */
  end(now: number, outcome: Decision["outcome"], error: string | undefined): Decision {
    this.outcome = outcome
    this.error = error
    this.durationMs = Math.max(0, now - this.startedAt)
    return this
  }
}
