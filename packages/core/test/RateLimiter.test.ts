import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Either, Fiber, Layer, TestClock } from "effect"
import * as RateLimiter from "../src/RateLimiter.js"
import type { Provider } from "../src/index.js"
import { Errors, Guard, StateStore, Topology } from "../src/index.js"

const up = (id: string, limits: Topology.Upstream["limits"]): Topology.Upstream =>
  Topology.upstream({ id, provider: "openai-compatible", baseUrl: "http://x", limits })

const requestFor = (upstream: Topology.Upstream, promptTokens = 10, reservedOutputTokens = 10): Guard.RequestInfo => ({
  pool: Topology.pool({ id: "p", models: ["m"], upstreams: [upstream] }),
  model: "m",
  promptTokens,
  reservedOutputTokens,
  sessionKey: undefined,
  priority: 0,
  stream: false
})

const attemptOn = (upstream: Topology.Upstream, promptTokens = 10, reservedOutputTokens = 10): Guard.Attempt => ({
  ...requestFor(upstream, promptTokens, reservedOutputTokens),
  upstream,
  attempt: 1
})

const success = (inputTokens?: number, outputTokens?: number): Extract<Guard.Outcome, { _tag: "Success" }> => ({
  _tag: "Success",
  latencyMs: 5,
  inputTokens,
  outputTokens
})

const rateLimited = (upstream: string, retryAfterMs?: number, rateLimits?: Provider.RateLimitInfo): Guard.Outcome => ({
  _tag: "Failure",
  latencyMs: 5,
  error: new Errors.UpstreamError({
    upstream,
    kind: "http",
    status: 429,
    message: "HTTP 429: slow down",
    retryable: true,
    ...(retryAfterMs === undefined ? {} : { retryAfterMs })
  }),
  ...(rateLimits === undefined ? {} : { rateLimits })
})

const testLayer = RateLimiter.layer.pipe(Layer.provide(StateStore.layerMemory))
const limiter = RateLimiter.RateLimiter

const check = (upstream: Topology.Upstream, promptTokens?: number, reservedOutputTokens?: number) =>
  Effect.flatMap(limiter, ({ guard }) =>
    Guard.check(guard, upstream, requestFor(upstream, promptTokens, reservedOutputTokens))
  )

const admit = (upstream: Topology.Upstream, promptTokens?: number, reservedOutputTokens?: number) =>
  Effect.flatMap(limiter, ({ guard }) => Guard.admit(guard, attemptOn(upstream, promptTokens, reservedOutputTokens)))

/** Admits and releases at once with `outcome`: a whole call as the limiter sees it. */
const call = (upstream: Topology.Upstream, outcome: Guard.Outcome = success()) =>
  Effect.flatMap(admit(upstream), (release) => release(outcome))

const snapshot = (upstream: Topology.Upstream) => Effect.flatMap(limiter, (service) => service.snapshot(upstream))

/** The guard's version, read where the router reads it: with the exclusions it waits on. */
const version = Effect.map(limiter, ({ guard }) => guard.version!())

const changed = (since: number) => Effect.flatMap(limiter, ({ guard }) => guard.changed!(since))

const headroom = (upstream: Topology.Upstream) =>
  Effect.flatMap(limiter, ({ guard }) =>
    Effect.map(Clock.currentTimeMillis, (now) => guard.tokenHeadroom!(upstream, now))
  )

/** Lets forked fibers run until they block. */
const settle = Effect.repeatN(Effect.yieldNow(), 20)

