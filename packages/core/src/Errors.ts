/**
 * The errors a routing pipeline can fail with. Each carries what a caller needs to act on it and maps
 * to OpenAI's error envelope and an HTTP status with {@link toOpenAI}.
 */
import { Schema } from "effect"

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
  largestContextWindow: Schema.Number
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
  retryAfterSeconds: Schema.Number
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
  retryAfterSeconds: Schema.Number
}) {
  override get message(): string {
    return `pool '${this.pool}' is at capacity: ${this.reason}; retry after ${this.retryAfterSeconds}s`
  }
}

/**
 * An upstream call failed. `retryable` says whether another attempt (on another upstream) may
 * succeed; `status` is the upstream's HTTP status when it answered.
 */
export class UpstreamError extends Schema.TaggedError<UpstreamError>()("UpstreamError", {
  upstream: Schema.String,
  /** "http" (answered with an error status), "timeout", "connection", "protocol" (unreadable answer) */
  kind: Schema.Literal("http", "timeout", "connection", "protocol"),
  status: Schema.optional(Schema.Number),
  message: Schema.String,
  retryable: Schema.Boolean,
  /** From the upstream's `Retry-After` / `retry-after-ms`, when it sent one. */
  retryAfterMs: Schema.optional(Schema.Number),
  /** The upstream's own error body, when it sent a parsable one. */
  body: Schema.optional(Schema.Unknown)
}) {}

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

/** Maps a pipeline error to OpenAI's error envelope and HTTP status. */
export const toOpenAI = (error: RouterError): OpenAIError => {
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
