import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { simulatedConfig, startGateway } from "./harness.js"

const sleep = (ms: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, ms)))

/** Posts a chat request and reports status, Retry-After and body, without throwing. */
const post = (url: string, content: string, headers: Record<string, string> = {}) =>
  fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content }], max_tokens: 8 })
  }).then(async (r) => ({
    content,
    status: r.status,
    retryAfter: r.headers.get("retry-after"),
    body: (await r.json()) as { error?: { message: string; code: string } }
  }))

/** One upstream that takes one request at a time and answers after `latencyMs`. */
const oneAtATime = (latencyMs: number, queue: Record<string, unknown>) =>
  simulatedConfig(
    [{ id: "only", limits: { maxConcurrency: 1 }, simulate: { latencyMs } }],
    [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["only"], queue }]
  )

describe("the queue, through the gateway", () => {
  it.live("queues a request no upstream can take now and serves it the moment capacity frees", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(oneAtATime(300, { maxSize: 5, maxWaitMs: 5_000 }))
      const results = yield* Effect.promise(() =>
        Promise.all([post(gateway.url, "first"), post(gateway.url, "second")])
      )
      expect(results.map((r) => r.status)).toEqual([200, 200])
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
      const inFlight = Effect.runPromise(Effect.promise(() => post(gateway.url, "busy")))
      yield* sleep(100)
      const queued = post(gateway.url, "queued")
      yield* sleep(50)
      const refused = yield* Effect.promise(() => post(gateway.url, "refused"))
      expect(refused.status).toBe(429)
      expect(Number(refused.retryAfter)).toBeGreaterThanOrEqual(1)
      expect(refused.body.error?.code).toBe("rate_limit_exceeded")
      expect(refused.body.error?.message).toContain("the queue is full (1 waiting)")
      const served = yield* Effect.promise(() => Promise.all([inFlight, queued]))
      expect(served.map((r) => r.status)).toEqual([200, 200])
      expect(gateway.simulator("only").stats().requests).toBe(2)
    }).pipe(Effect.scoped)
  )

  it.live("answers 429 when the wait passes the queue's deadline", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(oneAtATime(600, { maxSize: 5, maxWaitMs: 150 }))
      const busy = Effect.runPromise(Effect.promise(() => post(gateway.url, "busy")))
      yield* sleep(50)
      const late = yield* Effect.promise(() => post(gateway.url, "late"))
      expect(late.status).toBe(429)
      expect(late.retryAfter).not.toBeNull()
      expect(late.body.error?.message).toContain("waited 150ms in the queue")
      expect((yield* Effect.promise(() => busy)).status).toBe(200)
    }).pipe(Effect.scoped)
  )

  it.live("serves the queue highest priority first, FIFO within a priority", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(oneAtATime(150, { maxSize: 10, maxWaitMs: 10_000 }))
      const all: Array<Promise<unknown>> = [post(gateway.url, "busy")]
      yield* sleep(50)
      for (const [content, priority] of [
        ["low-1", "0"],
        ["low-2", "0"],
        ["high-1", "5"],
        ["high-2", "5"]
      ] as const) {
        all.push(post(gateway.url, content, { "x-sluice-priority": priority }))
        yield* sleep(20)
      }
      yield* Effect.promise(() => Promise.all(all))
      const order = gateway
        .simulator("only")
        .requests()
        .map((r) => (r.body as { messages: Array<{ content: string }> }).messages[0]?.content ?? "")
      expect(order).toEqual(["busy", "high-1", "high-2", "low-1", "low-2"])
    }).pipe(Effect.scoped)
  )
})
