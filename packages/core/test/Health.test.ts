import { HttpClient, HttpClientResponse } from "@effect/platform"
import type { HttpClientRequest } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Logger, Option, Redacted, Schedule, Scope, TestClock } from "effect"
import * as Net from "node:net"
import * as Health from "../src/Health.js"
import type { Config, Wire } from "../src/index.js"
import { Guard, Matcher, RateLimiter, Router, StateStore, Strategy, TokenCounter, Topology } from "../src/index.js"
import { chatRequest, completion, httpError, provider } from "./fixtures.js"

const httpCheck = (fields: Partial<Config.HealthCheckConfig> = {}): Config.HealthCheckConfig => ({
  type: "http",
  path: "/health",
  expectStatus: 200,
  intervalMs: 1000,
  timeoutMs: 500,
  healthyThreshold: 2,
  unhealthyThreshold: 3,
  ...fields
})

const checked = (id: string, fields: Partial<Omit<Topology.Upstream, "id" | "provider">> = {}) =>
  Topology.upstream({ id, provider: "openai-compatible", baseUrl: "http://127.0.0.1:1/v1", ...fields })

const poolOf = (...upstreams: ReadonlyArray<Topology.Upstream>) =>
  Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams })

/** An upstream's health endpoint: answers `status`, records every request. */
interface FakeEndpoint {
  status: number
  hang: boolean
  readonly requests: Array<HttpClientRequest.HttpClientRequest>
}

const endpoint = (status = 200): FakeEndpoint => ({ status, hang: false, requests: [] })

const httpLayer = (fake: FakeEndpoint) =>
  Layer.succeed(
    HttpClient.HttpClient,
    HttpClient.make((request) =>
      Effect.suspend(() => {
        fake.requests.push(request)
        return fake.hang
          ? Effect.never
          : Effect.succeed(HttpClientResponse.fromWeb(request, new Response(null, { status: fake.status })))
      })
    )
  )

/** Health over the given upstreams, with a stub health endpoint and a provider nobody should call. */
const healthLayer = (upstreams: ReadonlyArray<Topology.Upstream>, fake: FakeEndpoint, providerLayer = provider({})) =>
  Health.layer.pipe(
    Layer.provide(
      Layer.mergeAll(
        Topology.layerPools([poolOf(...upstreams)]),
        StateStore.layerMemory,
        providerLayer,
        httpLayer(fake)
      )
    )
  )

const requestInfo = (pool: Topology.Pool): Guard.RequestInfo => ({
  pool,
  model: "gpt-4o",
  promptTokens: 9,
  reservedOutputTokens: 16,
  sessionKey: undefined,
  priority: 0,
  stream: false
})

/** Runs one real-traffic attempt on `upstream` through the guard and releases it with `outcome`. */
const traffic = (guard: Guard.Guard, upstream: Topology.Upstream, outcome: Guard.Outcome) =>
  Effect.gen(function* () {
    const release = yield* Guard.admit(guard, { ...requestInfo(poolOf(upstream)), upstream, attempt: 1 })
    yield* release(outcome)
  })

const failure = (id: string, status: number): Guard.Outcome => ({
  _tag: "Failure",
  latencyMs: 10,
  error: httpError(id, status)
})
const success: Guard.Outcome = { _tag: "Success", latencyMs: 10, inputTokens: 9, outputTokens: 1 }

/** Builds the health layer into the current scope, so its checks run until the test ends. */
const build = <E>(layer: Layer.Layer<Health.Health, E>) => Effect.map(Layer.build(layer), Context.get(Health.Health))

const checkOf = (upstream: Topology.Upstream) =>
  Effect.gen(function* () {
    const health = yield* Health.Health
    return yield* Guard.check(health.guard, upstream, requestInfo(poolOf(upstream)))
  })

