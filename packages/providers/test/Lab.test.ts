import { describe, expect, it } from "@effect/vitest"
import type { Wire } from "@sluice/core"
import { Provider, StreamEvent, Topology } from "@sluice/core"
import { Chunk, Effect, Fiber, Stream, TestClock } from "effect"
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
      expect(lab.stats("a")).toEqual({ served: 1, rateLimited: 0, failed: 0, tokens: 18 })
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
      expect(lab.stats("a")).toEqual({ served: 3, rateLimited: 3, failed: 0, tokens: 3 * (13 + 16) })
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
      expect(lab.stats("b")).toEqual({ served: 0, rateLimited: 0, failed: 0, tokens: 0 })
    })
  )
})
