import { describe, expect, it } from "@effect/vitest"
import { Config } from "@sluice/core"
import { Effect, Schema } from "effect"
import OpenAI from "openai"
import { simulatedConfig, startGateway } from "./harness.js"

const sleep = (ms: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, ms)))

/** Settles a promise to its value or its error, so a test can assert on a rejection. */
const settle = <A>(promise: Promise<A>) =>
  promise.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error })
  )

/** One chat request through the SDK; `content` labels it in the upstream's request log. */
const ask = (
  client: OpenAI,
  content: string,
  options: { readonly headers?: Record<string, string>; readonly signal?: AbortSignal } = {}
) =>
  client.chat.completions
    .create({ model: "gpt-4o-mini", messages: [{ role: "user", content }], max_tokens: 8 }, options)
    .withResponse()
    .then(({ data, response }) => ({
      content,
      upstream: response.headers.get("x-sluice-upstream"),
      answer: data.choices[0]?.message.content ?? ""
    }))

/**
 * The SDK's view of a 429 from Sluice: a `RateLimitError` whose `Retry-After` is a positive whole
 * number of seconds. Returns those seconds and the error.
 */
const rateLimited = (settled: { readonly ok: boolean; readonly error?: unknown }) => {
  expect(settled.ok).toBe(false)
  expect(settled.error).toBeInstanceOf(OpenAI.RateLimitError)
  const error = settled.error as InstanceType<typeof OpenAI.RateLimitError>
  expect(error.status).toBe(429)
  const retryAfter = error.headers.get("retry-after")
  expect(retryAfter).toMatch(/^[1-9]\d*$/)
  return { retryAfterSeconds: Number(retryAfter), error }
}

/** What the upstream was asked, in arrival order (the labels `ask` sent). */
const arrivals = (requests: ReadonlyArray<{ readonly body: unknown }>) =>
  requests.map((r) => (r.body as { messages: Array<{ content: string }> }).messages[0]?.content ?? "")

/** One upstream that takes one request at a time and answers after `latencyMs`. */
/** Client keys as the config decodes them (defaults applied). */
const decodeKeys = (keys: ReadonlyArray<Record<string, unknown>>) =>
  Schema.decodeUnknownSync(Schema.Array(Config.ClientKeyConfig))(keys)

const oneAtATime = (latencyMs: number, queue: Record<string, unknown>) =>
  simulatedConfig(
    [{ id: "only", limits: { maxConcurrency: 1 }, simulate: { latencyMs } }],
    [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["only"], queue }]
  )

/** One upstream Sluice allows one request per minute: after the first, the next frees in about 60 s. */
const onePerMinute = (queue: Record<string, unknown>) =>
  simulatedConfig(
    [{ id: "only", limits: { rpm: 1 } }],
    [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["only"], queue }]
  )

