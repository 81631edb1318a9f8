import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Layer, Logger, TestClock } from "effect"
import * as CircuitBreaker from "../src/CircuitBreaker.js"
import type { Config } from "../src/index.js"
import { Errors, Guard, Matcher, Provider, Router, StateStore, Strategy, TokenCounter, Topology } from "../src/index.js"
import { chatRequest, completion } from "./fixtures.js"

const up = (
  id: string,
  settings: Partial<Config.CircuitBreakerConfig> = {},
  fields: Partial<Omit<Topology.Upstream, "id" | "provider" | "baseUrl" | "circuitBreaker">> = {}
): Topology.Upstream =>
  Topology.upstream({
    id,
    provider: "openai-compatible",
    baseUrl: "http://x",
    circuitBreaker: { ...Topology.defaults.circuitBreaker, ...settings },
    ...fields
  })

const requestFor = (upstream: Topology.Upstream): Guard.RequestInfo => ({
  pool: Topology.pool({ id: "p", models: ["m"], upstreams: [upstream] }),
  model: "m",
  promptTokens: 10,
  reservedOutputTokens: 10,
  sessionKey: undefined,
  priority: 0,
  stream: false
})

const attemptOn = (upstream: Topology.Upstream): Guard.Attempt => ({
  ...requestFor(upstream),
  upstream,
  attempt: 1
})

const success: Guard.Outcome = { _tag: "Success", latencyMs: 5, inputTokens: 10, outputTokens: 3 }
const interrupted: Guard.Outcome = { _tag: "Interrupted", latencyMs: 5 }

const upstreamError = (upstream: string, kind: Errors.UpstreamError["kind"], status?: number) =>
  new Errors.UpstreamError({
    upstream,
    kind,
    ...(status === undefined ? {} : { status }),
    message: "boom",
    retryable: status === undefined || status === 408 || status === 429 || status >= 500
  })

const http = (upstream: Topology.Upstream, status: number): Guard.Outcome => ({
  _tag: "Failure",
  latencyMs: 5,
  error: upstreamError(upstream.id, "http", status)
})

const failed = (upstream: Topology.Upstream, kind: "timeout" | "connection" | "protocol"): Guard.Outcome => ({
  _tag: "Failure",
  latencyMs: 5,
  error: upstreamError(upstream.id, kind)
})

const breakers = CircuitBreaker.CircuitBreaker
const testLayer = CircuitBreaker.layer.pipe(Layer.provide(StateStore.layerMemory))

/** One whole attempt through the guard: admit, then release with `outcome`. */
const call = (upstream: Topology.Upstream, outcome: Guard.Outcome) =>
  Effect.gen(function* () {
    const { guard } = yield* breakers
    const release = yield* Guard.admit(guard, attemptOn(upstream))
    yield* release(outcome)
  })

const calls = (upstream: Topology.Upstream, outcome: Guard.Outcome, times: number) =>
  Effect.repeatN(call(upstream, outcome), times - 1)

const check = (upstream: Topology.Upstream) =>
  Effect.flatMap(breakers, ({ guard }) => Guard.check(guard, upstream, requestFor(upstream)))

const snapshot = (upstream: Topology.Upstream) => Effect.flatMap(breakers, (service) => service.snapshot(upstream))

const admit = (upstream: Topology.Upstream) =>
  Effect.flatMap(breakers, ({ guard }) => Guard.admit(guard, attemptOn(upstream)))