describe("Health active http checks", () => {
  it.effect("3 failed checks exclude the upstream with the reason, and 2 passes bring it back", () => {
    const fake = endpoint(503)
    const a = checked("a", { healthCheck: httpCheck() })
    return Effect.gen(function* () {
      // Checks run at 0, 1000 and 2000 ms.
      yield* TestClock.adjust(1000)
      expect(yield* checkOf(a)).toBeUndefined()
      yield* TestClock.adjust(1000)
      expect(fake.requests).toHaveLength(3)
      expect(yield* checkOf(a)).toEqual({
        upstream: "a",
        stage: "health",
        reason: "unhealthy: 3 failed http checks (last: expected status 200, got 503)",
        // The next check is due in 1000 ms and a second pass 1000 ms after it.
        retryAfterMs: 2000
      })
      fake.status = 200
      yield* TestClock.adjust(1000)
      expect((yield* checkOf(a))?.stage).toBe("health")
      yield* TestClock.adjust(1000)
      expect(yield* checkOf(a)).toBeUndefined()
    }).pipe(Effect.provide(healthLayer([a], fake)))
  })

  it.effect("status reports the consecutive counts, the last error and when it changed", () => {
    const fake = endpoint(503)
    const a = checked("a", { healthCheck: httpCheck() })
    return Effect.gen(function* () {
      const health = yield* Health.Health
      yield* TestClock.adjust(1000)
      expect(yield* health.status("a")).toEqual({
        healthy: true,
        since: 0,
        consecutiveFailures: 2,
        consecutiveSuccesses: 0,
        consecutiveTrafficFailures: 0,
        lastError: "expected status 200, got 503",
        lastCheckAt: 1000
      })
      yield* TestClock.adjust(1000)
      expect(yield* health.status("a")).toMatchObject({
        healthy: false,
        since: 2000,
        consecutiveFailures: 3,
        source: "active"
      })
      fake.status = 200
      yield* TestClock.adjust(1000)
      expect(yield* health.status("a")).toMatchObject({
        healthy: false,
        consecutiveFailures: 0,
        consecutiveSuccesses: 1
      })
      yield* TestClock.adjust(1000)
      expect(yield* health.status("a")).toMatchObject({
        healthy: true,
        since: 4000,
        consecutiveSuccesses: 2,
        source: "active",
        lastError: "expected status 200, got 503"
      })
      expect((yield* health.status("unknown")).healthy).toBe(true)
    }).pipe(Effect.provide(healthLayer([a], fake)))
  })

  it.effect("logs a warning when an upstream turns unhealthy and an info line when it is healthy again", () => {
    const fake = endpoint(503)
    const a = checked("a", { healthCheck: httpCheck() })
    const lines: Array<string> = []
    const capture = Logger.make(({ logLevel, message }) => {
      lines.push(`${logLevel.label} ${Array.isArray(message) ? message.join(" ") : String(message)}`)
    })
    return Effect.gen(function* () {
      yield* TestClock.adjust(2000)
      fake.status = 200
      yield* TestClock.adjust(2000)
      expect(lines).toEqual([
        "WARN upstream a is unhealthy: 3 failed http checks (last: expected status 200, got 503)",
        "INFO upstream a is healthy again"
      ])
    }).pipe(Effect.provide(healthLayer([a], fake)), Effect.provide(Logger.add(capture)))
  })

  it.effect("a check that hangs past timeoutMs counts as a failure", () => {
    const fake = endpoint(200)
    fake.hang = true
    const a = checked("a", { healthCheck: httpCheck() })
    return Effect.gen(function* () {
      const health = yield* Health.Health
      // Each check times out after 500 ms and the next starts 1000 ms later: failures at 500, 2000, 3500.
      yield* TestClock.adjust(3499)
      expect(yield* health.status("a")).toMatchObject({ healthy: true, consecutiveFailures: 2 })
      yield* TestClock.adjust(1)
      expect((yield* checkOf(a))?.reason).toBe("unhealthy: 3 failed http checks (last: no answer within 500 ms)")
    }).pipe(Effect.provide(healthLayer([a], fake)))
  })

  it.effect(
    "GETs absolute paths from the base URL's origin and relative ones under it, with the upstream's key and headers",
    () => {
      const fake = endpoint(204)
      const a = checked("a", {
        healthCheck: httpCheck({ expectStatus: 204 }),
        apiKey: Option.some(Redacted.make("sk-test")),
        headers: { "x-org": "acme" }
      })
      const b = checked("b", { baseUrl: "http://127.0.0.1:2/api/v1", healthCheck: httpCheck({ path: "models" }) })
      return Effect.gen(function* () {
        const health = yield* Health.Health
        yield* TestClock.adjust(0)
        const byUrl = new Map(fake.requests.map((r) => [r.url, r]))
        expect([...byUrl.keys()].sort()).toEqual(["http://127.0.0.1:1/health", "http://127.0.0.1:2/api/v1/models"])
        expect(byUrl.get("http://127.0.0.1:1/health")?.method).toBe("GET")
        expect(byUrl.get("http://127.0.0.1:1/health")?.headers).toMatchObject({
          authorization: "Bearer sk-test",
          "x-org": "acme"
        })
        expect(byUrl.get("http://127.0.0.1:2/api/v1/models")?.headers["authorization"]).toBeUndefined()
        expect(yield* health.status("a")).toMatchObject({ consecutiveSuccesses: 1, consecutiveFailures: 0 })
        expect(yield* health.status("b")).toMatchObject({
          consecutiveFailures: 1,
          lastError: "expected status 200, got 204"
        })
      }).pipe(Effect.provide(healthLayer([a, b], fake)))
    }
  )

  it.effect("checkNow runs one check at once and counts it", () => {
    const fake = endpoint(503)
    const a = checked("a", { healthCheck: httpCheck({ intervalMs: 60_000, unhealthyThreshold: 2 }) })
    return Effect.gen(function* () {
      const health = yield* Health.Health
      yield* TestClock.adjust(0)
      expect(fake.requests).toHaveLength(1)
      yield* health.checkNow("a")
      expect(fake.requests).toHaveLength(2)
      expect(yield* health.status("a")).toMatchObject({ healthy: false, consecutiveFailures: 2 })
      // Unknown upstreams and upstreams without an active check are left alone.
      yield* health.checkNow("nope")
      expect(fake.requests).toHaveLength(2)
    }).pipe(Effect.provide(healthLayer([a], fake)))
  })

  it.effect("checks stop when the layer's scope closes", () => {
    const fake = endpoint(200)
    const a = checked("a", { healthCheck: httpCheck() })
    return Effect.gen(function* () {
      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(healthLayer([a], fake), scope)
      yield* TestClock.adjust(2000)
      expect(fake.requests).toHaveLength(3)
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust(10_000)
      expect(fake.requests).toHaveLength(3)
    })
  })
})

