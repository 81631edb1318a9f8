import { describe, expect, it } from "@effect/vitest"
import { Cause, Clock, Effect, Fiber, Layer, Random, Stream, TestClock } from "effect"
import { Errors, Guard, RateLimiter, Router, StateStore, Strategy, Topology } from "../src/index.js"
import type { Provider } from "../src/index.js"
import type { GuardLog } from "./fixtures.js"
import {
  answer,
  chatRequest,
  chunk,
  completion,
  httpError,
  opened,
  preferring,
  provider,
  recordingGuard,
  routerLayer,
  streamOf,
  upstream
} from "./fixtures.js"

const pool = (upstreams: ReadonlyArray<Topology.Upstream>, fields: Partial<Topology.Pool> = {}) =>
  Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams, ...fields })

describe("Router retry backoff", () => {
  it.effect("waits the pool's exponential backoff between attempts and records it", () => {
    const calls: Array<string> = []
    const pools = [
      pool([upstream("a"), upstream("b"), upstream("c")], {
        retry: { ...Topology.defaults.retry, initialBackoffMs: 1_000, multiplier: 2 },
        maxAttempts: 3
      })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat(chatRequest()))
      yield* TestClock.adjust("1 millis")
      expect(calls).toEqual(["a"])
      yield* TestClock.adjust("999 millis")
      expect(calls).toEqual(["a", "b"]) // after 1 s
      yield* TestClock.adjust("1999 millis")
      expect(calls).toEqual(["a", "b"]) // not before 2 s more
      yield* TestClock.adjust("1 millis")
      const { decision } = yield* Fiber.join(fiber)
      expect(calls).toEqual(["a", "b", "c"])
      expect(decision.upstream).toBe("c")
      expect(decision.backoffMs).toBe(3_000)
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          strategy: preferring(["a", "b", "c"]),
          provider: provider({
            chat: (u) =>
              Effect.suspend(() => {
                calls.push(u.id)
                return u.id === "c" ? Effect.succeed(answer(completion(u.id))) : Effect.fail(httpError(u.id, 503))
              })
          })
        })
      )
    )
  })

  it.effect("stops retrying after retry.maxTotalMs and returns the last error", () => {
    const pools = [
      pool([upstream("a"), upstream("b"), upstream("c")], {
        retry: { ...Topology.defaults.retry, initialBackoffMs: 1_000, maxTotalMs: 1_500 },
        maxAttempts: 3
      })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(Effect.either(router.chat(chatRequest())))
      yield* TestClock.adjust("10 seconds")
      const result = yield* Fiber.join(fiber)
      expect(result._tag).toBe("Left")
      // a failed at 0, backoff 1 s, b failed at 1 s, backoff 2 s would pass 1.5 s: the total limit
      // stops it once the time is spent.
      expect(result._tag === "Left" && result.left._tag).toBe("UpstreamError")
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          strategy: preferring(["a", "b", "c"]),
          provider: provider({
            chat: (u) => Effect.flatMap(Effect.sleep("600 millis"), () => Effect.fail(httpError(u.id, 500)))
          })
        })
      )
    )
  })
})