describe("CircuitBreaker", () => {
  it.effect("opens after 5 failures within 60s and excludes with the reason and the time until half-open", () =>
    Effect.gen(function* () {
      const a = up("a")
      for (let i = 0; i < 4; i++) {
        yield* call(a, http(a, 500))
        yield* TestClock.adjust("10 seconds")
      }
      expect(yield* check(a)).toBeUndefined()
      yield* call(a, http(a, 500))
      expect(yield* check(a)).toEqual({
        upstream: "a",
        stage: "circuit-breaker",
        reason: "circuit open after 5 failures in 60s (last: HTTP 500: boom); half-open in 30s",
        retryAfterMs: 30_000
      })
      yield* TestClock.adjust("18 seconds")
      const later = yield* check(a)
      expect(later?.reason).toBe("circuit open after 5 failures in 60s (last: HTTP 500: boom); half-open in 12s")
      expect(later?.retryAfterMs).toBe(12_000)
      expect(later?.waitable).toBeUndefined()
      // A request that raced past the check is refused at admission with the same exclusion.
      expect(yield* Effect.flip(admit(a))).toEqual(later)
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("does not open when the failures are spread over more than the window", () =>
    Effect.gen(function* () {
      const a = up("a")
      // One failure every 15s: the window of 60s never holds five of them.
      for (let i = 0; i < 8; i++) {
        if (i > 0) yield* TestClock.adjust("15 seconds")
        yield* call(a, http(a, 503))
        expect(yield* check(a)).toBeUndefined()
      }
      expect((yield* snapshot(a)).failures).toBe(4)
      // A fifth failure within 60s of the last four does.
      yield* TestClock.adjust("1 second")
      yield* call(a, http(a, 503))
      expect((yield* check(a))?.stage).toBe("circuit-breaker")
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("ratio mode opens at failureRatio only once minimumRequests have been answered", () =>
    Effect.gen(function* () {
      const a = up("a", { failureThreshold: 100, failureRatio: 0.5, minimumRequests: 10 })
      yield* calls(a, http(a, 500), 4)
      yield* calls(a, success, 4)
      // 50% of 8 requests: not enough requests yet.
      expect(yield* check(a)).toBeUndefined()
      yield* call(a, success)
      expect(yield* check(a)).toBeUndefined()
      yield* call(a, http(a, 500))
      expect((yield* check(a))?.reason).toBe(
        "circuit open after 5 failures in 10 requests (50%) in 60s (last: HTTP 500: boom); half-open in 30s"
      )

      const b = up("b", { failureThreshold: 100, failureRatio: 0.5, minimumRequests: 10 })
      yield* calls(b, http(b, 500), 4)
      yield* calls(b, success, 20)
      expect(yield* check(b)).toBeUndefined()
      expect(yield* snapshot(b)).toMatchObject({ state: "closed", failures: 4, requests: 24 })
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("counts 429s apart from failures: they never open a breaker without rateLimitThreshold", () =>
    Effect.gen(function* () {
      const a = up("a")
      yield* calls(a, http(a, 429), 20)
      yield* calls(a, http(a, 500), 4)
      expect(yield* check(a)).toBeUndefined()
      expect(yield* snapshot(a)).toMatchObject({ state: "closed", failures: 4, rateLimited: 20, requests: 24 })
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("opens on 429s once rateLimitThreshold is reached within the window", () =>
    Effect.gen(function* () {
      const a = up("a", { rateLimitThreshold: 3 })
      yield* calls(a, http(a, 429), 2)
      expect(yield* check(a)).toBeUndefined()
      yield* call(a, http(a, 429))
      expect((yield* check(a))?.reason).toBe(
        "circuit open after 3 rate-limited answers (429) in 60s (last: HTTP 429: boom); half-open in 30s"
      )
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("does not count client 4xx answers as failures of the upstream", () =>
    Effect.gen(function* () {
      const a = up("a", { failureThreshold: 2 })
      yield* calls(a, http(a, 400), 5)
      yield* calls(a, http(a, 404), 5)
      yield* calls(a, http(a, 422), 5)
      expect(yield* check(a)).toBeUndefined()
      expect(yield* snapshot(a)).toMatchObject({ state: "closed", failures: 0, requests: 15 })
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("counts timeouts, connection and protocol failures only when countAs lists them", () =>
    Effect.gen(function* () {
      const onlyServerErrors = up("a", { countAs: ["5xx"] })
      yield* calls(onlyServerErrors, failed(onlyServerErrors, "timeout"), 5)
      yield* calls(onlyServerErrors, failed(onlyServerErrors, "connection"), 5)
      expect(yield* check(onlyServerErrors)).toBeUndefined()

      // The default countAs: 5xx, timeout, connection; not protocol.
      const timeouts = up("b")
      yield* calls(timeouts, failed(timeouts, "protocol"), 5)
      expect(yield* check(timeouts)).toBeUndefined()
      yield* calls(timeouts, failed(timeouts, "timeout"), 3)
      yield* calls(timeouts, http(timeouts, 408), 2)
      expect((yield* check(timeouts))?.reason).toMatch(/^circuit open after 5 failures in 60s \(last: HTTP 408: boom\)/)

      const connections = up("c")
      yield* calls(connections, failed(connections, "connection"), 5)
      expect((yield* check(connections))?.reason).toMatch(/\(last: connection: boom\)/)

      const protocol = up("d", { countAs: ["protocol"] })
      yield* calls(protocol, failed(protocol, "protocol"), 5)
      expect((yield* check(protocol))?.stage).toBe("circuit-breaker")
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("goes half-open after recoveryMs and admits exactly halfOpenProbes probes at a time", () =>
    Effect.gen(function* () {
      const a = up("a", { halfOpenProbes: 2 })
      yield* calls(a, http(a, 500), 5)
      yield* TestClock.adjust("29999 millis")
      expect((yield* check(a))?.retryAfterMs).toBe(1)
      yield* TestClock.adjust("1 millis")
      expect(yield* check(a)).toBeUndefined()
      expect((yield* snapshot(a)).state).toBe("half-open")
      yield* admit(a)
      expect(yield* check(a)).toBeUndefined()
      yield* admit(a)
      const full = { upstream: "a", stage: "circuit-breaker", reason: "circuit half-open, 2 probes in flight" }
      expect(yield* check(a)).toEqual(full)
      expect(yield* Effect.flip(admit(a))).toEqual(full)

      const b = up("b")
      yield* calls(b, http(b, 500), 5)
      yield* TestClock.adjust("30 seconds")
      yield* admit(b)
      expect(yield* Effect.flip(admit(b))).toEqual({
        upstream: "b",
        stage: "circuit-breaker",
        reason: "circuit half-open, probe in flight"
      })
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("closes after successThreshold successful probes and starts a fresh window", () =>
    Effect.gen(function* () {
      const a = up("a", { successThreshold: 2 })
      yield* calls(a, http(a, 500), 5)
      yield* TestClock.adjust("30 seconds")
      yield* call(a, success)
      expect(yield* snapshot(a)).toMatchObject({ state: "half-open", probeSuccesses: 1, probesInFlight: 0 })
      yield* call(a, success)
      expect(yield* snapshot(a)).toMatchObject({ state: "closed", failures: 0, requests: 0 })
      expect(yield* check(a)).toBeUndefined()
      // The failures that opened it are forgotten: four more do not reopen it.
      yield* calls(a, http(a, 500), 4)
      expect(yield* check(a)).toBeUndefined()
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("a failed probe reopens the breaker with a fresh recovery time", () =>
    Effect.gen(function* () {
      const a = up("a")
      yield* calls(a, http(a, 500), 5)
      yield* TestClock.adjust("30 seconds")
      const release = yield* admit(a)
      yield* TestClock.adjust("4 seconds")
      yield* release(http(a, 502))
      expect(yield* check(a)).toEqual({
        upstream: "a",
        stage: "circuit-breaker",
        reason: "circuit open after a failed half-open probe (last: HTTP 502: boom); half-open in 30s",
        retryAfterMs: 30_000
      })
      expect(yield* snapshot(a)).toMatchObject({ state: "open", openedAt: 34_000, reopensAt: 64_000 })
      yield* TestClock.adjust("30 seconds")
      expect(yield* check(a)).toBeUndefined()
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("an interrupted probe frees its slot without counting", () =>
    Effect.gen(function* () {
      const a = up("a")
      yield* calls(a, http(a, 500), 5)
      yield* TestClock.adjust("30 seconds")
      const release = yield* admit(a)
      expect((yield* check(a))?.reason).toBe("circuit half-open, probe in flight")
      yield* release(interrupted)
      expect(yield* check(a)).toBeUndefined()
      expect(yield* snapshot(a)).toMatchObject({ state: "half-open", probesInFlight: 0, probeSuccesses: 0 })
      yield* call(a, success)
      expect((yield* snapshot(a)).state).toBe("closed")
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("a probe neither the upstream's failure nor a success (client 4xx) frees its slot", () =>
    Effect.gen(function* () {
      const a = up("a")
      yield* calls(a, http(a, 500), 5)
      yield* TestClock.adjust("30 seconds")
      yield* call(a, http(a, 400))
      yield* call(a, http(a, 429))
      expect(yield* snapshot(a)).toMatchObject({ state: "half-open", probesInFlight: 0, probeSuccesses: 0 })
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("takes back a probe slot held past the upstream's timeout plus recoveryMs", () =>
    Effect.gen(function* () {
      const a = up("a", {}, { timeoutMs: 10_000 })
      yield* calls(a, http(a, 500), 5)
      yield* TestClock.adjust("30 seconds")
      const stuck = yield* admit(a)
      yield* TestClock.adjust("39999 millis")
      expect(yield* check(a)).toBeDefined()
      yield* TestClock.adjust("1 millis")
      expect(yield* check(a)).toBeUndefined()
      yield* admit(a)
      // The late release of the stuck probe does not free the slot the new probe holds.
      yield* stuck(interrupted)
      expect((yield* check(a))?.reason).toBe("circuit half-open, probe in flight")
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("outcomes of requests admitted before the breaker opened do not decide a half-open breaker", () =>
    Effect.gen(function* () {
      const a = up("a")
      const early = yield* admit(a)
      const earlySuccess = yield* admit(a)
      yield* calls(a, http(a, 500), 5)
      yield* TestClock.adjust("30 seconds")
      yield* early(http(a, 500))
      yield* earlySuccess(success)
      expect(yield* snapshot(a)).toMatchObject({ state: "half-open", probesInFlight: 0, probeSuccesses: 0 })
      expect(yield* check(a)).toBeUndefined()
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("reset closes an open breaker and forgets its counts", () =>
    Effect.gen(function* () {
      const a = up("a")
      yield* calls(a, http(a, 500), 5)
      expect((yield* check(a))?.stage).toBe("circuit-breaker")
      yield* Effect.flatMap(breakers, (service) => service.reset("a"))
      expect(yield* check(a)).toBeUndefined()
      expect(yield* snapshot(a)).toEqual({
        state: "closed",
        failures: 0,
        rateLimited: 0,
        requests: 0,
        probesInFlight: 0,
        probeSuccesses: 0
      })
      yield* calls(a, http(a, 500), 4)
      expect(yield* check(a)).toBeUndefined()
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("a disabled breaker never excludes and admits without touching state", () =>
    Effect.gen(function* () {
      const a = up("a", { enabled: false })
      yield* calls(a, http(a, 500), 20)
      expect(yield* check(a)).toBeUndefined()
      expect((yield* snapshot(a)).state).toBe("closed")
      const store = yield* StateStore.StateStore
      expect(yield* store.modify("cb:a", (current) => [current, current])).toBeUndefined()
    }).pipe(Effect.provide(Layer.provideMerge(CircuitBreaker.layer, StateStore.layerMemory)))
  )

  it.effect("two breaker services sharing one StateStore see the same state", () =>
    Effect.gen(function* () {
      const one = yield* CircuitBreaker.make
      const two = yield* CircuitBreaker.make
      const a = up("a")
      for (let i = 0; i < 5; i++) {
        const release = yield* Guard.admit(one.guard, attemptOn(a))
        yield* release(http(a, 500))
      }
      expect((yield* Guard.check(two.guard, a, requestFor(a)))?.reason).toMatch(/^circuit open after 5 failures/)
      yield* TestClock.adjust("30 seconds")
      yield* Guard.admit(one.guard, attemptOn(a))
      // The other instance sees the probe slot taken.
      expect(yield* Effect.flip(Guard.admit(two.guard, attemptOn(a)))).toMatchObject({
        reason: "circuit half-open, probe in flight"
      })
      yield* two.reset("a")
      expect(yield* Guard.check(one.guard, a, requestFor(a))).toBeUndefined()
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("snapshot reports state, counts, times and the last failure", () =>
    Effect.gen(function* () {
      const a = up("a")
      expect(yield* snapshot(a)).toEqual({
        state: "closed",
        failures: 0,
        rateLimited: 0,
        requests: 0,
        probesInFlight: 0,
        probeSuccesses: 0
      })
      yield* call(a, success)
      yield* call(a, http(a, 429))
      yield* call(a, http(a, 500))
      expect(yield* snapshot(a)).toEqual({
        state: "closed",
        failures: 1,
        rateLimited: 1,
        requests: 3,
        probesInFlight: 0,
        probeSuccesses: 0,
        lastFailure: "HTTP 500: boom"
      })
      yield* TestClock.adjust("1 second")
      yield* calls(a, failed(a, "timeout"), 4)
      expect(yield* snapshot(a)).toEqual({
        state: "open",
        failures: 5,
        rateLimited: 1,
        requests: 7,
        probesInFlight: 0,
        probeSuccesses: 0,
        openedAt: 1_000,
        reopensAt: 31_000,
        lastFailure: "timeout: boom"
      })
      yield* TestClock.adjust("30 seconds")
      yield* admit(a)
      expect(yield* snapshot(a)).toMatchObject({ state: "half-open", openedAt: 1_000, probesInFlight: 1 })
      expect((yield* snapshot(a)).reopensAt).toBeUndefined()
    }).pipe(Effect.provide(testLayer))
  )

  it.effect("a transition's log line and span event wait on the step and land on the span it is flushed in", () =>
    Effect.gen(function* () {
      const { guard } = yield* breakers
      const a = up("a")
      yield* calls(a, http(a, 500), 4)
      const lines: Array<string> = []
      const capture = Logger.make(({ message }) => {
        lines.push(Array.isArray(message) ? message.join(" ") : String(message))
      })
      // The router's synchronous part: admit and release on one step, nothing effectful yet.
      const step = Guard.makeStep(yield* Clock.currentTimeMillis)
      const admitted = guard.admit(attemptOn(a), step)
      if (!Guard.isRelease(admitted)) return expect.fail(`refused: ${admitted.reason}`)
      admitted(http(a, 500), step)
      expect(guard.check(a, requestFor(a), step)?.stage).toBe("circuit-breaker")
      expect(lines).toEqual([])
      // Then its effects, on the request's fiber and span.
      const events = yield* step.flush.pipe(
        Effect.zipRight(Effect.currentSpan),
        Effect.map((span) => (span as unknown as { readonly events: ReadonlyArray<[string, bigint, object]> }).events),
        Effect.withSpan("request"),
        Effect.provide(Logger.add(capture))
      )
      const reason = "circuit for upstream a opened: 5 failures in 60s (last: HTTP 500: boom); half-open in 30s"
      const transitions = events.filter(([name]) => name === "sluice.circuit_breaker.transition")
      expect(transitions.map(([name, , attributes]) => [name, attributes])).toEqual([
        [
          "sluice.circuit_breaker.transition",
          {
            "sluice.upstream": "a",
            "sluice.circuit_breaker.state": "open",
            "sluice.circuit_breaker.reason": reason
          }
        ]
      ])
      expect(lines).toEqual([reason])
    }).pipe(Effect.provide(testLayer))
  )

  it("classify: 429, 5xx, 408 as timeout, other 4xx not counted, and the failure kinds", () => {
    expect(CircuitBreaker.classify(upstreamError("a", "http", 429))).toBe("429")
    expect(CircuitBreaker.classify(upstreamError("a", "http", 500))).toBe("5xx")
    expect(CircuitBreaker.classify(upstreamError("a", "http", 503))).toBe("5xx")
    expect(CircuitBreaker.classify(upstreamError("a", "http", 408))).toBe("timeout")
    expect(CircuitBreaker.classify(upstreamError("a", "http", 400))).toBeUndefined()
    expect(CircuitBreaker.classify(upstreamError("a", "http", 401))).toBeUndefined()
    expect(CircuitBreaker.classify(upstreamError("a", "timeout"))).toBe("timeout")
    expect(CircuitBreaker.classify(upstreamError("a", "connection"))).toBe("connection")
    expect(CircuitBreaker.classify(upstreamError("a", "protocol"))).toBe("protocol")
  })
})

describe("CircuitBreaker in the Router", () => {
  it.effect("an open breaker keeps requests away from its upstream until a probe after recoveryMs", () => {
    const called: Array<string> = []
    let aRecovered = false
    const a = up("a")
    const b = up("b")
    const pools = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [a, b] })]
    const provider = Layer.succeed(
      Provider.Provider,
      Provider.Provider.of({
        chat: (upstream) =>
          Effect.suspend(() => {
            called.push(upstream.id)
            return upstream.id === "a" && !aRecovered
              ? Effect.fail(
                  new Errors.UpstreamError({
                    upstream: "a",
                    kind: "http",
                    status: 500,
                    message: "boom",
                    retryable: true
                  })
                )
              : Effect.succeed({ value: completion(upstream.id) })
          }),
        chatStream: (upstream) => Effect.dieMessage(`unexpected chatStream call on ${upstream.id}`),
        embeddings: (upstream) => Effect.dieMessage(`unexpected embeddings call on ${upstream.id}`)
      })
    )
    // One store for the router's own state and the breakers.
    const router = Router.layer.pipe(
      Layer.provide(Matcher.layer),
      Layer.provide(
        Layer.mergeAll(
          Topology.layerPools(pools),
          TokenCounter.layerEstimate,
          Strategy.layer(Strategy.first),
          provider,
          Guard.layer(CircuitBreaker.guard).pipe(Layer.provide(CircuitBreaker.layer))
        )
      ),
      Layer.provide(StateStore.layerMemory)
    )
    return Effect.gen(function* () {
      const { chat } = yield* Router.Router
      for (let i = 0; i < 5; i++) {
        const { decision } = yield* chat(chatRequest())
        expect(decision.upstream).toBe("b")
      }
      expect(called).toEqual(["a", "b", "a", "b", "a", "b", "a", "b", "a", "b"])

      called.length = 0
      const { decision } = yield* chat(chatRequest())
      expect(called).toEqual(["b"])
      expect(decision.candidates).toEqual(["b"])
      expect(decision.excluded).toEqual([
        {
          upstream: "a",
          stage: "circuit-breaker",
          reason: "circuit open after 5 failures in 60s (last: HTTP 500: boom); half-open in 30s",
          retryAfterMs: 30_000
        }
      ])

      // After recoveryMs one probe goes to "a"; it fails, so "a" is open again.
      yield* TestClock.adjust("30 seconds")
      called.length = 0
      yield* chat(chatRequest())
      yield* chat(chatRequest())
      expect(called).toEqual(["a", "b", "b"])

      // The next probe finds "a" recovered: it closes and serves again.
      aRecovered = true
      yield* TestClock.adjust("30 seconds")
      called.length = 0
      const probe = yield* chat(chatRequest())
      expect(probe.decision.upstream).toBe("a")
      const after = yield* chat(chatRequest())
      expect(after.decision.excluded).toEqual([])
      expect(called).toEqual(["a", "a"])
    }).pipe(Effect.provide(router))
  })
})