describe("RateLimiter", () => {
  it.effect("is the guard named rate-limiter, with a changed signal", () =>
    Effect.gen(function* () {
      const guard = yield* RateLimiter.guard
      expect(guard.name).toBe("rate-limiter")
      expect(guard.changed).toBeDefined()
      expect(guard.version).toBeDefined()
      expect(yield* check(up("free", {}))).toBeUndefined()
    }).pipe(Effect.provide(testLayer))
  )

  describe("requests per minute", () => {
    it.effect(
      "admits rpm requests, then excludes with a waitable reason and the exact wait, and admits when the window slides",
      () =>
        Effect.gen(function* () {
          const u = up("a", { rpm: 3 })
          yield* Effect.repeatN(call(u), 2)
          const excluded = yield* check(u)
          expect(excluded).toEqual({
            upstream: "a",
            stage: "rate-limiter",
            reason: "RPM 3 reached; frees in 60s",
            retryAfterMs: 60_000,
            waitable: true
          })
          const refused = yield* Effect.flip(admit(u))
          expect(refused).toEqual(excluded)

          yield* TestClock.adjust("58800 millis")
          expect(yield* check(u)).toMatchObject({ reason: "RPM 3 reached; frees in 1.2s", retryAfterMs: 1200 })
          yield* TestClock.adjust("1200 millis")
          expect(yield* check(u)).toBeUndefined()
          yield* Effect.repeatN(call(u), 2)
          expect(yield* check(u)).toMatchObject({ retryAfterMs: 60_000 })
        }).pipe(Effect.provide(testLayer))
    )

    it.effect("slides: 3 at t=30s free at t=90s, not at the minute boundary", () =>
      Effect.gen(function* () {
        const u = up("a", { rpm: 3 })
        yield* TestClock.adjust("30 seconds")
        yield* Effect.repeatN(call(u), 2)
        yield* TestClock.adjust("30 seconds") // t = 60 s
        expect(yield* check(u)).toMatchObject({ retryAfterMs: 30_000, waitable: true })
        yield* TestClock.adjust("29999 millis")
        expect(yield* check(u)).toMatchObject({ retryAfterMs: 1 })
        yield* TestClock.adjust("1 millis") // t = 90 s
        yield* Effect.repeatN(call(u), 2)
        expect(yield* check(u)).toMatchObject({ retryAfterMs: 60_000 })
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("frees each request 60s after it was admitted, oldest first", () =>
      Effect.gen(function* () {
        const u = up("a", { rpm: 3 })
        yield* call(u) // t = 0
        yield* TestClock.adjust("20 seconds")
        yield* call(u)
        yield* call(u) // t = 20 s
        expect(yield* check(u)).toMatchObject({ retryAfterMs: 40_000 })
        yield* TestClock.adjust("40 seconds") // t = 60 s: only the first has left the window
        yield* call(u)
        expect(yield* check(u)).toMatchObject({ retryAfterMs: 20_000 })
        expect(yield* snapshot(u)).toMatchObject({ requestsUsed: 3, inFlight: 0, limits: { rpm: 3 } })
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("never lets more than rpm requests into any 60s window", () =>
      Effect.gen(function* () {
        const u = up("a", { rpm: 5 })
        const admitted: Array<number> = []
        // Try every 1.3 s (across bucket boundaries) for 5 simulated minutes.
        for (let t = 0; t < 300_000; t += 1300) {
          const result = yield* Effect.either(admit(u))
          if (Either.isRight(result)) {
            admitted.push(t)
            yield* result.right(success())
          }
          yield* TestClock.adjust("1300 millis")
        }
        for (const start of admitted) {
          expect(admitted.filter((t) => t >= start && t < start + 60_000).length).toBeLessThanOrEqual(5)
        }
        // ... and gets close to it: 5 per minute for 5 minutes.
        expect(admitted.length).toBeGreaterThanOrEqual(24)
      }).pipe(Effect.provide(testLayer))
    )
  })

  describe("tokens per minute", () => {
    it.effect("counts prompt + reserved output, then corrects to actual usage on release", () =>
      Effect.gen(function* () {
        const u = up("a", { tpm: 1000 })
        const first = yield* admit(u, 100, 400)
        const second = yield* admit(u, 100, 400)
        // 800 of the 1000 are completion reservations in flight: refunds may make room sooner.
        expect(yield* check(u, 100, 400)).toEqual({
          upstream: "a",
          stage: "rate-limiter",
          reason:
            "TPM 1000 reached (1000 used, 800 of it reserved for completions in flight, this request needs 500); " +
            "frees as they finish, at the latest in 60s",
          retryAfterMs: 60_000,
          waitable: true,
          mayFreeSooner: true
        })
        // A request no refund could make room for only waits for the window.
        expect(yield* check(u, 100, 900)).toEqual({
          upstream: "a",
          stage: "rate-limiter",
          reason: "TPM 1000 reached (1000 used, this request needs 1000); frees in 60s",
          retryAfterMs: 60_000,
          waitable: true
        })
        yield* first(success(100, 50))
        expect(yield* snapshot(u)).toMatchObject({ tokensUsed: 650, requestsUsed: 2, inFlight: 1 })
        expect(yield* check(u, 100, 400)).toMatchObject({ stage: "rate-limiter" })
        yield* second(success(100, 50))
        // Unused reservations were refunded: another one fits now, but not two.
        expect(yield* snapshot(u)).toMatchObject({ tokensUsed: 300 })
        yield* admit(u, 100, 400)
        expect(yield* check(u, 100, 400)).toMatchObject({ retryAfterMs: 60_000 })
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("refunds request, tokens and slot whole when an admission is rolled back (NotSent)", () =>
      Effect.gen(function* () {
        const u = up("a", { rpm: 1, tpm: 1000, maxConcurrency: 1 })
        const release = yield* admit(u, 100, 400)
        expect(yield* check(u, 100, 400)).toMatchObject({ stage: "rate-limiter", waitable: true })
        yield* release({ _tag: "NotSent", latencyMs: 0 })
        expect(yield* snapshot(u)).toMatchObject({ requestsUsed: 0, tokensUsed: 0, inFlight: 0 })
        expect(yield* check(u, 100, 400)).toBeUndefined()
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("charges more than the reservation when the upstream used more", () =>
      Effect.gen(function* () {
        const u = up("a", { tpm: 1000 })
        const release = yield* admit(u, 100, 100)
        yield* release(success(150, 600))
        expect(yield* snapshot(u)).toMatchObject({ tokensUsed: 750 })
        expect(yield* check(u, 100, 200)).toMatchObject({ waitable: true })
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("excludes a request larger than the TPM limit for good (not waitable)", () =>
      Effect.gen(function* () {
        const u = up("a", { tpm: 6000 })
        const expected = {
          upstream: "a",
          stage: "rate-limiter",
          reason: "needs 9000 tokens, TPM limit is 6000",
          waitable: false
        }
        expect(yield* check(u, 1000, 8000)).toEqual(expected)
        expect(yield* Effect.flip(admit(u, 1000, 8000))).toEqual(expected)
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("a failure keeps the request and its prompt tokens counted but refunds the output reservation", () =>
      Effect.gen(function* () {
        const u = up("a", { rpm: 10, tpm: 1000 })
        const release = yield* admit(u, 100, 400)
        yield* release({
          _tag: "Failure",
          latencyMs: 5,
          error: new Errors.UpstreamError({
            upstream: "a",
            kind: "http",
            status: 500,
            message: "boom",
            retryable: true
          })
        })
        expect(yield* snapshot(u)).toMatchObject({ requestsUsed: 1, tokensUsed: 100, inFlight: 0 })
        const interrupted = yield* admit(u, 100, 400)
        yield* interrupted({ _tag: "Interrupted", latencyMs: 5 })
        expect(yield* snapshot(u)).toMatchObject({ requestsUsed: 2, tokensUsed: 200, inFlight: 0 })
      }).pipe(Effect.provide(testLayer))
    )
  })

  describe("concurrency", () => {
    it.effect("excludes the third of maxConcurrency 2 until a release, and changed completes on that release", () =>
      Effect.gen(function* () {
        const u = up("a", { maxConcurrency: 2 })
        const first = yield* admit(u)
        yield* admit(u)
        expect(yield* check(u)).toEqual({
          upstream: "a",
          stage: "rate-limiter",
          reason: "2 of 2 concurrent requests in flight",
          waitable: true
        })
        const waiter = yield* Effect.fork(changed(yield* version))
        yield* settle
        expect(waiter.unsafePoll()).toBeNull()
        yield* first(success())
        yield* Fiber.join(waiter)
        expect(yield* check(u)).toBeUndefined()
        expect(yield* snapshot(u)).toMatchObject({ inFlight: 1 })
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("changed waits for a release however much time passes (no polling)", () =>
      Effect.gen(function* () {
        const u = up("a", { maxConcurrency: 1 })
        yield* admit(u)
        expect(yield* check(u)).toBeDefined()
        const waiter = yield* Effect.fork(changed(yield* version))
        yield* TestClock.adjust("1 hour")
        yield* settle
        expect(waiter.unsafePoll()).toBeNull()
        yield* Fiber.interrupt(waiter)
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("changed completes at once when a release happened since the version read at the check", () =>
      Effect.gen(function* () {
        const u = up("a", { maxConcurrency: 1 })
        const release = yield* admit(u)
        expect(yield* check(u)).toBeDefined()
        const seen = yield* version
        // The release lands between the check and the wait: the wait must not miss it.
        yield* release(success())
        yield* changed(seen)
        expect(yield* check(u)).toBeUndefined()
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("admit re-checks: of two admissions racing for the last slot, one fails with the exclusion", () =>
      Effect.gen(function* () {
        const u = up("a", { maxConcurrency: 3 })
        yield* admit(u)
        yield* admit(u)
        // Both see a free slot...
        expect(yield* check(u)).toBeUndefined()
        expect(yield* check(u)).toBeUndefined()
        // ...but only one gets it.
        const results = yield* Effect.all([Effect.either(admit(u)), Effect.either(admit(u))], {
          concurrency: "unbounded"
        })
        expect(results.filter(Either.isRight)).toHaveLength(1)
        const lost = results.find(Either.isLeft)!
        expect(lost.left).toEqual({
          upstream: "a",
          stage: "rate-limiter",
          reason: "3 of 3 concurrent requests in flight",
          waitable: true
        })
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("a second release of the same admission frees nothing more", () =>
      Effect.gen(function* () {
        const u = up("a", { maxConcurrency: 2 })
        const release = yield* admit(u)
        yield* admit(u)
        yield* release(success())
        yield* release(success())
        expect(yield* snapshot(u)).toMatchObject({ inFlight: 1 })
      }).pipe(Effect.provide(testLayer))
    )
  })

  describe("learning from the upstream", () => {
    it.effect("remaining 0 with a 20s reset blocks the upstream, waitable, until the reset", () =>
      Effect.gen(function* () {
        const u = up("a", {})
        const release = yield* admit(u)
        yield* release({ ...success(), rateLimits: { remainingRequests: 0, resetRequestsMs: 20_000 } })
        expect(yield* check(u)).toEqual({
          upstream: "a",
          stage: "rate-limiter",
          reason: "the upstream reported no requests remaining; resets in 20s",
          retryAfterMs: 20_000,
          waitable: true
        })
        expect(yield* snapshot(u)).toMatchObject({ remainingRequests: 0, learnedUntil: 20_000 })
        const waiter = yield* Effect.fork(changed(yield* version))
        yield* TestClock.adjust("19999 millis")
        expect(yield* check(u)).toMatchObject({ retryAfterMs: 1 })
        expect(waiter.unsafePoll()).toBeNull()
        yield* TestClock.adjust("1 millis")
        // The learned limit expiring is a change too.
        yield* Fiber.join(waiter)
        expect(yield* check(u)).toBeUndefined()
        expect((yield* snapshot(u)).learnedUntil).toBeUndefined()
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("remaining 2 admits at most 2 more until the reset", () =>
      Effect.gen(function* () {
        const u = up("a", { rpm: 100 })
        const release = yield* admit(u)
        yield* release({ ...success(), rateLimits: { remainingRequests: 2, resetRequestsMs: 10_000 } })
        yield* admit(u)
        yield* admit(u)
        expect(yield* check(u)).toMatchObject({ retryAfterMs: 10_000, waitable: true })
        yield* TestClock.adjust("10 seconds")
        expect(yield* check(u)).toBeUndefined()
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("remaining tokens below the reservation blocks until their reset", () =>
      Effect.gen(function* () {
        const u = up("a", {})
        const release = yield* admit(u, 100, 100)
        yield* release({ ...success(100, 20), rateLimits: { remainingTokens: 300, resetTokensMs: 5_000 } })
        yield* admit(u, 100, 100)
        expect(yield* check(u, 100, 100)).toEqual({
          upstream: "a",
          stage: "rate-limiter",
          reason: "the upstream reported 100 tokens remaining, this request needs 200; resets in 5s",
          retryAfterMs: 5_000,
          waitable: true
        })
        yield* TestClock.adjust("5 seconds")
        expect(yield* check(u, 100, 100)).toBeUndefined()
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("a 429 with retryAfterMs blocks the upstream until then", () =>
      Effect.gen(function* () {
        const u = up("a", {})
        yield* call(u, rateLimited("a", 7_000))
        expect(yield* check(u)).toEqual({
          upstream: "a",
          stage: "rate-limiter",
          reason: "the upstream answered 429; retry in 7s",
          retryAfterMs: 7_000,
          waitable: true
        })
        expect(yield* Effect.flip(admit(u))).toMatchObject({ retryAfterMs: 7_000 })
        const waiter = yield* Effect.fork(changed(yield* version))
        yield* TestClock.adjust("3 seconds")
        expect(yield* check(u)).toMatchObject({ retryAfterMs: 4_000 })
        expect(waiter.unsafePoll()).toBeNull()
        yield* TestClock.adjust("4 seconds")
        yield* Fiber.join(waiter)
        expect(yield* check(u)).toBeUndefined()
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("a 429 honours the Retry-After of its rate-limit headers", () =>
      Effect.gen(function* () {
        const u = up("a", {})
        yield* call(u, rateLimited("a", undefined, { retryAfterMs: 2_500 }))
        expect(yield* check(u)).toMatchObject({
          reason: "the upstream answered 429; retry in 2.5s",
          retryAfterMs: 2_500
        })
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("a 503 with Retry-After holds the upstream back until then; one without holds nothing", () =>
      Effect.gen(function* () {
        const u = up("a", {})
        const unavailable = (retryAfterMs?: number): Guard.Outcome => ({
          _tag: "Failure",
          latencyMs: 5,
          error: new Errors.UpstreamError({
            upstream: "a",
            kind: "http",
            status: 503,
            message: "HTTP 503: maintenance",
            retryable: true,
            ...(retryAfterMs === undefined ? {} : { retryAfterMs })
          })
        })
        yield* call(u, unavailable())
        expect(yield* check(u)).toBeUndefined()
        const later = yield* admit(u) // in flight while the 503 arrives
        yield* call(u, unavailable(30_000))
        expect(yield* check(u)).toEqual({
          upstream: "a",
          stage: "rate-limiter",
          reason: "the upstream answered 503; retry in 30s",
          retryAfterMs: 30_000,
          waitable: true
        })
        // A shorter 429 meanwhile does not shorten the hold, nor take its name.
        yield* later(rateLimited("a", 1_000))
        expect(yield* check(u)).toMatchObject({ reason: "the upstream answered 503; retry in 30s" })
        yield* TestClock.adjust("30 seconds")
        expect(yield* check(u)).toBeUndefined()
      }).pipe(Effect.provide(testLayer))
    )

    it.effect("of several reasons, the one that clears last is reported", () =>
      Effect.gen(function* () {
        const u = up("a", { rpm: 1 })
        yield* call(u, rateLimited("a", 5_000))
        expect(yield* check(u)).toMatchObject({ reason: "RPM 1 reached; frees in 60s", retryAfterMs: 60_000 })
      }).pipe(Effect.provide(testLayer))
    )
  })

  it.effect(
    "tokenHeadroom is the TPM left in the window, capped by the tokens the upstream reported; none without a token limit",
    () =>
      Effect.gen(function* () {
        const u = up("a", { tpm: 1000 })
        expect(yield* headroom(u)).toBe(1000)
        const release = yield* admit(u, 100, 300)
        expect(yield* headroom(u)).toBe(600)
        yield* release({ ...success(100, 50), rateLimits: { remainingTokens: 200, resetTokensMs: 5_000 } })
        expect(yield* headroom(u)).toBe(200)
        yield* TestClock.adjust("5 seconds")
        expect(yield* headroom(u)).toBe(850)
        expect(yield* headroom(up("free", {}))).toBeUndefined()
      }).pipe(Effect.provide(testLayer))
  )

  it.effect("reserve admits a request made outside routing against the budgets, released by an effect", () =>
    Effect.gen(function* () {
      const { reserve } = yield* limiter
      const u = up("a", { rpm: 2, maxConcurrency: 5 })
      const release = yield* reserve(u, 8, 1)
      expect(yield* snapshot(u)).toMatchObject({ requestsUsed: 1, tokensUsed: 9, inFlight: 1 })
      const waiter = yield* Effect.fork(changed(yield* version))
      yield* release(success(8, 1))
      yield* Fiber.join(waiter)
      expect(yield* snapshot(u)).toMatchObject({ requestsUsed: 1, tokensUsed: 9, inFlight: 0 })
      yield* call(u)
      expect(yield* Effect.flip(reserve(u, 8, 1))).toMatchObject({
        stage: "rate-limiter",
        reason: "RPM 2 reached; frees in 60s"
      })
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("two rate limiters on one shared store share the budget", () =>
    Effect.gen(function* () {
      const a = yield* RateLimiter.make
      const b = yield* RateLimiter.make
      const u = up("shared", { rpm: 2, maxConcurrency: 5 })
      yield* Guard.admit(a.guard, attemptOn(u))
      yield* Guard.admit(b.guard, attemptOn(u))
      expect(yield* Guard.check(a.guard, u, requestFor(u))).toMatchObject({ reason: "RPM 2 reached; frees in 60s" })
      expect(yield* Effect.flip(Guard.admit(b.guard, attemptOn(u)))).toMatchObject({ stage: "rate-limiter" })
      expect(yield* a.snapshot(u)).toMatchObject({ requestsUsed: 2, inFlight: 2 })
    }).pipe(Effect.provide(StateStore.layerMemory))
  )
})
