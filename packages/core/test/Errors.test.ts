import { describe, expect, it } from "@effect/vitest"
import { Errors } from "../src/index.js"

describe("Errors.toOpenAI", () => {
  it("answers an unknown model with 404 model_not_found on param model", () => {
    const mapped = Errors.toOpenAI(new Errors.ModelNotFound({ model: "gpt-9", known: ["gpt-4o", "claude-*"] }))
    expect(mapped.status).toBe(404)
    expect(mapped.body.error).toEqual({
      message: "no pool serves model 'gpt-9'; known models: gpt-4o, claude-*",
      type: "invalid_request_error",
      param: "model",
      code: "model_not_found"
    })
  })

  it("answers a malformed request with 400 naming the offending param", () => {
    const mapped = Errors.toOpenAI(new Errors.InvalidRequest({ message: "messages: is missing", param: "messages" }))
    expect(mapped.status).toBe(400)
    expect(mapped.body.error).toMatchObject({ message: "messages: is missing", param: "messages" })
    expect(mapped.body.error.code).toBe("invalid_request")
    expect(Errors.toOpenAI(new Errors.InvalidRequest({ message: "bad" })).body.error.param).toBeNull()
  })

  it("answers an oversized body with 413 naming the limit", () => {
    const mapped = Errors.toOpenAI(new Errors.RequestTooLarge({ limitBytes: 1024 }))
    expect(mapped.status).toBe(413)
    expect(mapped.body.error.code).toBe("request_too_large")
    expect(mapped.body.error.message).toContain("1024 bytes")
  })

  it("answers a context-length overflow with 400 context_length_exceeded and the counts", () => {
    const mapped = Errors.toOpenAI(
      new Errors.ContextLengthExceeded({ pool: "gpt", promptTokens: 900, maxTokens: 200, largestContextWindow: 1000 })
    )
    expect(mapped.status).toBe(400)
    expect(mapped.body.error).toMatchObject({ code: "context_length_exceeded", param: "messages" })
    expect(mapped.body.error.message).toContain("needs 1100 tokens (900 in the prompt + 200 for the completion)")
    expect(mapped.body.error.message).toContain("is 1000 tokens")
  })

  it("answers no available upstream with 503, Retry-After and the exclusions", () => {
    const exclusions = [{ upstream: "a", stage: "circuit-breaker", reason: "circuit open", retryAfterMs: 7000 }]
    const mapped = Errors.toOpenAI(new Errors.NoUpstreamAvailable({ pool: "gpt", exclusions, retryAfterSeconds: 7 }))
    expect(mapped.status).toBe(503)
    expect(mapped.headers).toEqual({ "retry-after": "7" })
    expect(mapped.body.error).toMatchObject({ type: "service_unavailable", code: "no_upstream_available" })
    expect(mapped.body.error["sluice_exclusions"]).toEqual(exclusions)
    expect(mapped.body.error.message).toBe(
      "no upstream of pool 'gpt' can serve this request now (a: circuit open); retry after 7s"
    )
  })

  it("answers Sluice's own rate limit with 429 and Retry-After", () => {
    const mapped = Errors.toOpenAI(new Errors.RateLimited({ pool: "gpt", reason: "queue full", retryAfterSeconds: 3 }))
    expect(mapped.status).toBe(429)
    expect(mapped.headers).toEqual({ "retry-after": "3" })
    expect(mapped.body.error).toMatchObject({ type: "rate_limit_exceeded", code: "rate_limit_exceeded" })
    expect(mapped.body.error.message).toContain("queue full")
  })

  it("answers a failed upstream with 502 whose message names the upstream", () => {
    const mapped = Errors.toOpenAI(
      new Errors.UpstreamError({
        upstream: "openai-1",
        kind: "http",
        status: 500,
        message: "internal error",
        retryable: true
      })
    )
    expect(mapped.status).toBe(502)
    expect(mapped.body.error.message).toBe("upstream 'openai-1' failed: internal error")
    expect(mapped.body.error).toMatchObject({ code: "upstream_error", upstream: "openai-1", upstream_status: 500 })
  })

  it("answers an upstream timeout with 502 upstream_timeout", () => {
    const mapped = Errors.toOpenAI(
      new Errors.UpstreamError({ upstream: "slow", kind: "timeout", message: "no response", retryable: true })
    )
    expect(mapped.status).toBe(502)
    expect(mapped.body.error.code).toBe("upstream_timeout")
    expect(mapped.body.error).not.toHaveProperty("upstream_status")
  })

  it("passes an upstream's 400 through as 400, since the request is at fault", () => {
    const mapped = Errors.toOpenAI(
      new Errors.UpstreamError({
        upstream: "openai-1",
        kind: "http",
        status: 400,
        message: "'temperature' must be at most 2",
        retryable: false
      })
    )
    expect(mapped.status).toBe(400)
    expect(mapped.body.error).toMatchObject({ type: "invalid_request_error", code: "upstream_rejected" })
    expect(mapped.body.error.message).toBe("upstream 'openai-1': 'temperature' must be at most 2")
  })

  it("answers an upstream's retryable 429 with 502, not as the client's fault", () => {
    const mapped = Errors.toOpenAI(
      new Errors.UpstreamError({ upstream: "a", kind: "http", status: 429, message: "slow down", retryable: true })
    )
    expect(mapped.status).toBe(502)
  })
})
