/**
 * Provider: translates an OpenAI-shaped request to an upstream's API, calls it, and translates the
 * answer back. One service dispatches on `upstream.provider`; `@sluice/providers` ships the
 * implementations. Requests arrive with `model` already set to the upstream's model name.
 */
import type { Effect, Scope, Stream } from "effect"
import { Context, FiberRef } from "effect"
import type { UpstreamError } from "./Errors.js"
import type { Upstream } from "./Topology.js"
import type { ChatCompletion, ChatCompletionRequest, EmbeddingsRequest, EmbeddingsResponse, Usage } from "./Wire.js"

/**
 * One streamed event. `data` is the JSON text of one OpenAI `chat.completion.chunk`, exactly as it
 * goes to the client (passed through untouched where no translation is needed).
 */
export interface StreamEvent {
  readonly data: string
  /** Usage, when this event carries it (the final chunk with `stream_options.include_usage`). */
  readonly usage?: Usage
  /** True for a usage-only chunk (`choices: []`) that carries no content. */
  readonly usageOnly?: boolean
}

/** Calls upstreams. */
export interface Service {
  /** A non-streaming chat completion. */
  readonly chat: (upstream: Upstream, request: ChatCompletionRequest) => Effect.Effect<ChatCompletion, UpstreamError>
  /**
   * A streaming chat completion. Succeeds once the upstream accepted the request (status 2xx); the
   * connection belongs to the scope, and the stream fails with an `UpstreamError` if the upstream
   * breaks off.
   */
  readonly chatStream: (
    upstream: Upstream,
    request: ChatCompletionRequest
  ) => Effect.Effect<Stream.Stream<StreamEvent, UpstreamError>, UpstreamError, Scope.Scope>
  /** Embeddings. */
  readonly embeddings: (
    upstream: Upstream,
    request: EmbeddingsRequest
  ) => Effect.Effect<EmbeddingsResponse, UpstreamError>
  /**
   * Optional. True when this provider itself fails a non-streaming call (`chat`, `embeddings`) on
   * `upstream` with a retryable `UpstreamError` of kind `timeout` once `upstream.timeoutMs` has
   * passed in real time, and cancels the request. The router then sets no deadline of its own on the
   * live clock (its generic deadline costs a fiber per call); under any other clock (`TestClock`) it
   * always does.
   */
  readonly enforcesTimeout?: (upstream: Upstream) => boolean
}

/** Calls upstreams. */
export class Provider extends Context.Tag("@sluice/core/Provider")<Provider, Service>() {}

/**
 * Rate-limit state an upstream reported in its response headers (OpenAI / Groq `x-ratelimit-*`,
 * Anthropic `anthropic-ratelimit-*`). Durations are milliseconds from when the answer arrived.
 */
export interface RateLimitInfo {
  readonly limitRequests?: number
  readonly remainingRequests?: number
  readonly resetRequestsMs?: number
  readonly limitTokens?: number
  readonly remainingTokens?: number
  readonly resetTokensMs?: number
  /** From `retry-after-ms` / `retry-after` on a 429. */
  readonly retryAfterMs?: number
}

/**
 * Where a provider reports the rate-limit headers of the answer it just received. The router clears
 * it before each attempt and hands what it finds to the guards in the attempt's `Outcome`, so the
 * rate-limiting stage learns the upstream's real budget. Optional for providers.
 */
export const currentRateLimits: FiberRef.FiberRef<RateLimitInfo | undefined> = FiberRef.unsafeMake<
  RateLimitInfo | undefined
>(undefined)

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