describe("Health active tcp checks", () => {
  const listen = Effect.acquireRelease(
    Effect.async<{ readonly server: Net.Server; readonly port: number; readonly connections: Array<number> }>(
      (resume) => {
        const connections: Array<number> = []
        const server = Net.createServer((socket) => {
          connections.push(1)
          socket.destroy()
        })
        server.listen(0, "127.0.0.1", () => {
          const address = server.address() as Net.AddressInfo
          resume(Effect.succeed({ server, port: address.port, connections }))
        })
      }
    ),
    ({ server }) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
  )

  /** A port nothing listens on: bound, then released. */
  const closedPort = Effect.async<number>((resume) => {
    const server = Net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as Net.AddressInfo).port
      server.close(() => resume(Effect.succeed(port)))
    })
  })

  const tcpCheck = httpCheck({
    type: "tcp",
    intervalMs: 50,
    timeoutMs: 1000,
    healthyThreshold: 1,
    unhealthyThreshold: 2
  })

  const waitFor = (health: Health.Service, id: string, done: (status: Health.Status) => boolean) =>
    health.status(id).pipe(
      Effect.filterOrFail(done),
      Effect.retry(Schedule.spaced("20 millis")),
      Effect.timeoutFail({
        duration: "3 seconds",
        onTimeout: () => new Error(`${id} never reached the expected status`)
      })
    )

  it.live("connects to the base URL's host and port and passes while something listens", () =>
    Effect.gen(function* () {
      const { connections, port } = yield* listen
      const a = checked("a", { baseUrl: `http://127.0.0.1:${port}/v1`, healthCheck: tcpCheck })
      const health = yield* build(healthLayer([a], endpoint()))
      const status = yield* waitFor(health, "a", (s) => s.consecutiveSuccesses >= 3)
      expect(status).toMatchObject({ healthy: true, consecutiveFailures: 0 })
      expect(connections.length).toBeGreaterThanOrEqual(3)
    }).pipe(Effect.scoped)
  )

  it.live("fails against a closed port and marks the upstream unhealthy", () =>
    Effect.gen(function* () {
      const port = yield* closedPort
      const a = checked("a", { baseUrl: `http://127.0.0.1:${port}/v1`, healthCheck: tcpCheck })
      const health = yield* build(healthLayer([a], endpoint()))
      const status = yield* waitFor(health, "a", (s) => !s.healthy)
      expect(status.consecutiveFailures).toBeGreaterThanOrEqual(2)
      expect(status.lastError).toMatch(new RegExp(`^connection to 127\\.0\\.0\\.1:${port} failed: .*ECONNREFUSED`))
    }).pipe(Effect.scoped)
  )
})

