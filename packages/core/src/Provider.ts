/**
 * Provider: translates an OpenAI-shaped request to an upstream's API, calls it, and translates the
 * answer back. One service dispatches on `upstream.provider`; `@sluice/providers` ships the
 * implementations and registers their kinds. A call's result carries what the upstream reported
 * about its rate limits, so the rate-limiting stage learns the upstream's real budget.
 */
import type { Effect, Scope } from "effect"
import { Context } from "effect"
import type { RateLimitInfo, UpstreamError } from "./Errors.js"
import type { Source } from "./StreamEvent.js"
import type { Upstream } from "./Topology.js"
import type { ChatCompletion, ChatCompletionRequest, EmbeddingsRequest, EmbeddingsResponse } from "./Wire.js"

export type { RateLimitInfo } from "./Errors.js"
export type { StreamEvent } from "./StreamEvent.js"

/**
 * A request as the router hands it to a provider: the client's request, the model name the upstream
 * knows, and — when the gateway has it — the client's body as received, so a provider that needs to
 * change nothing but `model` can forward the bytes instead of serializing the request again.
 */
export interface Call<R> {
  readonly request: R
  /** The upstream's model name (the upstream's `model`, else the one requested). */
  readonly model: string
  /** The client's JSON body exactly as received, when there is one. */
  readonly body?: string | undefined
  /**
   * The completion tokens to ask for when the request sets no `max_tokens`: its pool's
   * `defaultMaxTokens` (the router passes it). For providers that require a limit (Anthropic).
   */
  readonly defaultMaxTokens?: number | undefined
  /**
   * Whether the caller's spans are exported (the router checked, see `Tracing`): false means the
   * provider makes no span of its own either, without checking again; absent, it checks itself.
   */
  readonly traced?: boolean | undefined
  /**
   * For `chatStream` on a provider that keeps deadlines (see {@link Service.enforcesTimeout}): the
   * milliseconds the upstream has to accept the stream; past them the provider fails with a
   * retryable `timeout` error and cancels the request. Absent, the router times the opening itself.
   */
  readonly openTimeoutMs?: number | undefined
}

/** A whole answer. */
export interface Answer<A> {
  readonly value: A
  /**
   * The answer's JSON text as the upstream sent it, when it can be relayed to the client unchanged
   * (no translation was needed): the gateway writes it instead of serializing `value` again.
   */
  readonly text?: string | undefined
  /** Rate-limit headers of the answer, when it had any. */
  readonly rateLimits?: RateLimitInfo | undefined
}

/** A stream the upstream accepted (status 2xx): its events, and what its headers said about rate limits. */
export interface Opened {
  readonly events: Source
  readonly rateLimits?: RateLimitInfo | undefined
}

/**
 * A request for an endpoint of the upstream's own API that Sluice does not translate: OpenAI's legacy
 * `completions` or its `responses`, sent as the client wrote it with only `model` replaced (and
 * `stream` set as the call is), and answered as the upstream answers.
 */
export interface Forward {
  readonly endpoint: "completions" | "responses"
  /** The client's body, parsed (unknown fields included). */
  readonly body: { readonly model: string; readonly [key: string]: unknown }
}

/** Calls upstreams. */
export interface Service {
  /** A non-streaming chat completion. Failures carry the answer's rate limits (`UpstreamError.rateLimits`). */
  readonly chat: (
    upstream: Upstream,
    call: Call<ChatCompletionRequest>
  ) => Effect.Effect<Answer<ChatCompletion>, UpstreamError>
  /**
   * A streaming chat completion (the request always streams, with usage). Succeeds once the upstream
   * accepted the request; the connection belongs to the scope (closing it closes the connection), and
   * the source ends with an `UpstreamError` if the upstream breaks off or sends a malformed event.
   */
  readonly chatStream: (
    upstream: Upstream,
    call: Call<ChatCompletionRequest>
  ) => Effect.Effect<Opened, UpstreamError, Scope.Scope>
  /** Embeddings. */
  readonly embeddings: (
    upstream: Upstream,
    call: Call<EmbeddingsRequest>
  ) => Effect.Effect<Answer<EmbeddingsResponse>, UpstreamError>
  /**
   * Optional: a whole answer of an endpoint the provider passes through ({@link Forward}); its value
   * is the upstream's JSON. Only called for upstreams whose capabilities name the endpoint.
   */
  readonly forward?: (upstream: Upstream, call: Call<Forward>) => Effect.Effect<Answer<unknown>, UpstreamError>
  /**
   * Optional: a stream of an endpoint the provider passes through; each event's `data` is one SSE
   * payload as the upstream sent it, `usage` read into OpenAI's chat shape and `content` set.
   */
  readonly forwardStream?: (
    upstream: Upstream,
    call: Call<Forward>
  ) => Effect.Effect<Opened, UpstreamError, Scope.Scope>
  /**
   * Optional. True when this provider itself fails a non-streaming call (`chat`, `embeddings`) on
   * `upstream` with a retryable `UpstreamError` of kind `timeout` once `upstream.timeoutMs` has
   * passed in real time, and a stream's opening once its call's `openTimeoutMs` has, cancelling the
   * request. The router then sets no deadline of its own on the live clock (its generic deadline
   * costs a fiber per call); under any other clock (`TestClock`) it always does.
   */
  readonly enforcesTimeout?: (upstream: Upstream) => boolean
}

