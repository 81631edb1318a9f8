import { describe, expect, it } from "@effect/vitest"
import { RateLimiter, Topology } from "@sluice/core"
import { Effect } from "effect"
import OpenAI from "openai"
import type { Gateway } from "./harness.js"
import { listAttribute, simulatedConfig, startGateway, streamed } from "./harness.js"

/** Settles a promise to its value or its error, so a test can assert on a rejection. */
const settle = <A>(promise: Promise<A>) =>
  promise.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error })
  )

/** One chat request through the SDK: the upstream that served it. */
const ask = (client: OpenAI) =>
  Effect.promise(() =>
    client.chat.completions
      .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], max_tokens: 8 })
      .withResponse()
      .then(({ response }) => response.headers.get("x-sluice-upstream"))
  )

/** The rate limiter's view of `upstream`, from the gateway's own layer. */
const budgetOf = (gateway: Gateway, upstream: string) =>
  gateway.service(RateLimiter.RateLimiter).snapshot(gateway.service(Topology.Topology).upstreams.get(upstream)!)

/**
 * A simulated upstream allowing 2 requests a minute, which Sluice is NOT told about: it only learns
 * the budget from the `x-ratelimit-*` headers of the answers (and a 429's `Retry-After`).
 */
const limited = { id: "limited", simulate: { rpm: 2 } }

describe("learning an upstream's rate limits from its headers, through the gateway with the openai SDK", () => {
  it.live("routes elsewhere once an upstream reports x-ratelimit-remaining-requests: 0, never provoking its 429", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [limited, { id: "spare" }],
          [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["limited", "spare"] }]
        )
      )
      expect(yield* ask(gateway.client)).toBe("limited")
      expect(yield* ask(gateway.client)).toBe("limited")
      // The second answer said "0 remaining, resets in about 60 s": the gateway holds "limited" back.
      const budget = yield* budgetOf(gateway, "limited")
      expect(budget.remainingRequests).toBe(0)
      expect(budget.learnedUntil! - Date.now()).toBeGreaterThan(55_000)
      for (let i = 0; i < 3; i++) expect(yield* ask(gateway.client)).toBe("spare")
      expect(gateway.simulator("limited").stats()).toMatchObject({ requests: 2, rateLimited: 0 })
      const excluded = listAttribute(gateway.routes().at(-1), "sluice.decision.excluded")
      expect(
        excluded.some((e) =>
          /^limited: rate-limiter: the upstream reported no requests remaining; resets in (5\d(\.\d)?|60)s$/.test(e)
        )
      ).toBe(true)
    }).pipe(Effect.scoped)
  )

  it.live(
    "learns from a Claude-shaped upstream's anthropic-ratelimit-* headers, whole and streamed, and routes elsewhere before its 429",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          simulatedConfig(
            [{ id: "claude", simulate: { rpm: 2, dialect: "anthropic" } }, { id: "spare" }],
            [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["claude", "spare"] }]
          )
        )
        // The first answer, streamed, says "1 remaining"; the second, whole, "0 remaining until <an
        // RFC 3339 time about 60 s away>".
        expect((yield* streamed(gateway.client)).upstream).toBe("claude")
        expect((yield* budgetOf(gateway, "claude")).remainingRequests).toBe(1)
        expect(yield* ask(gateway.client)).toBe("claude")
        const budget = yield* budgetOf(gateway, "claude")
        expect(budget.remainingRequests).toBe(0)
        expect(budget.learnedUntil! - Date.now()).toBeGreaterThan(55_000)
        for (let i = 0; i < 3; i++) expect(yield* ask(gateway.client)).toBe("spare")
        expect(gateway.simulator("claude").stats()).toMatchObject({ requests: 2, rateLimited: 0 })
        const excluded = listAttribute(gateway.routes().at(-1), "sluice.decision.excluded")
        expect(
          excluded.some((e) =>
            /^claude: rate-limiter: the upstream reported no requests remaining; resets in (5\d(\.\d)?|60)s$/.test(e)
          )
        ).toBe(true)
      }).pipe(Effect.scoped)
  )

  it.live(
    "answers 429 itself with the upstream's reset time as Retry-After when the only upstream reports no requests remaining",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          simulatedConfig(
            [limited],
            [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["limited"], queue: { maxSize: 5, maxWaitMs: 2_000 } }]
          )
        )
        expect(yield* ask(gateway.client)).toBe("limited")
        expect(yield* ask(gateway.client)).toBe("limited")
        const refused = yield* Effect.promise(() =>
          settle(
            gateway.client.chat.completions.create({
              model: "gpt-4o-mini",
              messages: [{ role: "user", content: "Hi" }]
            })
          )
        )
        expect(refused.ok).toBe(false)
        const error = (refused as { error: unknown }).error as InstanceType<typeof OpenAI.RateLimitError>
        expect(error).toBeInstanceOf(OpenAI.RateLimitError)
        expect(error.status).toBe(429)
        expect(error.code).toBe("rate_limit_exceeded")
        // The upstream's window frees about 60 s after its first request.
        const retryAfter = error.headers.get("retry-after")
        expect(retryAfter).toMatch(/^[1-9]\d*$/)
        expect(Number(retryAfter)).toBeGreaterThanOrEqual(55)
        expect(Number(retryAfter)).toBeLessThanOrEqual(60)
        expect(gateway.simulator("limited").stats()).toMatchObject({ requests: 2, rateLimited: 0 })
      }).pipe(Effect.scoped)
  )

  it.live("holds an upstream back until the Retry-After of its 429, failing over instead of calling it again", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [limited, { id: "spare" }],
          [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["limited", "spare"] }]
        )
      )
      // Another client of the same upstream spends its budget behind the gateway's back.
      const direct = new OpenAI({
        baseURL: `${gateway.simulator("limited").url}/v1`,
        apiKey: "sk-direct",
        maxRetries: 0
      })
      for (let i = 0; i < 2; i++) {
        yield* Effect.promise(() =>
          direct.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
        )
      }
      // The gateway does not know yet: its first try meets the 429 and fails over.
      expect(yield* ask(gateway.client)).toBe("spare")
      expect(gateway.simulator("limited").stats()).toMatchObject({ requests: 3, rateLimited: 1 })
      const budget = yield* budgetOf(gateway, "limited")
      expect(budget.blockedUntil! - Date.now()).toBeGreaterThan(55_000)
      // From then on until the Retry-After passes, "limited" is not called at all.
      for (let i = 0; i < 3; i++) expect(yield* ask(gateway.client)).toBe("spare")
      expect(gateway.simulator("limited").stats()).toMatchObject({ requests: 3, rateLimited: 1 })
      const excluded = listAttribute(gateway.routes().at(-1), "sluice.decision.excluded")
      expect(excluded.some((e) => e.startsWith("limited: rate-limiter: "))).toBe(true)
    }).pipe(Effect.scoped)
  )
})
