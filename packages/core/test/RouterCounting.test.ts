/**
 * Estimate first, count exactly near a limit: the router trusts the token counter's fast estimate
 * while every limit is far, and counts with the tokenizer once a context window or a guard's token
 * headroom comes near enough that an estimate half the true count could pass it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import type { Decision, Wire } from "../src/index.js"
import { Errors, Guard, RateLimiter, Router, StateStore, TokenCounter, Topology } from "../src/index.js"
import { answer, chatRequest, completion, provider, routerLayer, upstream } from "./fixtures.js"

/** `chatRequest` with a user message of `chars` characters. */
const request = (chars: number, fields: Partial<Wire.ChatCompletionRequest> = {}): Wire.ChatCompletionRequest =>
  chatRequest("gpt-4o", { messages: [{ role: "user", content: "x".repeat(chars) }], ...fields })

/**
 * A counter whose estimate runs at half the true count (the worst the router plans for), recording
 * how often it was asked for an exact count.
 */
/** The true prompt count in these tests: twice the ~4 chars per token estimate. */
const truth = (r: Wire.ChatCompletionRequest) => 2 * TokenCounter.estimateText(JSON.stringify(r.messages))

const halvingCounter = (exactCalls: { n: number }) =>
  Layer.succeed(
    TokenCounter.TokenCounter,
    TokenCounter.TokenCounter.of({
      count: (r) =>
        Effect.sync(() => {
          exactCalls.n++
          return { tokens: truth(r), exact: true }
        }),
      estimate: (r) => ({ tokens: truth(r) / 2, exact: false }),
      stats: () => ({
        encodes: exactCalls.n,
        encodedChars: 0,
        memoHits: 0,
        offThreadCounts: 0,
        workers: 0,
        encoders: { inline: [], workers: [] },
        charsPerToken: { o200k_base: 4, cl100k_base: 4 }
      })
    })
  )

/** Answers with the true usage, so budgets are corrected to what the request really cost. */
const answering = provider({
  chat: (u, { request: r }) =>
    Effect.succeed(
      answer(
        completion(u.id, {
          prompt_tokens: truth(r),
          completion_tokens: r.max_tokens ?? 1,
          total_tokens: truth(r) + (r.max_tokens ?? 1)
        })
      )
    )
})

describe("Router token counting: estimate far from limits, exact near them", () => {
  it.effect("uses the estimate alone when no upstream has a window or token budget near the request", () => {
    const exact = { n: 0 }
    const pools = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a"), upstream("b")] })]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const { decision } = yield* router.chat(request(4000, { max_tokens: 10 }))
      expect(exact.n).toBe(0)
      expect(decision.promptTokensCounted).toBe(false)
      expect(decision.promptTokensExact).toBe(false)
    }).pipe(Effect.provide(routerLayer(pools, { provider: answering, counter: halvingCounter(exact) })))
  })

  it.effect(
    "counts exactly near a context window, and excludes by the exact count the estimate would have let in",
    () => {
      const exact = { n: 0 }
      // Estimate ~500 + 10 reserved fits a 700-token window; the true ~1000 does not.
      const pools = [
        Topology.pool({
          id: "gpt",
          models: ["gpt-4o"],
          upstreams: [upstream("small", { contextWindow: 700 }), upstream("large", { contextWindow: 128_000 })]
        })
      ]
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const { decision } = yield* router.chat(request(2000, { max_tokens: 10 }))
        expect(exact.n).toBe(1)
        expect(decision.promptTokensCounted).toBe(true)
        expect(decision.promptTokensExact).toBe(true)
        expect(decision.promptTokens).toBeGreaterThan(1000)
        expect(decision.upstream).toBe("large")
        expect(decision.excluded).toEqual([
          {
            upstream: "small",
            stage: "context-window",
            reason: `needs ${decision.promptTokens + 10} tokens, context window is 700`
          }
        ])
      }).pipe(Effect.provide(routerLayer(pools, { provider: answering, counter: halvingCounter(exact) })))
    }
  )

  it.effect("names exact counts in ContextLengthExceeded, counted with tiktoken", () => {
    const pools = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a", { contextWindow: 100 })] })]
    // 300 distinct words: far more than 100 tokens by any count.
    const text = Array.from({ length: 300 }, (_, i) => `word${i}`).join(" ")
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const exactCount = yield* Effect.flatMap(TokenCounter.TokenCounter, (counter) =>
        counter.count(chatRequest("gpt-4o", { messages: [{ role: "user", content: text }] }), "gpt-4o")
      ).pipe(Effect.provide(TokenCounter.layer))
      expect(exactCount.exact).toBe(true)
      const error = yield* Effect.flip(
        router.chat(chatRequest("gpt-4o", { messages: [{ role: "user", content: text }], max_tokens: 5 }))
      )
      expect(error).toBeInstanceOf(Errors.ContextLengthExceeded)
      expect(error).toMatchObject({ promptTokens: exactCount.tokens, maxTokens: 5, largestContextWindow: 100 })
    }).pipe(Effect.provide(routerLayer(pools, { provider: answering, counter: TokenCounter.layer })))
  })

  it.effect("switches to exact counts as a TPM budget fills, and never lets a low estimate overrun it", () => {
    const exact = { n: 0 }
    const pools = [
      Topology.pool({
        id: "gpt",
        models: ["gpt-4o"],
        upstreams: [upstream("a", { limits: { tpm: 10_000 } })]
      })
    ]
    const guards = Guard.layer(RateLimiter.guard).pipe(
      Layer.provide(RateLimiter.layer),
      Layer.provide(StateStore.layerMemory)
    )
    return Effect.gen(function* () {
      const router = yield* Router.Router
      // Each request truly needs ~2,000 prompt tokens + 100 reserved; the estimate says ~1,000 + 100.
      // Far from the limit the estimate decides, and the usage answered corrects the budget.
      const admitted: Array<Decision.Decision> = []
      let refused: Errors.RouterError | undefined
      for (let i = 0; i < 10 && refused === undefined; i++) {
        const result = yield* Effect.either(router.chat(request(4000 + i, { max_tokens: 100 })))
        if (result._tag === "Left") refused = result.left
        else admitted.push(result.right.decision)
      }
      expect(refused).toBeInstanceOf(Errors.RateLimited)
      expect(admitted.length).toBe(4)
      expect(admitted.every((d) => !d.promptTokensCounted)).toBe(true)
      // Only the request that came near the budget was counted exactly, and refused by its true
      // size, where its estimate would still have fit (and overrun the upstream's TPM).
      expect(exact.n).toBe(1)
      const used = admitted.reduce((sum, d) => sum + 2 * d.promptTokens + 100, 0)
      const remaining = 10_000 - used
      const last = request(4000 + admitted.length, { max_tokens: 100 })
      expect(truth(last) / 2 + 100).toBeLessThanOrEqual(remaining)
      expect(truth(last) + 100).toBeGreaterThan(remaining)
    }).pipe(Effect.provide(routerLayer(pools, { provider: answering, counter: halvingCounter(exact), guards })))
  })
})
