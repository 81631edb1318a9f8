import { describe, expect, it } from "@effect/vitest"
import type { Wire } from "@sluice/core"
import { Provider, Topology } from "@sluice/core"
import { Chunk, Effect, Fiber, FiberRef, Stream, TestClock } from "effect"
import * as Lab from "../src/Lab.js"

const up = (id: string) => Topology.upstream({ id, provider: "simulated", baseUrl: "http://lab" })

/** 40 characters of text: a prompt estimate of ceil(40 / 4) + 3 = 13 tokens. */
const request = (fields: Partial<Wire.ChatCompletionRequest> = {}): Wire.ChatCompletionRequest => ({
  model: "m",
  messages: [{ role: "user", content: "x".repeat(40) }],
  ...fields
})

const rateLimits = FiberRef.get(Provider.currentRateLimits)

describe("Lab", () => {
  it.effect("answers after latencyMs of Clock time with completionTokens words and usage", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { latencyMs: 1_000, completionTokens: 5 } })
      const fiber = yield* Effect.fork(lab.provider.chat(up("a"), request()))
      yield* TestClock.adjust("999 millis")
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      const completion = yield* Fiber.join(fiber)
      expect(completion.choices[0]?.message.content).toBe("[a] lorem ipsum dolor sit")
      expect(completion.choices[0]?.finish_reason).toBe("stop")
      expect(completion.usage).toEqual({ prompt_tokens: 13, completion_tokens: 5, total_tokens: 18 })
      expect(lab.stats("a")).toEqual({ served: 1, rateLimited: 0, failed: 0, tokens: 18 })
    })
  )

  it.effect("caps the completion at max_tokens", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { completionTokens: 5 } })
      const completion = yield* lab.provider.chat(up("a"), request({ max_tokens: 2 }))
      expect(completion.choices[0]?.finish_reason).toBe("length")
      expect(completion.usage?.completion_tokens).toBe(2)
    })
  )

  it.effect("enforces a sliding RPM window: 429 with retryAfterMs and rate-limit info, free again as it slides", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { rpm: 2 } })
      const chat = lab.provider.chat(up("a"), request())
      yield* chat
      expect(yield* rateLimits).toMatchObject({ limitRequests: 2, remainingRequests: 1, resetRequestsMs: 60_000 })
      yield* TestClock.adjust("30 seconds")
      yield* chat
      expect(yield* rateLimits).toMatchObject({ remainingRequests: 0, resetRequestsMs: 30_000 })
      const error = yield* Effect.flip(chat)
      expect(error).toMatchObject({ kind: "http", status: 429, retryable: true, retryAfterMs: 30_000 })
      expect(yield* rateLimits).toMatchObject({ remainingRequests: 0, resetRequestsMs: 30_000, retryAfterMs: 30_000 })
      yield* TestClock.adjust("29999 millis")
      expect(yield* Effect.flip(chat)).toMatchObject({ status: 429, retryAfterMs: 1 })
      yield* TestClock.adjust("1 millis") // t = 60 s: the first request left the window, the second did not
      yield* chat
      expect(yield* Effect.flip(chat)).toMatchObject({ status: 429, retryAfterMs: 30_000 })
      expect(lab.stats("a")).toEqual({ served: 3, rateLimited: 3, failed: 0, tokens: 3 * (13 + 16) })
    })
  )

  it.effect("enforces TPM on prompt + completion; a request over the limit itself is not retryable", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { tpm: 60, completionTokens: 16 } })
      yield* lab.provider.chat(up("a"), request()) // 29 tokens
      yield* lab.provider.chat(up("a"), request()) // 58 tokens
      expect(yield* rateLimits).toMatchObject({ limitTokens: 60, remainingTokens: 2 })
      expect(yield* Effect.flip(lab.provider.chat(up("a"), request()))).toMatchObject({
        status: 429,
        retryable: true,
        retryAfterMs: 60_000
      })
      const huge = request({ messages: [{ role: "user", content: "x".repeat(400) }] })
      const error = yield* Effect.flip(lab.provider.chat(up("a"), huge))
      expect(error).toMatchObject({ status: 429, retryable: false })
      expect(error.retryAfterMs).toBeUndefined()
    })
  )

  it.effect("streams a role chunk, content chunks, a finish chunk and a usage event", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { latencyMs: 500, completionTokens: 6 } })
      const fiber = yield* lab.provider
        .chatStream(up("a"), request({ stream: true, stream_options: { include_usage: true } }))
        .pipe(
          Effect.flatMap((events) => Stream.runCollect(events)),
          Effect.scoped,
          Effect.fork
        )
      yield* TestClock.adjust("500 millis")
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

  it.effect("fails with a retryable 500 at failureRate and counts it", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: { failureRate: 1 } })
      expect(yield* Effect.flip(lab.provider.chat(up("a"), request()))).toMatchObject({
        kind: "http",
        status: 500,
        retryable: true
      })
      expect(lab.stats("a")).toMatchObject({ served: 0, failed: 1 })
    })
  )

  it.effect("answers embeddings with one vector per input", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: {} })
      const response = yield* lab.provider.embeddings(up("a"), { model: "e", input: ["abcd", "abcdefgh"] })
      expect(response.data.map((d) => d.index)).toEqual([0, 1])
      expect(response.data[0]?.embedding).toHaveLength(8)
      expect(response.usage).toEqual({ prompt_tokens: 3, total_tokens: 3 })
    })
  )

  it.effect("refuses an upstream it does not model", () =>
    Effect.gen(function* () {
      const lab = yield* Lab.make({ a: {} })
      const error = yield* Effect.flip(lab.provider.chat(up("b"), request()))
      expect(error).toMatchObject({ kind: "protocol", retryable: false })
      expect(error.message).toContain("'b'")
      expect(lab.stats("b")).toEqual({ served: 0, rateLimited: 0, failed: 0, tokens: 0 })
    })
  )
})