describe("the queue, through the gateway with the openai SDK", () => {
  it.live("queues a request no upstream can take now and serves it the moment capacity frees", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(oneAtATime(300, { maxSize: 5, maxWaitMs: 5_000 }))
      const results = yield* Effect.promise(() =>
        Promise.all([ask(gateway.client, "first"), ask(gateway.client, "second")])
      )
      expect(results.map((r) => r.upstream)).toEqual(["only", "only"])
      expect(results.every((r) => r.answer.startsWith("[only]"))).toBe(true)
      const waits = gateway.routes().map((r) => Number(r["sluice.queue_wait_ms"]))
      // One went straight through; the other waited for the first to finish (about 300 ms), not longer.
      expect(Math.min(...waits)).toBe(0)
      expect(Math.max(...waits)).toBeGreaterThanOrEqual(200)
      expect(Math.max(...waits)).toBeLessThan(2_000)
      expect(gateway.simulator("only").stats().requests).toBe(2)
    }).pipe(Effect.scoped)
  )

  it.live("answers 429 with Retry-After when the queue is full, without calling the upstream", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(oneAtATime(400, { maxSize: 1, maxWaitMs: 5_000 }))
      const inFlight = ask(gateway.client, "busy")
      yield* sleep(100)
      const queued = ask(gateway.client, "queued")
      yield* sleep(50)
      const refused = rateLimited(yield* Effect.promise(() => settle(ask(gateway.client, "refused"))))
      expect(refused.error.code).toBe("rate_limit_exceeded")
      expect(refused.error.message).toContain("the queue is full (1 waiting)")
      // Capacity frees when the busy request (400 ms) and then the queued one finish: about a second.
      expect(refused.retryAfterSeconds).toBeLessThanOrEqual(2)
      const served = yield* Effect.promise(() => Promise.all([inFlight, queued]))
      expect(served.map((r) => r.upstream)).toEqual(["only", "only"])
      expect(arrivals(gateway.simulator("only").requests())).toEqual(["busy", "queued"])
    }).pipe(Effect.scoped)
  )

  it.live(
    "answers 429 when the queue is full with a Retry-After of when the RPM window frees, not a fixed second",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(onePerMinute({ maxSize: 1, maxWaitMs: 90_000 }))
        expect((yield* Effect.promise(() => ask(gateway.client, "served"))).upstream).toBe("only")
        // The next request waits for the window (about 60 s, within the queue's 90 s) and fills the queue.
        const waiting = new AbortController()
        const queued = settle(ask(gateway.client, "queued", { signal: waiting.signal }))
        yield* sleep(150)
        const refused = rateLimited(yield* Effect.promise(() => settle(ask(gateway.client, "refused"))))
        expect(refused.error.message).toContain("the queue is full (1 waiting)")
        // Nothing can be served before the window frees, about 60 s after "served".
        expect(refused.retryAfterSeconds).toBeGreaterThanOrEqual(55)
        expect(refused.retryAfterSeconds).toBeLessThanOrEqual(60)
        waiting.abort()
        expect(yield* Effect.promise(() => queued)).toMatchObject({
          ok: false,
          error: expect.any(OpenAI.APIUserAbortError)
        })
        expect(gateway.simulator("only").stats().requests).toBe(1)
      }).pipe(Effect.scoped)
  )

  it.live(
    "answers 429 at once, with the RPM window's remaining time as Retry-After, when the wait would pass the queue's deadline",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(onePerMinute({ maxSize: 5, maxWaitMs: 2_000 }))
        yield* Effect.promise(() => ask(gateway.client, "served"))
        const startedAt = Date.now()
        const refused = rateLimited(yield* Effect.promise(() => settle(ask(gateway.client, "too-early"))))
        // Refused without sitting out the 2 s it could never use.
        expect(Date.now() - startedAt).toBeLessThan(1_000)
        expect(refused.error.message).toMatch(/no upstream has capacity for \d+s, longer than the queue's wait limit/)
        expect(refused.retryAfterSeconds).toBeGreaterThanOrEqual(55)
        expect(refused.retryAfterSeconds).toBeLessThanOrEqual(60)
        expect(gateway.simulator("only").stats().requests).toBe(1)
      }).pipe(Effect.scoped)
  )

  it.live("answers 429 when the wait passes the queue's deadline", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(oneAtATime(600, { maxSize: 5, maxWaitMs: 150 }))
      const busy = ask(gateway.client, "busy")
      yield* sleep(50)
      const late = rateLimited(yield* Effect.promise(() => settle(ask(gateway.client, "late"))))
      expect(late.error.message).toContain("waited 150ms in the queue")
      expect((yield* Effect.promise(() => busy)).upstream).toBe("only")
      expect(arrivals(gateway.simulator("only").requests())).toEqual(["busy"])
    }).pipe(Effect.scoped)
  )

  it.live("serves the queue highest x-sluice-priority first, FIFO within a priority, for a key allowed to set it", () =>
    Effect.gen(function* () {
      const config = oneAtATime(150, { maxSize: 10, maxWaitMs: 10_000 })
      const keys = [{ name: "batch", keyEnv: "SLUICE_TEST_BATCH_KEY", priorityHeader: true }]
      const gateway = yield* startGateway(
        { ...config, server: { ...config.server, auth: { open: false, keys: decodeKeys(keys) } } },
        { env: { SLUICE_TEST_BATCH_KEY: "sk-test" } }
      )
      const all: Array<Promise<unknown>> = [ask(gateway.client, "busy")]
      yield* sleep(50)
      for (const [content, priority] of [
        ["low-1", "0"],
        ["low-2", "0"],
        ["high-1", "5"],
        ["high-2", "5"]
      ] as const) {
        all.push(ask(gateway.client, content, { headers: { "x-sluice-priority": priority } }))
        yield* sleep(30)
      }
      yield* Effect.promise(() => Promise.all(all))
      expect(arrivals(gateway.simulator("only").requests())).toEqual(["busy", "high-1", "high-2", "low-1", "low-2"])
    }).pipe(Effect.scoped)
  )
})
