/**
 * The errors a routing pipeline can fail with. Each carries what a caller needs to act on it and maps
 * to OpenAI's error envelope and an HTTP status with {@link toOpenAI}.
 */
import { Schema } from "effect"
import { unsupported } from "./Capabilities.js"
import type { Decision } from "./Decision.js"

/**
 * The decision of a request that failed after routing began: every attempt, exclusion and wait. It
 * travels with the error so that an error answer tells as much as a success (the gateway's
 * `x-sluice-*` headers and `sluice_attempts`).
 */
const DecisionOf = Schema.optional(
  Schema.declare((u: unknown): u is Decision => typeof u === "object" && u !== null && "requestId" in u, {
    identifier: "Decision"
  })
)

/** No pool serves the requested model. HTTP 404. */
export class ModelNotFound extends Schema.TaggedError<ModelNotFound>()("ModelNotFound", {
  model: Schema.String,
  known: Schema.Array(Schema.String)
}) {
  override get message(): string {
    const known = this.known.length > 0 ? this.known.join(", ") : "none configured"
    return `no pool serves model '${this.model}'; known models: ${known}`
  }
}

/** The request body is malformed. HTTP 400; `param` names the offending field. */
export class InvalidRequest extends Schema.TaggedError<InvalidRequest>()("InvalidRequest", {
  message: Schema.String,
  param: Schema.optional(Schema.String)
}) {}

/** The request body is over the configured size limit. HTTP 413. */
export class RequestTooLarge extends Schema.TaggedError<RequestTooLarge>()("RequestTooLarge", {
  limitBytes: Schema.Number
}) {
  override get message(): string {
    return `request body is larger than the limit of ${this.limitBytes} bytes; send a smaller request or raise server.maxBodyBytes`
  }
}

/** The prompt plus `max_tokens` fits the context window of no upstream of the pool or its fallbacks. HTTP 400. */
export class ContextLengthExceeded extends Schema.TaggedError<ContextLengthExceeded>()("ContextLengthExceeded", {
  pool: Schema.String,
  promptTokens: Schema.Number,
  maxTokens: Schema.Number,
  largestContextWindow: Schema.Number,
  decision: DecisionOf
}) {
  override get message(): string {
    const needs =
      this.maxTokens > 0
        ? `${this.promptTokens + this.maxTokens} tokens (${this.promptTokens} in the prompt + ${this.maxTokens} for the completion)`
        : `${this.promptTokens} prompt tokens and room for a completion`
    return (
      `this request needs ${needs}, but the largest context window in pool '${this.pool}' and its ` +
      `fallbacks is ${this.largestContextWindow} tokens; shorten the messages${this.maxTokens > 0 ? " or lower max_tokens" : ""}`
    )
  }
}

/** Why one upstream was not a candidate. */
export const Exclusion = Schema.Struct({
  upstream: Schema.String,
  /** The stage that excluded it: "disabled", "context-window", "circuit-breaker", "health", ... */
  stage: Schema.String,
  reason: Schema.String,
  /** When the upstream may be able to serve again, if the stage knows. */
  retryAfterMs: Schema.optional(Schema.Number),
  /**
   * True when the exclusion clears by itself as time passes or requests finish (a spent budget, a
   * full concurrency limit), so a request may wait in the pool's queue for it. False or absent for
   * exclusions that waiting does not cure soon (disabled, unhealthy, open breaker).
   */
  waitable: Schema.optional(Schema.Boolean),
  /**
   * True when capacity may come back before `retryAfterMs` (an upper bound then): requests in flight
   * hold reservations that are refunded when they finish. A queued request waits for that rather
   * than being refused as "longer than the queue's wait".
   */
  mayFreeSooner: Schema.optional(Schema.Boolean)
})
/** Why one upstream was not a candidate. */
export type Exclusion = typeof Exclusion.Type

/** Every upstream of the pool (and its fallbacks) is excluded or failed. HTTP 503 with `Retry-After`. */
export class NoUpstreamAvailable extends Schema.TaggedError<NoUpstreamAvailable>()("NoUpstreamAvailable", {
  pool: Schema.String,
  exclusions: Schema.Array(Exclusion),
  retryAfterSeconds: Schema.Number,
  decision: DecisionOf
}) {
  override get message(): string {
    const why = this.exclusions.map((e) => `${e.upstream}: ${e.reason}`).join("; ")
    return `no upstream of pool '${this.pool}' can serve this request now (${why || "no upstreams"}); retry after ${this.retryAfterSeconds}s`
  }
}

/** Sluice itself refuses the request for now (queue full or wait past the deadline). HTTP 429 with `Retry-After`. */
export class RateLimited extends Schema.TaggedError<RateLimited>()("RateLimited", {
  pool: Schema.String,
  reason: Schema.String,
  retryAfterSeconds: Schema.Number,
  decision: DecisionOf
}) {
  override get message(): string {
    return `pool '${this.pool}' is at capacity: ${this.reason}; retry after ${this.retryAfterSeconds}s`
  }
}