describe("Health active inference checks", () => {
  it.effect(
    "sends a one-token chat through the provider and fails when the provider fails or answers no choice",
    () => {
      const fake = endpoint()
      const calls: Array<{
        readonly upstream: string
        readonly model: string
        readonly request: Wire.ChatCompletionRequest
      }> = []
      let failing = false
      const stub = provider({
        chat: (u, call) =>
          Effect.suspend(() => {
            calls.push({ upstream: u.id, model: call.model, request: call.request })
            if (u.id === "empty") return Effect.succeed({ value: { ...completion(u.id), choices: [] } })
            return failing ? Effect.fail(httpError(u.id, 500)) : Effect.succeed({ value: completion(u.id) })
          })
      })
      const inference = httpCheck({ type: "inference", unhealthyThreshold: 1 })
      const a = checked("a", { model: "gpt-4o-mini", healthCheck: inference })
      const b = checked("b", { healthCheck: inference })
      const empty = checked("empty", { healthCheck: inference })
      return Effect.gen(function* () {
        const health = yield* Health.Health
        yield* TestClock.adjust(0)
        const ping = { messages: [{ role: "user", content: "ping" }], max_tokens: 1 }
        expect([...calls].sort((x, y) => x.upstream.localeCompare(y.upstream))).toEqual([
          { upstream: "a", model: "gpt-4o-mini", request: { model: "gpt-4o-mini", ...ping } },
          { upstream: "b", model: "health-check", request: { model: "health-check", ...ping } },
          { upstream: "empty", model: "health-check", request: { model: "health-check", ...ping } }
        ])
        expect(fake.requests).toHaveLength(0)
        expect(yield* health.status("a")).toMatchObject({ healthy: true, consecutiveSuccesses: 1 })
        expect(yield* health.status("empty")).toMatchObject({
          healthy: false,
          consecutiveFailures: 1,
          lastError: "the completion has no choices"
        })
        failing = true
        yield* TestClock.adjust(1000)
        expect(yield* health.status("a")).toMatchObject({ healthy: false, consecutiveFailures: 1 })
        expect((yield* checkOf(a))?.reason).toBe(
          "unhealthy: 1 failed inference check (last: HTTP 500: upstream answered 500)"
        )
      }).pipe(Effect.provide(healthLayer([a, b, empty], fake, stub)))
    }
  )
})

describe("Health checks of disabled upstreams", () => {
  it.effect("never checks an upstream disabled in the config: no request on any interval, nor on checkNow", () => {
    const calls: Array<string> = []
    const stub = provider({
      chat: (u) => Effect.sync(() => (calls.push(u.id), { value: completion(u.id) }))
    })
    const fake = endpoint()
    const inference = httpCheck({ type: "inference", intervalMs: 1_000 })
    const off = checked("off", { enabled: false, healthCheck: inference })
    const offHttp = checked("off-http", { enabled: false, healthCheck: httpCheck({ intervalMs: 1_000 }) })
    const on = checked("on", { healthCheck: inference })
    return Effect.gen(function* () {
      const health = yield* Health.Health
      yield* TestClock.adjust(10_000)
      // The enabled upstream was checked at 0, 1000, ..., 10000 ms; the disabled ones never were.
      expect(calls.filter((id) => id === "on")).toHaveLength(11)
      expect(calls.filter((id) => id !== "on")).toEqual([])
      expect(fake.requests).toHaveLength(0)
      yield* health.checkNow("off")
      yield* health.checkNow("off-http")
      expect(calls.filter((id) => id !== "on")).toEqual([])
      expect(fake.requests).toHaveLength(0)
      expect(yield* health.status("off")).toEqual({
        healthy: true,
        since: 0,
        consecutiveFailures: 0,
        consecutiveSuccesses: 0,
        consecutiveTrafficFailures: 0
      })
    }).pipe(Effect.provide(healthLayer([off, offHttp, on], fake, stub)))
  })
})