describe("Router retry limits and jitter", () => {
  it.effect("ends a request at once when its next backoff would pass retry.maxTotalMs", () => {
    const starts: Array<[string, number]> = []
    const pools = [
      pool([upstream("a"), upstream("b"), upstream("c")], {
        retry: { ...Topology.defaults.retry, initialBackoffMs: 1_000, maxTotalMs: 1_500 },
        maxAttempts: 3
      })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(Effect.either(router.chat(chatRequest())))
      // a fails at 0.6 s; a 1 s backoff would start b at 1.6 s, past the 1.5 s limit: the request
      // ends then and there, without waiting out a backoff that cannot lead anywhere.
      yield* TestClock.adjust("600 millis")
      expect(fiber.unsafePoll()).not.toBeNull()
      const result = yield* Fiber.join(fiber)
      expect(starts).toEqual([["a", 0]])
      expect(result._tag === "Left" && result.left).toMatchObject({ _tag: "UpstreamError", upstream: "a" })
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          strategy: preferring(["a", "b", "c"]),
          provider: provider({
            chat: (u) =>
              Effect.flatMap(Clock.currentTimeMillis, (now) => {
                starts.push([u.id, now])
                return Effect.flatMap(Effect.sleep("600 millis"), () => Effect.fail(httpError(u.id, 500)))
              })
          })
        })
      )
    )
  })

  it.effect("jitters each backoff to 50–100% of the exponential delay, reproducibly for a seed", () => {
    const backoffs = (seed: number) => {
      const starts: Array<number> = []
      const pools = [
        pool([upstream("a"), upstream("b"), upstream("c"), upstream("d")], {
          retry: { ...Topology.defaults.retry, initialBackoffMs: 1_000, multiplier: 2, jitter: true },
          maxAttempts: 4
        })
      ]
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const fiber = yield* Effect.fork(router.chat(chatRequest()).pipe(Effect.withRandom(Random.make(seed))))
        for (let i = 0; i < 100; i++) yield* TestClock.adjust("100 millis")
        const { decision } = yield* Fiber.join(fiber)
        expect(decision.upstream).toBe("d")
        const gaps = starts.slice(1).map((t, i) => Math.round(t - starts[i]!))
        return { gaps, recorded: decision.backoffMs }
      }).pipe(
        Effect.provide(
          routerLayer(pools, {
            strategy: preferring(["a", "b", "c", "d"]),
            provider: provider({
              chat: (u) =>
                Effect.flatMap(Clock.currentTimeMillis, (now) => {
                  starts.push(now)
                  return u.id === "d" ? Effect.succeed(answer(completion(u.id))) : Effect.fail(httpError(u.id, 503))
                })
            })
          })
        )
      )
    }
    return Effect.gen(function* () {
      const first = yield* backoffs(7)
      const again = yield* backoffs(7)
      const other = yield* backoffs(8)
      expect(first.gaps).toHaveLength(3)
      first.gaps.forEach((gap, i) => {
        const full = 1_000 * 2 ** i
        expect(gap).toBeGreaterThanOrEqual(full / 2)
        expect(gap).toBeLessThanOrEqual(full)
      })
      expect(again.gaps).toEqual(first.gaps)
      expect(other.gaps).not.toEqual(first.gaps)
      expect(Math.abs(first.recorded - first.gaps.reduce((a, b) => a + b, 0))).toBeLessThanOrEqual(2)
    })
  })
})

describe("Router sticky sessions", () => {
  it.effect("keeps a session on its upstream until the affinity's TTL passes", () => {
    const pools = [
      pool([upstream("a"), upstream("b")], {
        sticky: { key: "header", header: "x-session-id", ttlMs: 60_000 }
      })
    ]
    let preference: ReadonlyArray<string> = ["b"]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const options = { headers: { "x-session-id": "s1" } }
      const first = yield* router.chat(chatRequest(), options)
      expect([first.decision.upstream, first.decision.sticky]).toEqual(["b", "miss"])
      preference = ["a"] // the strategy alone would now pick "a"
      const second = yield* router.chat(chatRequest(), options)
      expect([second.decision.upstream, second.decision.sticky]).toEqual(["b", "hit"])
      yield* TestClock.adjust("61 seconds")
      const third = yield* router.chat(chatRequest(), options)
      expect([third.decision.upstream, third.decision.sticky]).toEqual(["a", "miss"])
      // Other sessions are independent.
      const other = yield* router.chat(chatRequest(), { headers: { "x-session-id": "s2" } })
      expect(other.decision.sticky).toBe("miss")
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          strategy: {
            name: "switchable",
            select: (selection) => selection.candidates.find((u) => u.id === preference[0]) ?? selection.candidates[0]
          },
          provider: provider({ chat: (u) => Effect.succeed(answer(completion(u.id))) })
        })
      )
    )
  })

  it.effect("moves the affinity when the session's upstream fails", () => {
    const failing = new Set(["a"])
    const pools = [
      pool([upstream("a"), upstream("b")], { sticky: { key: "user", header: "x-session-id", ttlMs: 60_000 } })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      failing.delete("a")
      const first = yield* router.chat(chatRequest("gpt-4o", { user: "alice" }))
      expect(first.decision.upstream).toBe("a")
      failing.add("a")
      const moved = yield* router.chat(chatRequest("gpt-4o", { user: "alice" }))
      expect(moved.decision.upstream).toBe("b")
      failing.delete("a")
      const after = yield* router.chat(chatRequest("gpt-4o", { user: "alice" }))
      expect([after.decision.upstream, after.decision.sticky]).toEqual(["b", "hit"])
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          strategy: preferring(["a", "b"]),
          provider: provider({
            chat: (u) =>
              failing.has(u.id) ? Effect.fail(httpError(u.id, 500)) : Effect.succeed(answer(completion(u.id)))
          })
        })
      )
    )
  })
})