/**
 * Rate-limit state an upstream reported in its response headers (OpenAI / Groq `x-ratelimit-*`,
 * Anthropic `anthropic-ratelimit-*`). Durations are milliseconds from when the answer arrived.
 */
export const RateLimitInfo = Schema.Struct({
  limitRequests: Schema.optional(Schema.Number),
  remainingRequests: Schema.optional(Schema.Number),
  resetRequestsMs: Schema.optional(Schema.Number),
  limitTokens: Schema.optional(Schema.Number),
  remainingTokens: Schema.optional(Schema.Number),
  resetTokensMs: Schema.optional(Schema.Number),
  /** From `retry-after-ms` / `retry-after` on a 429. */
  retryAfterMs: Schema.optional(Schema.Number)
})
/** Rate-limit state an upstream reported in its response headers. */
export type RateLimitInfo = typeof RateLimitInfo.Type

/** What went wrong with an upstream call: the classes {@link Failure} builds. */
export const FailureKind = Schema.Literal("http", "timeout", "connection", "protocol")
/** What went wrong with an upstream call. */
export type FailureKind = typeof FailureKind.Type

/**
 * An upstream call failed. `retryable` says whether another attempt (on another upstream) may
 * succeed; `status` is the upstream's HTTP status when it answered. Build one with {@link Failure},
 * which decides `retryable` for each class in one place.
 */
export class UpstreamError extends Schema.TaggedError<UpstreamError>()("UpstreamError", {
  upstream: Schema.String,
  /** "http" (answered with an error status), "timeout", "connection", "protocol" (unreadable answer) */
  kind: FailureKind,
  status: Schema.optional(Schema.Number),
  message: Schema.String,
  retryable: Schema.Boolean,
  /** From the upstream's `Retry-After` / `retry-after-ms`, when it sent one. */
  retryAfterMs: Schema.optional(Schema.Number),
  /** The upstream's own error body, when it sent a parsable one. */
  body: Schema.optional(Schema.Unknown),
  /** The rate-limit headers of the failed answer, when it had any. */
  rateLimits: Schema.optional(RateLimitInfo),
  /**
   * The feature this upstream cannot take, when it refused the request before sending it (see
   * {@link Failure.unsupported}): the router excludes it and tries another.
   */
  unsupported: Schema.optional(Schema.String),
  decision: DecisionOf
}) {}

/** Whether an upstream HTTP status is worth another attempt elsewhere: 408, 409, 425, 429 and 5xx. */
export const retryableStatus = (status: number): boolean =>
  status === 408 || status === 409 || status === 425 || status === 429 || status >= 500

/** What an upstream said with a failed answer, beyond its status. */
export interface Answered {
  readonly retryAfterMs?: number | undefined
  readonly body?: unknown
  readonly rateLimits?: RateLimitInfo | undefined
}

/**
 * Every class of upstream failure, built in one place: whether it is retryable is decided here, not
 * at each call site. Messages say what happened.
 */
export const Failure = {
  /** The upstream answered with an error status; retryable per {@link retryableStatus}. */
  http: (upstream: string, status: number, message: string, answered: Answered = {}): UpstreamError =>
    new UpstreamError({
      upstream,
      kind: "http",
      status,
      message,
      retryable: retryableStatus(status),
      ...(answered.retryAfterMs !== undefined ? { retryAfterMs: answered.retryAfterMs } : {}),
      ...(answered.body !== undefined ? { body: answered.body } : {}),
      ...(answered.rateLimits !== undefined ? { rateLimits: answered.rateLimits } : {})
    }),
  /**
   * The upstream's provider cannot express `feature` (found while translating, nothing was sent): a
   * 400 that is not retried on this upstream, but to the router an exclusion of it, stage
   * `capabilities` — another upstream of the pool may serve the request.
   */
  unsupported: (upstream: string, feature: string, message: string): UpstreamError =>
    new UpstreamError({ upstream, kind: "http", status: 400, message, retryable: false, unsupported: feature }),
  /** No answer (or no next event) in time; retryable. */
  timeout: (upstream: string, message: string): UpstreamError =>
    new UpstreamError({ upstream, kind: "timeout", message, retryable: true }),
  /** The upstream could not be reached, or broke off; retryable. */
  connection: (upstream: string, message: string): UpstreamError =>
    new UpstreamError({ upstream, kind: "connection", message, retryable: true }),
  /** The answer could not be read or is not what the protocol says (a malformed event); retryable. */
  protocol: (upstream: string, message: string, body?: unknown): UpstreamError =>
    new UpstreamError({
      upstream,
      kind: "protocol",
      message,
      retryable: true,
      ...(body !== undefined ? { body } : {})
    })
} as const