describe("Health inference checks and the rate limiter", () => {
  it.effect("spend the upstream's budget, and wait a round without a verdict when it is spent", () => {
    const calls: Array<string> = []
    const stub = provider({
      chat: (u) => Effect.sync(() => (calls.push(u.id), { value: completion(u.id) }))
    })
    const inference = httpCheck({ type: "inference", intervalMs: 1_000, unhealthyThreshold: 1 })
    const a = checked("a", { healthCheck: inference, limits: { rpm: 2 } })
    const layer = Health.layer.pipe(
      Layer.provideMerge(RateLimiter.layer),
      Layer.provide(
        Layer.mergeAll(Topology.layerPools([poolOf(a)]), StateStore.layerMemory, stub, httpLayer(endpoint()))
      )
    )
    return Effect.gen(function* () {
      const health = yield* Health.Health
      const limiter = yield* RateLimiter.RateLimiter
      yield* TestClock.adjust(0)
      // The first check ran and was counted against RPM.
      expect(calls).toEqual(["a"])
      expect(yield* limiter.snapshot(a)).toMatchObject({ requestsUsed: 1, inFlight: 0 })
      // Real traffic takes the last request of the minute...
      yield* traffic(limiter.guard, a, success)
      // ...so the next checks are not sent, and say nothing about health.
      yield* TestClock.adjust(3_000)
      expect(calls).toEqual(["a"])
      expect(yield* limiter.snapshot(a)).toMatchObject({ requestsUsed: 2 })
      expect(yield* health.status("a")).toMatchObject({
        healthy: true,
        consecutiveSuccesses: 1,
        consecutiveFailures: 0
      })
      // Once the window frees, checks run again.
      yield* TestClock.adjust(60_000)
      expect(calls.length).toBeGreaterThan(1)
    }).pipe(Effect.provide(layer))
  })
})

