import { describe, expect, it } from "@effect/vitest"
import { Provider } from "../src/index.js"

const NOW = Date.parse("2025-06-01T12:00:00Z")

describe("Provider.parseRateLimitHeaders", () => {
  it("reads OpenAI's x-ratelimit-* request and token headers, with Go-style reset durations", () => {
    expect(
      Provider.parseRateLimitHeaders(
        {
          "x-ratelimit-limit-requests": "500",
          "x-ratelimit-remaining-requests": "499",
          "x-ratelimit-reset-requests": "6m0s",
          "x-ratelimit-limit-tokens": "30000",
          "x-ratelimit-remaining-tokens": "29900",
          "x-ratelimit-reset-tokens": "200ms"
        },
        NOW
      )
    ).toEqual({
      limitRequests: 500,
      remainingRequests: 499,
      resetRequestsMs: 360_000,
      limitTokens: 30_000,
      remainingTokens: 29_900,
      resetTokensMs: 200
    })
  })

  it("keeps a remaining count of 0, the value that matters most", () => {
    expect(
      Provider.parseRateLimitHeaders({ "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s" }, NOW)
    ).toEqual({ remainingRequests: 0, resetRequestsMs: 1_000 })
    expect(
      Provider.parseRateLimitHeaders({ "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "12.5s" }, NOW)
    ).toEqual({ remainingTokens: 0, resetTokensMs: 12_500 })
  })

  it("reads Groq's fractional reset durations", () => {
    const info = Provider.parseRateLimitHeaders(
      { "x-ratelimit-remaining-requests": "14399", "x-ratelimit-reset-requests": "2m59.56s" },
      NOW
    )
    expect(info?.remainingRequests).toBe(14_399)
    expect(info?.resetRequestsMs).toBeCloseTo(179_560, 6)
  })

  it("reads retry-after in seconds as milliseconds", () => {
    expect(Provider.parseRateLimitHeaders({ "retry-after": "20" }, NOW)).toEqual({ retryAfterMs: 20_000 })
  })

  it("prefers retry-after-ms to retry-after, which rounds to whole seconds", () => {
    expect(Provider.parseRateLimitHeaders({ "retry-after-ms": "1500", "retry-after": "2" }, NOW)).toEqual({
      retryAfterMs: 1_500
    })
    expect(Provider.parseRateLimitHeaders({ "retry-after-ms": "250" }, NOW)).toEqual({ retryAfterMs: 250 })
  })

  it("reads retry-after given as an HTTP date, relative to now", () => {
    // RFC 9110 §10.2.3: Retry-After = HTTP-date / delay-seconds.
    expect(Provider.parseRateLimitHeaders({ "retry-after": "Sun, 01 Jun 2025 12:00:30 GMT" }, NOW)).toEqual({
      retryAfterMs: 30_000
    })
  })

  it("reads Anthropic's anthropic-ratelimit-* headers, converting RFC 3339 reset times to a wait from now", () => {
    expect(
      Provider.parseRateLimitHeaders(
        {
          "anthropic-ratelimit-requests-limit": "50",
          "anthropic-ratelimit-requests-remaining": "0",
          "anthropic-ratelimit-requests-reset": "2025-06-01T12:00:30Z",
          "anthropic-ratelimit-tokens-limit": "40000",
          "anthropic-ratelimit-tokens-remaining": "12000",
          "anthropic-ratelimit-tokens-reset": "2025-06-01T14:01:00.500+02:00",
          "retry-after": "30"
        },
        NOW
      )
    ).toEqual({
      limitRequests: 50,
      remainingRequests: 0,
      resetRequestsMs: 30_000,
      limitTokens: 40_000,
      remainingTokens: 12_000,
      resetTokensMs: 60_500,
      retryAfterMs: 30_000
    })
  })

  it("reads an Anthropic reset time already past as 0, never a negative wait", () => {
    expect(
      Provider.parseRateLimitHeaders(
        { "anthropic-ratelimit-requests-remaining": "3", "anthropic-ratelimit-requests-reset": "2025-06-01T11:59:00Z" },
        NOW
      )
    ).toEqual({ remainingRequests: 3, resetRequestsMs: 0 })
  })

  it("is undefined without rate-limit headers, and drops values it cannot read", () => {
    expect(Provider.parseRateLimitHeaders({}, NOW)).toBeUndefined()
    expect(Provider.parseRateLimitHeaders({ "content-type": "application/json" }, NOW)).toBeUndefined()
    expect(
      Provider.parseRateLimitHeaders(
        {
          "x-ratelimit-remaining-requests": "lots",
          "x-ratelimit-reset-requests": "soon",
          "anthropic-ratelimit-tokens-reset": "tomorrow"
        },
        NOW
      )
    ).toBeUndefined()
    expect(
      Provider.parseRateLimitHeaders(
        { "x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "in a while" },
        NOW
      )
    ).toEqual({ remainingTokens: 100 })
  })
})

describe("Provider.parseDuration", () => {
  it("reads OpenAI's duration format to milliseconds", () => {
    expect(Provider.parseDuration("0s")).toBe(0)
    expect(Provider.parseDuration("1s")).toBe(1_000)
    expect(Provider.parseDuration("250ms")).toBe(250)
    expect(Provider.parseDuration("12.5s")).toBe(12_500)
    expect(Provider.parseDuration("6m0s")).toBe(360_000)
    expect(Provider.parseDuration("1m30s")).toBe(90_000)
    expect(Provider.parseDuration("1h2m3s")).toBe(3_723_000)
  })

  it("reads a bare number as seconds", () => {
    expect(Provider.parseDuration("20")).toBe(20_000)
    expect(Provider.parseDuration(" 1.5 ")).toBe(1_500)
  })

  it("is undefined for anything else", () => {
    expect(Provider.parseDuration("")).toBeUndefined()
    expect(Provider.parseDuration("soon")).toBeUndefined()
    expect(Provider.parseDuration("5 minutes")).toBeUndefined()
    expect(Provider.parseDuration("1m and 3s")).toBeUndefined()
  })
})