describe("Router stream stall detection", () => {
  it.effect("fails a stream that goes silent between events past interChunkTimeoutMs", () => {
    const slow = (u: Topology.Upstream) =>
      Stream.concat(
        streamOf(chunk("first"), chunk(" second")),
        Stream.fromEffect(Effect.as(Effect.sleep("10 seconds"), chunk(" late")))
      ).pipe(Stream.mapError(() => httpError(u.id, 500)))
    const pools = [pool([upstream("a", { stream: { ...Topology.defaults.stream, interChunkTimeoutMs: 2_000 } })])]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const routed = yield* router.chatStream(chatRequest())
      const fiber = yield* Effect.fork(Effect.either(Router.collect(routed)))
      yield* TestClock.adjust("2 seconds")
      const result = yield* Fiber.join(fiber)
      expect(result._tag === "Left" && result.left.message).toBe("stream stalled: no event within 2000 ms")
      expect(result._tag === "Left" && result.left.kind).toBe("timeout")
      expect((yield* routed.decision).outcome).toBe("error")
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          provider: provider({
            chatStream: (u): ReturnType<Provider.Service["chatStream"]> => opened(slow(u))
          })
        })
      )
    )
  })
})

describe("Router queue", () => {
  const limited = upstream("only", { limits: { maxConcurrency: 1 } })
  const queued = (queue: Topology.Pool["queue"]) => [pool([limited], { queue })]
  /** The router over one upstream taking one request at a time (1 s each), with the rate limiter. */
  const queuedLayer = (queue: Topology.Pool["queue"], served: Array<string>) =>
    routerLayer(queued(queue), {
      provider: provider({
        chat: (u, { request }) =>
          Effect.as(
            Effect.sleep("1 second").pipe(
              Effect.tap(() => Effect.sync(() => served.push(String(request.messages[0]?.content))))
            ),
            answer(completion(u.id))
          )
      }),
      guards: Guard.layer(RateLimiter.guard).pipe(
        Layer.provide(RateLimiter.layer),
        Layer.provide(StateStore.layerMemory)
      )
    })
  const ask = (content: string, priority = 0) =>
    Effect.flatMap(Router.Router, (router) =>
      router.chat({ model: "gpt-4o", messages: [{ role: "user", content }] }, { priority })
    )

  it.effect("holds requests until capacity frees, highest priority first, FIFO within one", () => {
    const served: Array<string> = []
    return Effect.gen(function* () {
      const fibers = [yield* Effect.fork(ask("busy"))]
      yield* TestClock.adjust("1 millis")
      for (const [content, priority] of [
        ["low-1", 0],
        ["low-2", 0],
        ["high-1", 5],
        ["high-2", 5]
      ] as const) {
        fibers.push(yield* Effect.fork(ask(content, priority)))
        yield* TestClock.adjust("1 millis")
      }
      yield* TestClock.adjust("10 seconds")
      const results = yield* Effect.forEach(fibers, Fiber.join)
      expect(served).toEqual(["busy", "high-1", "high-2", "low-1", "low-2"])
      // Each waited for the ones ahead of it: about 1, 2, 3, 4 seconds.
      expect(results.map((r) => Math.round(r.decision.queueWaitMs / 1000))).toEqual([0, 3, 4, 1, 2])
    }).pipe(Effect.provide(queuedLayer({ maxSize: 10, maxWaitMs: 30_000 }, served)))
  })

  it.effect(
    "waits for the completion tokens a request in flight reserved but did not use, not for the 60 s window",
    () => {
      // TPM 1000; each request reserves 9 prompt + 600 completion tokens and really uses 9 + 10.
      const tpmBound = upstream("only", { limits: { tpm: 1_000 } })
      const served: Array<string> = []
      return Effect.gen(function* () {
        const ask600 = (content: string) =>
          Effect.flatMap(Router.Router, (router) =>
            router.chat({ model: "gpt-4o", messages: [{ role: "user", content }], max_tokens: 600 })
          )
        const first = yield* Effect.fork(ask600("first"))
        yield* TestClock.adjust("1 millis")
        // The window is 609 tokens full for 60 s, longer than the 30 s the queue may wait; but the
        // first request's unused reservation comes back when it finishes, after 1 s.
        const second = yield* Effect.fork(ask600("second"))
        yield* TestClock.adjust("2 seconds")
        yield* Fiber.join(first)
        const { decision } = yield* Fiber.join(second)
        expect(served).toEqual(["first", "second"])
        expect(decision.queueWaitMs).toBeGreaterThan(900)
        expect(decision.queueWaitMs).toBeLessThan(2_000)
      }).pipe(
        Effect.provide(
          routerLayer([pool([tpmBound], { queue: { maxSize: 10, maxWaitMs: 30_000 } })], {
            provider: provider({
              chat: (u, { request }) =>
                Effect.as(
                  Effect.sleep("1 second").pipe(
                    Effect.tap(() => Effect.sync(() => served.push(String(request.messages[0]?.content))))
                  ),
                  answer(completion(u.id, { prompt_tokens: 9, completion_tokens: 10, total_tokens: 19 }))
                )
            }),
            guards: Guard.layer(RateLimiter.guard).pipe(
              Layer.provide(RateLimiter.layer),
              Layer.provide(StateStore.layerMemory)
            )
          })
        )
      )
    }
  )

  it.effect(
    "refuses with RateLimited and Retry-After when the queue is full or the wait would pass its deadline",
    () => {
      const served: Array<string> = []
      return Effect.gen(function* () {
        const busy = yield* Effect.fork(ask("busy"))
        yield* TestClock.adjust("1 millis")
        const waiting = yield* Effect.fork(ask("waiting"))
        yield* TestClock.adjust("1 millis")
        const full = yield* Effect.either(ask("one too many"))
        expect(full._tag === "Left" && full.left).toBeInstanceOf(Errors.RateLimited)
        expect(full._tag === "Left" && full.left.message).toContain("the queue is full (1 waiting)")
        yield* TestClock.adjust("5 seconds")
        yield* Fiber.join(busy)
        expect((yield* Fiber.join(waiting)).decision.queueWaitMs).toBeGreaterThan(900)
        expect(served).toEqual(["busy", "waiting"])
      }).pipe(Effect.provide(queuedLayer({ maxSize: 1, maxWaitMs: 30_000 }, served)))
    }
  )
})

