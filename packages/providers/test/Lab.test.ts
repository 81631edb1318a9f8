import { describe, expect, it } from "@effect/vitest"
import type { Wire } from "@sluice/core"
import { Provider, StreamEvent, Topology } from "@sluice/core"
import { Chunk, Clock, Effect, Fiber, Random, Stream, TestClock } from "effect"
import * as Lab from "../src/Lab.js"

const up = (id: string) => Topology.upstream({ id, provider: "simulated", baseUrl: "http://lab" })

/** 40 characters of text: a prompt estimate of ceil(40 / 4) + 3 = 13 tokens. */
const request = (fields: Partial<Wire.ChatCompletionRequest> = {}): Wire.ChatCompletionRequest => ({
  model: "m",
  messages: [{ role: "user", content: "x".repeat(40) }],
  ...fields
})

/** A call as the router makes it: the upstream's model is the one requested. */
const call = <R extends { readonly model: string }>(request: R): Provider.Call<R> => ({ request, model: request.model })

describe("Lab", () => {
  it.effect("answers after latencyMs of Clock time with completionTokens words and usage", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { latencyMs: 1_000, completionTokens: 5 } })
      const fiber = yield* Effect.fork(lab.provider.chat(up("a"), call(request())))
      yield* TestClock.adjust("999 millis")
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      const answer = yield* Fiber.join(fiber)
      const completion = answer.value
      expect(completion.choices[0]?.message.content).toBe("[a] lorem ipsum dolor sit")
      expect(completion.choices[0]?.finish_reason).toBe("stop")
      expect(completion.usage).toEqual({ prompt_tokens: 13, completion_tokens: 5, total_tokens: 18 })
      // No limits configured: no rate-limit headers, and nothing to relay verbatim.
      expect(answer.rateLimits).toBeUndefined()
      expect(answer.text).toBeUndefined()
      expect(lab.stats("a")).toMatchObject({ served: 1, rateLimited: 0, failed: 0, tokens: 18 })
    })
  )

  it.effect("answers under the upstream's model name", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: {} })
      const answer = yield* lab.provider.chat(up("a"), { request: request(), model: "upstream-model" })
      expect(answer.value.model).toBe("upstream-model")
    })
  )

  it.effect("caps the completion at max_tokens", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { completionTokens: 5 } })
      const { value: completion } = yield* lab.provider.chat(up("a"), call(request({ max_tokens: 2 })))
      expect(completion.choices[0]?.finish_reason).toBe("length")
      expect(completion.usage?.completion_tokens).toBe(2)
    })
  )

  it.effect("enforces a sliding RPM window: 429 with retryAfterMs and rate-limit info, free again as it slides", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { rpm: 2 } })
      const chat = lab.provider.chat(up("a"), call(request()))
      expect((yield* chat).rateLimits).toEqual({ limitRequests: 2, remainingRequests: 1, resetRequestsMs: 60_000 })
      yield* TestClock.adjust("30 seconds")
      expect((yield* chat).rateLimits).toEqual({ limitRequests: 2, remainingRequests: 0, resetRequestsMs: 30_000 })
      const error = yield* Effect.flip(chat)
      expect(error).toMatchObject({ kind: "http", status: 429, retryable: true, retryAfterMs: 30_000 })
      expect(error.rateLimits).toEqual({
        limitRequests: 2,
        remainingRequests: 0,
        resetRequestsMs: 30_000,
        retryAfterMs: 30_000
      })
      yield* TestClock.adjust("29999 millis")
      const later = yield* Effect.flip(chat)
      expect(later).toMatchObject({ status: 429, retryAfterMs: 1, rateLimits: { resetRequestsMs: 1, retryAfterMs: 1 } })
      yield* TestClock.adjust("1 millis") // t = 60 s: the first request left the window, the second did not
      yield* chat
      expect(yield* Effect.flip(chat)).toMatchObject({ status: 429, retryAfterMs: 30_000 })
      expect(lab.stats("a")).toMatchObject({ served: 3, rateLimited: 3, failed: 0, tokens: 3 * (13 + 16) })
    })
  )

  it.effect("enforces TPM on prompt + completion; a request over the limit itself is not retryable", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { tpm: 60, completionTokens: 16 } })
      yield* lab.provider.chat(up("a"), call(request())) // 29 tokens
      const second = yield* lab.provider.chat(up("a"), call(request())) // 58 tokens
      expect(second.rateLimits).toEqual({ limitTokens: 60, remainingTokens: 2, resetTokensMs: 60_000 })
      const over = yield* Effect.flip(lab.provider.chat(up("a"), call(request())))
      expect(over).toMatchObject({ status: 429, retryable: true, retryAfterMs: 60_000 })
      expect(over.rateLimits).toEqual({
        limitTokens: 60,
        remainingTokens: 2,
        resetTokensMs: 60_000,
        retryAfterMs: 60_000
      })
      const huge = request({ messages: [{ role: "user", content: "x".repeat(400) }] })
      const error = yield* Effect.flip(lab.provider.chat(up("a"), call(huge)))
      expect(error).toMatchObject({ status: 429, retryable: false })
      expect(error.retryAfterMs).toBeUndefined()
      // The headers still come, without a wait.
      expect(error.rateLimits).toEqual({ limitTokens: 60, remainingTokens: 2, resetTokensMs: 60_000 })
    })
  )

  it.effect("streams a role chunk, content chunks, a finish chunk and a usage event", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { latencyMs: 500, completionTokens: 6 } })
      const fiber = yield* lab.provider
        .chatStream(up("a"), call(request({ stream: true, stream_options: { include_usage: true } })))
        .pipe(
          Effect.flatMap((opened) => Stream.runCollect(StreamEvent.toStream(opened.events))),
          Effect.scoped,
          Effect.fork
        )
      yield* TestClock.adjust("499 millis")
      expect(lab.stats("a")).toMatchObject({ served: 0 })
      yield* TestClock.adjust("1 millis")
      const events = Chunk.toReadonlyArray(yield* Fiber.join(fiber))
      const chunks = events.map((e) => JSON.parse(e.data) as Wire.ChatCompletionChunk)
      expect(chunks[0]?.choices[0]?.delta).toEqual({ role: "assistant", content: "" })
      const content = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")
      expect(content).toBe("[a] lorem ipsum dolor sit amet")
      expect(chunks.at(-2)?.choices[0]?.finish_reason).toBe("stop")
      expect(events.at(-1)).toMatchObject({
        usageOnly: true,
        usage: { prompt_tokens: 13, completion_tokens: 6, total_tokens: 19 }
      })
      expect(chunks.every((c) => c.object === "chat.completion.chunk")).toBe(true)
      expect(lab.stats("a")).toMatchObject({ served: 1, tokens: 19 })
    })
  )

  it.effect("reports a stream's rate limits when it opens, and serves it once read to the end", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { rpm: 5, tpm: 1_000, completionTokens: 6 } })
      yield* Effect.scoped(
        Effect.gen(function* () {
          const opened = yield* lab.provider.chatStream(up("a"), call(request({ stream: true })))
          expect(opened.rateLimits).toEqual({
            limitRequests: 5,
            remainingRequests: 4,
            resetRequestsMs: 60_000,
            limitTokens: 1_000,
            remainingTokens: 1_000 - 19,
            resetTokensMs: 60_000
          })
          // Not read: not served.
          yield* Effect.yieldNow()
          expect(lab.stats("a")).toMatchObject({ served: 0 })
          yield* Stream.runDrain(StreamEvent.toStream(opened.events))
          expect(lab.stats("a")).toMatchObject({ served: 1, tokens: 19 })
        })
      )
      // A stream abandoned unread is never served.
      yield* Effect.scoped(lab.provider.chatStream(up("a"), call(request({ stream: true }))))
      expect(lab.stats("a")).toMatchObject({ served: 1 })
      // With prices, an abandoned stream (a hedge's loser, say) still costs its prompt.
      const priced = yield* Lab.make({
        b: { completionTokens: 6, pricing: { inputPerMillion: 1e6, outputPerMillion: 2e6 } }
      })
      yield* Effect.scoped(priced.provider.chatStream(up("b"), call(request({ stream: true }))))
      expect(priced.stats("b")).toMatchObject({ served: 0, costUsd: 13 })
    })
  )

  it.effect("fails with a retryable 500 at failureRate, with the rate-limit headers, and counts it", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { rpm: 10, failureRate: 1 } })
      const error = yield* Effect.flip(lab.provider.chat(up("a"), call(request())))
      expect(error).toMatchObject({ kind: "http", status: 500, retryable: true })
      // The upstream counted it, and says so.
      expect(error.rateLimits).toEqual({ limitRequests: 10, remainingRequests: 9, resetRequestsMs: 60_000 })
      expect(lab.stats("a")).toMatchObject({ served: 0, failed: 1 })
    })
  )

  it.effect("answers embeddings with one vector per input", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { rpm: 3 } })
      const answer = yield* lab.provider.embeddings(up("a"), call({ model: "e", input: ["abcd", "abcdefgh"] }))
      const response = answer.value
      expect(response.data.map((d) => d.index)).toEqual([0, 1])
      expect(response.data[0]?.embedding).toHaveLength(8)
      expect(response.usage).toEqual({ prompt_tokens: 3, total_tokens: 3 })
      expect(answer.rateLimits).toEqual({ limitRequests: 3, remainingRequests: 2, resetRequestsMs: 60_000 })
    })
  )

  it.effect("refuses an upstream it does not model", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: {} })
      const error = yield* Effect.flip(lab.provider.chat(up("b"), call(request())))
      expect(error).toMatchObject({ kind: "protocol", retryable: false })
      expect(error.message).toContain("'b'")
      // All zeros.
      expect(new Set(Object.values(lab.stats("b")))).toEqual(new Set([0]))
    })
  )

  it.effect("draws each latency from base + jitter with a long tail, reproducibly from the seed", () =>
    Effect.gen(function* () {
      const model = { latencyMs: 100, jitterMs: 50, tail: { probability: 0.1, multiplier: 10 } }
      // A fresh generator of the same seed per run.
      const draw = Effect.suspend(() =>
        Effect.gen(function* () {
          const lab = yield* Lab.make({ a: model })
          const latencies: Array<number> = []
          for (let i = 0; i < 400; i++) {
            const start = yield* Clock.currentTimeMillis
            yield* lab.provider.chat(up("a"), call(request()))
            latencies.push((yield* Clock.currentTimeMillis) - start)
          }
          return latencies
        }).pipe(Lab.simulate, Effect.withRandom(Random.make(7)))
      )
      const latencies = yield* draw
      const body = latencies.filter((ms) => ms < 1_000)
      const tail = latencies.filter((ms) => ms >= 1_000)
      expect(Math.min(...body)).toBeGreaterThanOrEqual(100)
      expect(Math.max(...body)).toBeLessThanOrEqual(150)
      expect(new Set(body).size).toBeGreaterThan(20)
      expect(Math.min(...tail)).toBeGreaterThanOrEqual(1_000)
      expect(Math.max(...tail)).toBeLessThanOrEqual(1_500)
      // About 10% in the tail (40 of 400, within sampling error).
      expect(tail.length).toBeGreaterThan(20)
      expect(tail.length).toBeLessThan(60)
      expect(yield* draw).toEqual(latencies)
    })
  )

  it.effect("degrades from atMs on: latency multiplied, failures at the new rate", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({
        a: { latencyMs: 100, degrade: { atMs: 60_000, latencyMultiplier: 10, failureRate: 1 } }
      })
      const timed = Effect.gen(function* () {
        const start = yield* Clock.currentTimeMillis
        yield* lab.provider.chat(up("a"), call(request()))
        return (yield* Clock.currentTimeMillis) - start
      })
      expect(yield* timed).toBe(100)
      yield* Effect.sleep("59800 millis")
      expect(yield* timed).toBe(100) // received at 59.9 s: not yet degraded
      expect(yield* Effect.flip(timed)).toMatchObject({ status: 500 })
      expect(lab.stats("a")).toMatchObject({ served: 2, failed: 1 })
      const slow = yield* Lab.make({ b: { latencyMs: 100, degrade: { atMs: 0, latencyMultiplier: 10 } } })
      const start = yield* Clock.currentTimeMillis
      yield* slow.provider.chat(up("b"), call(request()))
      expect((yield* Clock.currentTimeMillis) - start).toBe(1_000)
    }).pipe(Lab.simulate)
  )

  it.effect("answers a repeated prefix from its prompt cache: sooner, cheaper, with cached_tokens in usage", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({
        a: {
          latencyMs: 1_000,
          completionTokens: 10,
          cache: { minPrefixTokens: 100, ttlMs: 60_000, latencyFactor: 0.2, priceFactor: 0.1 },
          pricing: { inputPerMillion: 1_000_000, outputPerMillion: 2_000_000 }
        }
      })
      const system = { role: "system" as const, content: "s".repeat(800) } // 200 + 3 tokens
      const ask = (question: string) =>
        Effect.gen(function* () {
          const start = yield* Clock.currentTimeMillis
          const answer = yield* lab.provider.chat(
            up("a"),
            call(request({ messages: [system, { role: "user", content: question }] }))
          )
          return { ms: (yield* Clock.currentTimeMillis) - start, usage: answer.value.usage }
        })
      const miss = yield* ask("first question")
      expect(miss.ms).toBe(1_000)
      expect(miss.usage?.["prompt_tokens_details"]).toBeUndefined()
      const hit = yield* ask("another question")
      expect(hit.ms).toBe(200)
      expect(hit.usage?.["prompt_tokens_details"]).toEqual({ cached_tokens: 203 })
      // A short prefix is not cached; an entry expires after its TTL.
      yield* lab.provider.chat(up("a"), call(request()))
      yield* Effect.sleep("60001 millis")
      expect((yield* ask("much later")).ms).toBe(1_000)
      const stats = lab.stats("a")
      expect(stats).toMatchObject({ served: 4, cacheLookups: 3, cacheHits: 1, cachedTokens: 203 })
      // Full, it forgets the prefix used least recently.
      const small = yield* Lab.make({ b: { cache: { minPrefixTokens: 1, maxEntries: 2 } } })
      const withPrefix = (prefix: string) =>
        small.provider.chat(
          up("b"),
          call(
            request({
              messages: [
                { role: "system", content: prefix },
                { role: "user", content: "q" }
              ]
            })
          )
        )
      for (const prefix of ["x", "y", "x", "z", "x", "y"]) yield* withPrefix(prefix)
      // x y x(hit) z (evicts y) x(hit) y(miss)
      expect(small.stats("b")).toMatchObject({ cacheLookups: 6, cacheHits: 2 })
      // A dollar per input token and two per output token: prompts of 203 + 3 + ceil(question / 4)
      // (the short request 13), 10 output tokens each; the hit pays a tenth for its cached 203.
      expect(stats.costUsd).toBeCloseTo(210 + (203 * 0.1 + 3 + 4) + 13 + 209 + 4 * 20, 6)
    }).pipe(Lab.simulate)
  )

  it.effect("streams the first content after the time to first token and the rest after perTokenMs each", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { latencyMs: 300, perTokenMs: 10, completionTokens: 6 } })
      const start = yield* Clock.currentTimeMillis
      const times = yield* Effect.scoped(
        Effect.gen(function* () {
          const opened = yield* lab.provider.chatStream(up("a"), call(request({ stream: true })))
          const at: Array<number> = []
          yield* Stream.runForEach(StreamEvent.toStream(opened.events), () =>
            Effect.map(Clock.currentTimeMillis, (now) => void at.push(now - start))
          )
          return at
        })
      )
      // Role and first content at 300 ms; 3 more content chunks and the finish chunk 50 ms later.
      expect(times).toEqual([300, 300, 350, 350, 350, 350])
    }).pipe(Lab.simulate)
  )

  it.effect(
    "simulate runs a program in virtual time, its sleeps in TestClock's order, and dies when nothing can wake it",
    () =>
      Effect.gen(function* () {
        const woke: Array<number> = []
        const hour = Effect.gen(function* () {
          const sleepers = [3_600_000, 1_000, 60_000, 1_000].map((ms, i) =>
            Effect.as(Effect.sleep(ms), i).pipe(Effect.tap((i) => Effect.sync(() => void woke.push(i))))
          )
          yield* Effect.all(sleepers, { concurrency: "unbounded" })
          return yield* Clock.currentTimeMillis
        })
        expect(yield* Lab.simulate(hour, 5)).toBe(5 + 3_600_000)
        // Of two for one instant, the later to sleep wakes first, as under TestClock.
        expect(woke).toEqual([3, 1, 2, 0])
        const stuck = yield* Effect.exit(Lab.simulate(Effect.never))
        expect(stuck._tag).toBe("Failure")
      })
  )
})