describe("Health passive", () => {
  const passive = { unhealthyAfter: 5, recoveryMs: 30_000 }

  it.effect("5 consecutive retryable failures of real traffic exclude the upstream until recoveryMs has passed", () => {
    const a = checked("a", { passiveHealth: passive })
    return Effect.gen(function* () {
      const health = yield* Health.Health
      for (let i = 0; i < 4; i++) yield* traffic(health.guard, a, failure("a", 500))
      expect(yield* checkOf(a)).toBeUndefined()
      yield* traffic(health.guard, a, failure("a", 503))
      expect(yield* checkOf(a)).toEqual({
        upstream: "a",
        stage: "health",
        reason: "unhealthy: 5 consecutive failures of real traffic (last: HTTP 503: upstream answered 503)",
        retryAfterMs: 30_000
      })
      expect(yield* health.status("a")).toMatchObject({
        healthy: false,
        since: 0,
        source: "passive",
        consecutiveTrafficFailures: 5
      })
      yield* TestClock.adjust(10_000)
      expect((yield* checkOf(a))?.retryAfterMs).toBe(20_000)
      yield* TestClock.adjust(20_000)
      expect(yield* checkOf(a)).toBeUndefined()
      expect(yield* health.status("a")).toMatchObject({
        healthy: true,
        since: 30_000,
        source: "passive",
        consecutiveTrafficFailures: 0
      })
    }).pipe(Effect.provide(healthLayer([a], endpoint())))
  })

  it.effect(
    "a success in between resets the count; non-retryable failures, 429s and interruptions do not count",
    () => {
      const a = checked("a", { passiveHealth: passive })
      return Effect.gen(function* () {
        const health = yield* Health.Health
        for (let i = 0; i < 4; i++) yield* traffic(health.guard, a, failure("a", 500))
        yield* traffic(health.guard, a, success)
        for (let i = 0; i < 4; i++) yield* traffic(health.guard, a, failure("a", 502))
        yield* traffic(health.guard, a, failure("a", 400))
        yield* traffic(health.guard, a, { _tag: "Interrupted", latencyMs: 5 })
        // A 429 means busy, not sick.
        for (let i = 0; i < 5; i++) yield* traffic(health.guard, a, failure("a", 429))
        expect(yield* checkOf(a)).toBeUndefined()
        expect(yield* health.status("a")).toMatchObject({ healthy: true, consecutiveTrafficFailures: 4 })
        yield* traffic(health.guard, a, failure("a", 500))
        expect((yield* checkOf(a))?.stage).toBe("health")
      }).pipe(Effect.provide(healthLayer([a], endpoint())))
    }
  )

  it.effect(
    "with an active check, a passively unhealthy upstream comes back after healthyThreshold passes, not recoveryMs",
    () => {
      const a = checked("a", { healthCheck: httpCheck(), passiveHealth: { unhealthyAfter: 2, recoveryMs: 100 } })
      return Effect.gen(function* () {
        const health = yield* Health.Health
        yield* TestClock.adjust(0)
        expect(yield* health.status("a")).toMatchObject({ healthy: true, consecutiveSuccesses: 1 })
        yield* traffic(health.guard, a, failure("a", 500))
        yield* traffic(health.guard, a, failure("a", 500))
        expect(yield* checkOf(a)).toEqual({
          upstream: "a",
          stage: "health",
          reason: "unhealthy: 2 consecutive failures of real traffic (last: HTTP 500: upstream answered 500)",
          retryAfterMs: 2000
        })
        yield* TestClock.adjust(1000)
        expect(yield* health.status("a")).toMatchObject({ healthy: false, source: "passive", consecutiveSuccesses: 1 })
        yield* TestClock.adjust(1000)
        expect(yield* checkOf(a)).toBeUndefined()
        expect(yield* health.status("a")).toMatchObject({ healthy: true, since: 2000, source: "active" })
      }).pipe(Effect.provide(healthLayer([a], endpoint(200))))
    }
  )

  it.effect("without passiveHealth, failures of real traffic never exclude the upstream", () => {
    const a = checked("a")
    return Effect.gen(function* () {
      const health = yield* Health.Health
      for (let i = 0; i < 20; i++) yield* traffic(health.guard, a, failure("a", 500))
      expect(yield* checkOf(a)).toBeUndefined()
      expect(yield* health.status("a")).toMatchObject({ healthy: true, consecutiveTrafficFailures: 0 })
    }).pipe(Effect.provide(healthLayer([a], endpoint())))
  })
})

describe("Health through the Router", () => {
  it.effect(
    "skips an unhealthy upstream with the health reason in the decision and uses it again once it recovers",
    () => {
      const fake = endpoint(503)
      const a = checked("a", { healthCheck: httpCheck() })
      const b = checked("b", { baseUrl: "http://127.0.0.1:2/v1" })
      const calls: Array<string> = []
      const stub = provider({
        chat: (u) =>
          Effect.sync(() => {
            calls.push(u.id)
            return { value: completion(u.id) }
          })
      })
      const base = Layer.mergeAll(
        Topology.layerPools([poolOf(a, b)]),
        StateStore.layerMemory,
        stub,
        httpLayer(fake),
        TokenCounter.layerEstimate,
        Strategy.layer(Strategy.first)
      )
      const layer = Router.layer.pipe(
        Layer.provide(Layer.mergeAll(Matcher.layer, Guard.layer(Health.guard))),
        Layer.provideMerge(Health.layer),
        Layer.provideMerge(base)
      )
      return Effect.gen(function* () {
        const router = yield* Router.Router
        expect((yield* router.chat(chatRequest())).decision.upstream).toBe("a")
        yield* TestClock.adjust(2000)
        const skipped = (yield* router.chat(chatRequest())).decision
        expect(skipped.upstream).toBe("b")
        expect(skipped.candidates).toEqual(["b"])
        expect(skipped.excluded).toEqual([
          {
            upstream: "a",
            stage: "health",
            reason: "unhealthy: 3 failed http checks (last: expected status 200, got 503)",
            retryAfterMs: 2000
          }
        ])
        fake.status = 200
        yield* TestClock.adjust(2000)
        const recovered = (yield* router.chat(chatRequest())).decision
        expect(recovered.upstream).toBe("a")
        expect(recovered.excluded).toEqual([])
        expect(calls).toEqual(["a", "b", "a"])
      }).pipe(Effect.provide(layer))
    }
  )
})