describe("Router after an upstream's 429", () => {
  const only = upstream("a")
  const guards = Guard.layer(RateLimiter.guard).pipe(
    Layer.provide(RateLimiter.layer),
    Layer.provide(StateStore.layerMemory)
  )
  /** `a` answers its first request with 429 and `retryAfterMs`, every later one with a completion. */
  const answering429 = (retryAfterMs: number, calls: Array<number>) =>
    provider({
      chat: (u) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          calls.push(now)
          return calls.length === 1
            ? Effect.fail(Errors.Failure.http(u.id, 429, "HTTP 429: slow down", { retryAfterMs }))
            : Effect.succeed(answer(completion(u.id)))
        })
    })

  it.effect("waits in the queue for the Retry-After of the only upstream, then is served by it", () => {
    const calls: Array<number> = []
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat(chatRequest()))
      yield* TestClock.adjust("1999 millis")
      expect(calls).toEqual([0]) // held back until the Retry-After has passed
      yield* TestClock.adjust("30 seconds")
      const { decision } = yield* Fiber.join(fiber)
      expect(calls).toHaveLength(2)
      expect(calls[1]).toBeGreaterThanOrEqual(2_000)
      expect(decision.upstream).toBe("a")
      expect(decision.attempts.map((a) => a.outcome)).toEqual(["failure", "success"])
      expect(decision.queueWaitMs).toBeGreaterThan(0)
    }).pipe(
      Effect.provide(
        routerLayer([pool([only], { queue: { maxSize: 10, maxWaitMs: 30_000 } })], {
          provider: answering429(2_000, calls),
          guards
        })
      )
    )
  })

  it.effect("answers 429 with the upstream's Retry-After when it is longer than the queue's wait", () => {
    const calls: Array<number> = []
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(Effect.flip(router.chat(chatRequest())))
      yield* TestClock.adjust("1 minute")
      const error = yield* Fiber.join(fiber)
      expect(error._tag).toBe("RateLimited")
      expect(error._tag === "RateLimited" && error.retryAfterSeconds).toBe(60)
      expect(calls).toHaveLength(1)
    }).pipe(
      Effect.provide(
        routerLayer([pool([only], { queue: { maxSize: 10, maxWaitMs: 30_000 } })], {
          provider: answering429(60_000, calls),
          guards
        })
      )
    )
  })
})