/** The error with the decision of the request it ended (see each error's `decision`). */
export const withDecision = (error: RouterError, decision: Decision): RouterError => {
  switch (error._tag) {
    case "UpstreamError":
      return new UpstreamError({ ...fieldsOf(error, UpstreamError.fields), decision }, { disableValidation: true })
    case "NoUpstreamAvailable":
      return new NoUpstreamAvailable(
        { ...fieldsOf(error, NoUpstreamAvailable.fields), decision },
        { disableValidation: true }
      )
    case "RateLimited":
      return new RateLimited({ ...fieldsOf(error, RateLimited.fields), decision }, { disableValidation: true })
    case "ContextLengthExceeded":
      return new ContextLengthExceeded(
        { ...fieldsOf(error, ContextLengthExceeded.fields), decision },
        { disableValidation: true }
      )
    default:
      return error
  }
}

/** An error's own schema fields (present ones only), to build a copy with one more. */
const fieldsOf = <E, F extends Record<string, unknown>>(error: E, fields: F): Omit<E, "_tag"> => {
  const out: Record<string, unknown> = {}
  for (const key in fields) {
    if (key === "_tag") continue
    const value = (error as Record<string, unknown>)[key]
    if (value !== undefined) out[key] = value
  }
  return out as Omit<E, "_tag">
}

/** Every error the routing pipeline can fail with. */
export type RouterError =
  | ModelNotFound
  | InvalidRequest
  | RequestTooLarge
  | ContextLengthExceeded
  | NoUpstreamAvailable
  | RateLimited
  | UpstreamError

/** OpenAI's error envelope with the HTTP status and headers that go with it. */
export interface OpenAIError {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: {
    readonly error: {
      readonly message: string
      readonly type: string
      readonly param: string | null
      readonly code: string | null
      readonly [key: string]: unknown
    }
  }
}

const envelope = (
  status: number,
  message: string,
  type: string,
  code: string | null,
  param: string | null = null,
  headers: Record<string, string> = {},
  extra: Record<string, unknown> = {}
): OpenAIError => ({ status, headers, body: { error: { message, type, param, code, ...extra } } })

/** Maps a pipeline error to OpenAI's error envelope and HTTP status; every attempt made, when routed. */
export const toOpenAI = (error: RouterError): OpenAIError => {
  const mapped = envelopeOf(error)
  const decision = "decision" in error ? error.decision : undefined
  if (decision === undefined || decision.attempts.length === 0) return mapped
  // A fresh envelope: adding to it changes nothing shared.
  ;(mapped.body.error as Record<string, unknown>)["sluice_attempts"] = decision.attempts.map((a) => ({
    upstream: a.upstream,
    pool: a.pool,
    outcome: a.outcome,
    ...(a.status !== undefined ? { status: a.status } : {}),
    ...(a.error !== undefined ? { error: a.error } : {})
  }))
  return mapped
}

const envelopeOf = (error: RouterError): OpenAIError => {
  switch (error._tag) {
    case "ModelNotFound":
      return envelope(404, error.message, "invalid_request_error", "model_not_found", "model")
    case "InvalidRequest":
      return envelope(400, error.message, "invalid_request_error", "invalid_request", error.param ?? null)
    case "RequestTooLarge":
      return envelope(413, error.message, "invalid_request_error", "request_too_large")
    case "ContextLengthExceeded":
      return envelope(400, error.message, "invalid_request_error", "context_length_exceeded", "messages")
    case "NoUpstreamAvailable":
      if (unsupported(error)) {
        // The request asks for what no upstream can do: waiting or retrying changes nothing.
        const lacking = error.exclusions.map((e) => `${e.upstream} (${e.reason})`).join(", ")
        return envelope(
          400,
          `no upstream of pool '${error.pool}' or its fallbacks can serve this request: ${lacking}; ` +
            "remove what they lack from the request, or route it to a pool whose upstreams have it",
          "invalid_request_error",
          "unsupported_feature",
          null,
          {},
          { sluice_exclusions: error.exclusions }
        )
      }
      return envelope(
        503,
        error.message,
        "service_unavailable",
        "no_upstream_available",
        null,
        { "retry-after": String(error.retryAfterSeconds) },
        { sluice_exclusions: error.exclusions }
      )
    case "RateLimited":
      return envelope(429, error.message, "rate_limit_exceeded", "rate_limit_exceeded", null, {
        "retry-after": String(error.retryAfterSeconds)
      })
    case "UpstreamError": {
      // A 4xx other than 408/429 is the request's fault, not the upstream's: hand it back as such.
      const clientFault =
        error.kind === "http" &&
        error.status !== undefined &&
        error.status >= 400 &&
        error.status < 500 &&
        !error.retryable
      if (clientFault) {
        return envelope(
          error.status!,
          `upstream '${error.upstream}': ${error.message}`,
          "invalid_request_error",
          "upstream_rejected"
        )
      }
      return envelope(
        502,
        `upstream '${error.upstream}' failed: ${error.message}`,
        "upstream_error",
        error.kind === "timeout" ? "upstream_timeout" : "upstream_error",
        null,
        {},
        { upstream: error.upstream, ...(error.status !== undefined ? { upstream_status: error.status } : {}) }
      )
    }
  }
}