/** Calls upstreams. */
export class Provider extends Context.Tag("@sluice/core/Provider")<Provider, Service>() {}

/** Parses OpenAI's duration format (`"1s"`, `"6m0s"`, `"12.5s"`, `"250ms"`, `"1h2m3s"`) to milliseconds. */
export const parseDuration = (value: string): number | undefined => {
  const trimmed = value.trim()
  if (trimmed === "") return undefined
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Number(trimmed) * 1000
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g
  let total = 0
  let matched = ""
  for (let m = re.exec(trimmed); m !== null; m = re.exec(trimmed)) {
    const n = Number(m[1])
    total += m[2] === "h" ? n * 3_600_000 : m[2] === "m" ? n * 60_000 : m[2] === "s" ? n * 1000 : n
    matched += m[0]
  }
  return matched === trimmed ? total : undefined
}

const num = (value: string | undefined): number | undefined => {
  if (value === undefined) return undefined
  const n = Number(value)
  return Number.isFinite(n) ? n : undefined
}

/** Every header {@link parseRateLimitHeaders} reads. */
const RATE_LIMIT_HEADERS = [
  "x-ratelimit-limit-requests",
  "x-ratelimit-remaining-requests",
  "x-ratelimit-reset-requests",
  "x-ratelimit-limit-tokens",
  "x-ratelimit-remaining-tokens",
  "x-ratelimit-reset-tokens",
  "anthropic-ratelimit-requests-limit",
  "anthropic-ratelimit-requests-remaining",
  "anthropic-ratelimit-requests-reset",
  "anthropic-ratelimit-tokens-limit",
  "anthropic-ratelimit-tokens-remaining",
  "anthropic-ratelimit-tokens-reset",
  "retry-after",
  "retry-after-ms"
]

/**
 * Milliseconds to wait from an answer's `retry-after-ms`, else its `retry-after` (RFC 9110: seconds
 * or an HTTP date, converted with `now`, epoch milliseconds); undefined when it names no wait.
 */
export const retryAfterMs = (
  headers: Readonly<Record<string, string | undefined>>,
  now: number
): number | undefined => {
  const ms = num(headers["retry-after-ms"])
  if (ms !== undefined) return Math.max(0, ms)
  const value = headers["retry-after"]
  if (value === undefined) return undefined
  const seconds = num(value)
  if (seconds !== undefined) return Math.max(0, seconds * 1000)
  return msUntil(value, now)
}

/** Milliseconds from `now` until an HTTP or RFC 3339 date; undefined if it is not one. */
const msUntil = (date: string, now: number): number | undefined => {
  const at = Date.parse(date)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}

/**
 * Reads rate-limit headers (lower-case names): OpenAI / Groq `x-ratelimit-{limit,remaining,reset}-
 * {requests,tokens}` and Anthropic `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`
 * (reset as an RFC 3339 time, converted with `now`). Undefined when there are none.
 */
export const parseRateLimitHeaders = (
  headers: Readonly<Record<string, string | undefined>>,
  now: number
): RateLimitInfo | undefined => {
  // Most answers carry none of these: skip the work on the hot path.
  if (!RATE_LIMIT_HEADERS.some((name) => headers[name] !== undefined)) return undefined
  const anthropicReset = (value: string | undefined) => (value === undefined ? undefined : msUntil(value, now))
  const info: Record<string, number | undefined> = {
    limitRequests: num(headers["x-ratelimit-limit-requests"] ?? headers["anthropic-ratelimit-requests-limit"]),
    remainingRequests: num(
      headers["x-ratelimit-remaining-requests"] ?? headers["anthropic-ratelimit-requests-remaining"]
    ),
    resetRequestsMs:
      headers["x-ratelimit-reset-requests"] !== undefined
        ? parseDuration(headers["x-ratelimit-reset-requests"])
        : anthropicReset(headers["anthropic-ratelimit-requests-reset"]),
    limitTokens: num(headers["x-ratelimit-limit-tokens"] ?? headers["anthropic-ratelimit-tokens-limit"]),
    remainingTokens: num(headers["x-ratelimit-remaining-tokens"] ?? headers["anthropic-ratelimit-tokens-remaining"]),
    resetTokensMs:
      headers["x-ratelimit-reset-tokens"] !== undefined
        ? parseDuration(headers["x-ratelimit-reset-tokens"])
        : anthropicReset(headers["anthropic-ratelimit-tokens-reset"])
  }
  info["retryAfterMs"] = retryAfterMs(headers, now)
  let out: Record<string, number> | undefined
  for (const k in info) {
    const v = info[k]
    if (v !== undefined) (out ??= {})[k] = v
  }
  return out as RateLimitInfo | undefined
}