describe("Router queue wake-ups", () => {
  it.effect("is woken by capacity freed while another upstream of the pass was being tried", () => {
    const a = upstream("a", { limits: { maxConcurrency: 1 } })
    const b = upstream("b")
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const busy = yield* Effect.fork(router.chat(chatRequest()))
      yield* TestClock.adjust("1 millis")
      // `a` is full, so this one goes to `b`, which takes 5 s and fails; `a` frees at 1 s meanwhile.
      const waiting = yield* Effect.fork(router.chat(chatRequest()))
      yield* TestClock.adjust("6 seconds")
      expect((yield* Fiber.join(busy)).decision.upstream).toBe("a")
      const served = yield* Fiber.poll(waiting)
      // Before the fix it slept on a change that had already happened, until the queue's 30 s.
      expect(served._tag).toBe("Some")
      const { decision } = yield* Fiber.join(waiting)
      expect(decision.upstream).toBe("a")
      expect(decision.attempts.map((x) => `${x.upstream}:${x.outcome}`)).toEqual(["b:failure", "a:success"])
    }).pipe(
      Effect.provide(
        routerLayer([pool([a, b], { maxAttempts: 1, queue: { maxSize: 10, maxWaitMs: 30_000 } })], {
          strategy: preferring(["a", "b"]),
          provider: provider({
            chat: (u) =>
              u.id === "a"
                ? Effect.as(Effect.sleep("1 second"), answer(completion("a")))
                : Effect.zipRight(Effect.sleep("5 seconds"), Effect.fail(httpError("b", 503)))
          }),
          guards: Guard.layer(RateLimiter.guard).pipe(
            Layer.provide(RateLimiter.layer),
            Layer.provide(StateStore.layerMemory)
          )
        })
      )
    )
  })
})

describe("Router with a custom stage that has a bug", () => {
  const served = provider({ chat: (u) => Effect.succeed(answer(completion(u.id))) })

  it.effect("a strategy that throws fails the request as a defect recorded as an error, not a hang or a leak", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const exit = yield* Effect.exit(router.chat(chatRequest()))
      expect(exit._tag).toBe("Failure")
      expect(exit._tag === "Failure" && Cause.isDie(exit.cause)).toBe(true)
    }).pipe(
      Effect.provide(
        routerLayer([pool([upstream("a")])], {
          strategy: Strategy.make("broken", () => {
            throw new Error("strategy bug")
          }),
          provider: served
        })
      )
    )
  )

  it.effect("a strategy that picks an upstream the stages excluded is overruled by the first candidate", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const { decision } = yield* router.chat(chatRequest())
      expect(decision.upstream).toBe("on")
    }).pipe(
      Effect.provide(
        routerLayer([pool([upstream("off", { enabled: false }), upstream("on")])], {
          strategy: Strategy.make("wrong", (selection) => selection.pool.upstreams[0]!),
          provider: served
        })
      )
    )
  )

  it.effect("a guard that throws in admit gives back what the guards before it reserved", () => {
    const log: GuardLog = { admitted: [], released: [] }
    const throwing: Guard.Guard = {
      name: "throwing",
      check: () => undefined,
      admit: () => {
        throw new Error("guard bug")
      }
    }
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const exit = yield* Effect.exit(router.chat(chatRequest()))
      expect(exit._tag).toBe("Failure")
      expect(log.admitted).toEqual(["a"])
      expect(log.released.map((r) => r.outcome._tag)).toEqual(["NotSent"])
    }).pipe(
      Effect.provide(
        routerLayer([pool([upstream("a")])], {
          provider: served,
          guards: Layer.succeed(Guard.Guards, [recordingGuard(log), throwing])
        })
      )
    )
  })
})
