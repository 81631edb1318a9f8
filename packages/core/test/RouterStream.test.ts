import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Either, Fiber, Option, Stream, TestClock, Tracer } from "effect"
import type { Errors, Guard, Provider, Wire } from "../src/index.js"
import { Router, Topology } from "../src/index.js"
import {
  attemptsOf,
  chatRequest,
  chunk,
  guardLog,
  guards,
  httpError,
  opened,
  provider,
  recordingGuard,
  routerLayer,
  streamOf,
  upstream,
  usageChunk
} from "./fixtures.js"

/** How a stub upstream answers a stream request: refused, or accepted with these events. */
type Answer = Effect.Effect<Stream.Stream<Provider.StreamEvent, Errors.UpstreamError>, Errors.UpstreamError>

/** What the stub provider saw: the stream requests per upstream and the connections it closed. */
interface Wiretap {
  readonly opened: Array<{ readonly upstream: string; readonly request: Wire.ChatCompletionRequest }>
  readonly closed: Array<string>
}

const wiretap = (): Wiretap => ({ opened: [], closed: [] })

/**
 * A provider whose chatStream answers per upstream id; every connection it opens is closed by the
 * scope the router gives it, which the wiretap records.
 */
const streamsBy = (answers: Record<string, () => Answer>, tap: Wiretap) =>
  provider({
    chatStream: (u, { request }) =>
      Effect.gen(function* () {
        tap.opened.push({ upstream: u.id, request })
        yield* Effect.addFinalizer(() => Effect.sync(() => void tap.closed.push(u.id)))
        const answer = answers[u.id]
        const stream = yield* answer === undefined ? Effect.dieMessage(`no answer for ${u.id}`) : answer()
        return yield* opened(stream)
      })
  })

const usage = { prompt_tokens: 12, completion_tokens: 2, total_tokens: 14 }
const helloStream = () => Effect.succeed(streamOf(chunk("Hel"), chunk("lo"), usageChunk(usage)))

const twoUpstreams = (fields: Partial<Omit<Topology.Upstream, "id" | "provider" | "baseUrl">> = {}) => [
  Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a", fields), upstream("b")] })
]

describe("Router.chatStream", () => {
  it.effect(
    "streams the events, drops the usage-only chunk the client did not ask for, and resolves the decision with usage",
    () => {
      const tap = wiretap()
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const routed = yield* router.chatStream(chatRequest())
        expect(routed.upstream).toBe("a")
        const events = yield* Router.collect(routed)
        expect(events).toEqual([chunk("Hel").data, chunk("lo").data])
        // Usage is always requested upstream, so budgets learn the real count.
        expect(tap.opened[0]?.request).toMatchObject({
          model: "gpt-4o",
          stream: true,
          stream_options: { include_usage: true }
        })
        const decision = yield* routed.decision
        expect(decision).toMatchObject({
          operation: "chat",
          stream: true,
          pool: "gpt",
          candidates: ["a", "b"],
          upstream: "a",
          inputTokens: 12,
          outputTokens: 2,
          outcome: "success",
          error: undefined
        })
        expect(attemptsOf(decision)).toEqual([{ attempt: 1, pool: "gpt", upstream: "a", outcome: "success" }])
      }).pipe(Effect.provide(routerLayer(twoUpstreams(), { provider: streamsBy({ a: helloStream }, tap) })))
    }
  )

  it.effect(
    "gives every routed stream the same shape: `events` is a getter of their prototype, not one of each",
    () => {
      // A getter of each stream's own would sit in an accessor pair in V8's old generation, keeping
      // the stream's objects through young collections (see `StreamHandle`).
      const tap = wiretap()
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const first = yield* router.chatStream(chatRequest())
        const second = yield* router.chatStream(chatRequest())
        for (const routed of [first, second]) {
          expect(Object.getOwnPropertyDescriptor(routed, "events")).toBeUndefined()
          expect(Object.keys(routed)).toEqual(Object.keys(first))
        }
        expect(Object.getPrototypeOf(second)).toBe(Object.getPrototypeOf(first))
        // Still there, read from the prototype.
        const events = Chunk.toReadonlyArray(yield* Stream.runCollect(second.events)).map((e) => e.data)
        expect(events).toEqual([chunk("Hel").data, chunk("lo").data])
        yield* first.release
      }).pipe(Effect.provide(routerLayer(twoUpstreams(), { provider: streamsBy({ a: helloStream }, tap) })))
    }
  )

  it.effect("passes the usage-only chunk through when the client set stream_options.include_usage", () => {
    const tap = wiretap()
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const routed = yield* router.chatStream(chatRequest("gpt-4o", { stream_options: { include_usage: true } }))
      const events = yield* Router.collect(routed)
      expect(events).toEqual([chunk("Hel").data, chunk("lo").data, usageChunk(usage).data])
      expect((yield* routed.decision).outputTokens).toBe(2)
    }).pipe(Effect.provide(routerLayer(twoUpstreams(), { provider: streamsBy({ a: helloStream }, tap) })))
  })

  it.effect("holds the guards' reservation and the connection until the stream ends, then releases once", () => {
    const tap = wiretap()
    const log = guardLog()
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const routed = yield* router.chatStream(chatRequest())
      const pending = yield* Effect.fork(routed.decision)
      yield* Effect.yieldNow()
      expect(Option.isNone(yield* Fiber.poll(pending))).toBe(true)
      expect(log.released).toEqual([])
      expect(tap.closed).toEqual([])
      yield* Router.collect(routed)
      expect(log.released).toEqual([
        { upstream: "a", outcome: { _tag: "Success", latencyMs: 0, inputTokens: 12, outputTokens: 2 } }
      ])
      expect(tap.closed).toEqual(["a"])
      expect((yield* Fiber.join(pending)).outcome).toBe("success")
    }).pipe(
      Effect.provide(
        routerLayer(twoUpstreams(), {
          provider: streamsBy({ a: helloStream }, tap),
          guards: guards(recordingGuard(log))
        })
      )
    )
  })

  it.effect("fails over to the next upstream when the stream fails on its first pull", () => {
    const tap = wiretap()
    const log = guardLog()
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const routed = yield* router.chatStream(chatRequest())
      expect(routed.upstream).toBe("b")
      // The failed upstream's connection is closed before the next one is tried.
      expect(tap.closed).toEqual(["a"])
      expect(yield* Router.collect(routed)).toEqual([chunk("Hel").data, chunk("lo").data])
      const decision = yield* routed.decision
      expect(decision.upstream).toBe("b")
      expect(attemptsOf(decision)).toEqual([
        { attempt: 1, pool: "gpt", upstream: "a", outcome: "failure", status: 502, error: "upstream answered 502" },
        { attempt: 2, pool: "gpt", upstream: "b", outcome: "success" }
      ])
      expect(log.released.map((r) => [r.upstream, r.outcome._tag])).toEqual([
        ["a", "Failure"],
        ["b", "Success"]
      ])
    }).pipe(
      Effect.provide(
        routerLayer(twoUpstreams(), {
          provider: streamsBy({ a: () => Effect.succeed(Stream.fail(httpError("a", 502))), b: helloStream }, tap),
          guards: guards(recordingGuard(log))
        })
      )
    )
  })

  it.effect("fails over when the upstream refuses the stream with a retryable status", () => {
    const tap = wiretap()
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const routed = yield* router.chatStream(chatRequest())
      expect(routed.upstream).toBe("b")
      expect(tap.closed).toEqual(["a"])
      yield* Router.collect(routed)
      expect((yield* routed.decision).attempts.map((a) => [a.upstream, a.status])).toEqual([
        ["a", 429],
        ["b", undefined]
      ])
    }).pipe(
      Effect.provide(
        routerLayer(twoUpstreams(), {
          provider: streamsBy({ a: () => Effect.fail(httpError("a", 429)), b: helloStream }, tap)
        })
      )
    )
  })

  it.effect("fails over when a stream ends before its first event", () => {
    const tap = wiretap()
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const routed = yield* router.chatStream(chatRequest())
      expect(routed.upstream).toBe("b")
      yield* Router.collect(routed)
      expect((yield* routed.decision).attempts[0]).toMatchObject({
        upstream: "a",
        outcome: "failure",
        error: "stream ended before its first content event"
      })
    }).pipe(
      Effect.provide(
        routerLayer(twoUpstreams(), {
          provider: streamsBy({ a: () => Effect.succeed(Stream.empty), b: helloStream }, tap)
        })
      )
    )
  })

  it.effect("fails over when the first event does not arrive within the upstream's timeoutMs", () => {
    const tap = wiretap()
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chatStream(chatRequest()))
      yield* TestClock.adjust("1 second")
      const routed = yield* Fiber.join(fiber)
      expect(routed.upstream).toBe("b")
      expect(tap.closed).toEqual(["a"])
      yield* Router.collect(routed)
      expect((yield* routed.decision).attempts[0]).toMatchObject({
        upstream: "a",
        outcome: "failure",
        latencyMs: 1000,
        error: "no first content event within 1000 ms"
      })
    }).pipe(
      Effect.provide(
        routerLayer(twoUpstreams({ timeoutMs: 1000 }), {
          provider: streamsBy({ a: () => Effect.succeed(Stream.never), b: helloStream }, tap)
        })
      )
    )
  })

  it.live(
    "on the live clock, with a provider that keeps deadlines, times the first content with a timer of its own and fails over",
    () => {
      const tap = wiretap()
      const calls: Array<Provider.Call<Wire.ChatCompletionRequest>> = []
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const routed = yield* router.chatStream(chatRequest())
        expect(routed.upstream).toBe("b")
        expect(tap.closed).toEqual(["a"])
        // The provider was asked to time the opening itself, by each upstream's deadline.
        expect(calls.map((c) => c.openTimeoutMs)).toEqual([100, 60_000])
        yield* Router.collect(routed)
        expect((yield* routed.decision).attempts[0]).toMatchObject({
          upstream: "a",
          outcome: "failure",
          error: "no first content event within 100 ms"
        })
      }).pipe(
        Effect.provide(
          routerLayer(twoUpstreams({ timeoutMs: 100 }), {
            provider: provider({
              chatStream: (u, call) =>
                Effect.gen(function* () {
                  calls.push(call)
                  tap.opened.push({ upstream: u.id, request: call.request })
                  yield* Effect.addFinalizer(() => Effect.sync(() => void tap.closed.push(u.id)))
                  return yield* opened(u.id === "a" ? Stream.never : yield* helloStream())
                }),
              enforcesTimeout: () => true
            })
          })
        )
      )
    }
  )

  it.effect(
    "surfaces a failure after the first event to the consumer, without failing over, and records an error outcome",
    () => {
      const tap = wiretap()
      const log = guardLog()
      const cut = httpError("a", 502)
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const routed = yield* router.chatStream(chatRequest())
        expect(routed.upstream).toBe("a")
        const received = Chunk.toReadonlyArray(yield* Stream.runCollect(Stream.either(routed.events)))
        expect(received).toEqual([Either.right(chunk("partial")), Either.left(cut)])
        expect(tap.opened.map((o) => o.upstream)).toEqual(["a"])
        expect(tap.closed).toEqual(["a"])
        const decision = yield* routed.decision
        expect(decision.outcome).toBe("error")
        expect(decision.error).toBe("UpstreamError: upstream answered 502")
        expect(attemptsOf(decision)).toEqual([
          { attempt: 1, pool: "gpt", upstream: "a", outcome: "failure", status: 502, error: "upstream answered 502" }
        ])
        expect(log.released.map((r) => [r.upstream, r.outcome._tag])).toEqual([["a", "Failure"]])
      }).pipe(
        Effect.provide(
          routerLayer(twoUpstreams(), {
            provider: streamsBy(
              { a: () => Effect.succeed(Stream.concat(streamOf(chunk("partial")), Stream.fail(cut))), b: helloStream },
              tap
            ),
            guards: guards(recordingGuard(log))
          })
        )
      )
    }
  )

  it.effect("counts a request in flight until its answer, a stream until its release, and says when it is idle", () => {
    const tap = wiretap()
    const slowFirstEvent = () =>
      Effect.succeed(
        Stream.concat(Stream.fromEffect(Effect.as(Effect.sleep("1 second"), chunk("Hel"))), streamOf(usageChunk(usage)))
      )
    return Effect.gen(function* () {
      const router = yield* Router.Router
      expect(router.inFlight?.()).toBe(0)
      yield* router.idle!
      // Routing: in flight while it waits for its first event.
      const opening = yield* Effect.fork(router.chatStream(chatRequest()))
      yield* TestClock.adjust("500 millis")
      expect(router.inFlight?.()).toBe(1)
      const idle = yield* Effect.fork(router.idle!)
      yield* TestClock.adjust("500 millis")
      const routed = yield* Fiber.join(opening)
      // Started, not yet read: still in flight, and the waiter still waits.
      expect(router.inFlight?.()).toBe(1)
      expect(Option.isNone(yield* Fiber.poll(idle))).toBe(true)
      yield* Router.collect(routed)
      expect(router.inFlight?.()).toBe(0)
      yield* Fiber.join(idle)
      // An unknown model never starts; a refused request ends with its error.
      yield* Effect.either(router.chatStream(chatRequest("nope")))
      expect(router.inFlight?.()).toBe(0)
    }).pipe(
      Effect.provide(routerLayer(twoUpstreams(), { provider: streamsBy({ a: slowFirstEvent, b: helloStream }, tap) }))
    )
  })

  it.effect(
    "releases a stream's budget and connection when the request is interrupted before the caller holds it",
    () => {
      const tap = wiretap()
      const log = guardLog()
      // The upstream accepted the stream but its first content event is slow: the connection is open
      // and the budget held, while the request is still routing.
      const slowFirstEvent = () =>
        Effect.succeed(
          Stream.concat(
            Stream.fromEffect(Effect.as(Effect.sleep("1 second"), chunk("Hel"))),
            streamOf(chunk("lo"), usageChunk(usage))
          )
        )
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const fiber = yield* Effect.fork(router.chatStream(chatRequest()))
        yield* TestClock.adjust("500 millis")
        expect(tap.opened.map((o) => o.upstream)).toEqual(["a"])
        expect(log.admitted).toEqual(["a"])
        expect(log.released).toEqual([])
        yield* Fiber.interrupt(fiber)
        expect(tap.closed).toEqual(["a"])
        expect(log.released.map((r) => r.outcome._tag)).toEqual(["Interrupted"])
        // Not counted in flight any more: a replaced config waiting for it would close.
        expect((yield* Router.Router).inFlight?.()).toBe(0)
      }).pipe(
        Effect.provide(
          routerLayer(twoUpstreams(), {
            provider: streamsBy({ a: slowFirstEvent, b: helloStream }, tap),
            guards: guards(recordingGuard(log))
          })
        )
      )
    }
  )

  it.effect("releases a stream it started when the request is interrupted before handing it over to the caller", () => {
    const tap = wiretap()
    const log = guardLog()
    // With spans exported, what guards leave on the step runs once the attempt's span is done: after
    // the stream started, before the router returns it. A slow one holds the request right there.
    const slowAfterAdmit: Guard.Guard = {
      ...recordingGuard(log),
      admit: (attempt, step) => {
        step.after(Effect.sleep("1 second"))
        return recordingGuard(log).admit(attempt, step)
      }
    }
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const exporting = yield* Effect.map(Effect.tracer, (native) =>
        Tracer.make({ span: (...args) => native.span(...args), context: native.context })
      )
      const fiber = yield* Effect.fork(router.chatStream(chatRequest()).pipe(Effect.withTracer(exporting)))
      yield* TestClock.adjust("500 millis")
      // The stream started (its first event arrived), and the request has not returned it yet.
      expect(tap.opened.map((o) => o.upstream)).toEqual(["a"])
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* Fiber.interruptFork(fiber)
      yield* TestClock.adjust("1 second")
      yield* Fiber.await(fiber)
      expect(tap.closed).toEqual(["a"])
      expect(log.released.map((r) => r.outcome._tag)).toEqual(["Interrupted"])
    }).pipe(
      Effect.provide(
        routerLayer(twoUpstreams(), {
          provider: streamsBy({ a: helloStream }, tap),
          guards: guards(slowAfterAdmit)
        })
      )
    )
  })

  it.effect("records an interrupted outcome and closes the connection when the client stops reading early", () => {
    const tap = wiretap()
    const log = guardLog()
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const routed = yield* router.chatStream(chatRequest())
      const first = yield* Stream.runCollect(Stream.take(routed.events, 1))
      expect(Chunk.toReadonlyArray(first).map((e) => e.data)).toEqual([chunk("Hel").data])
      expect(tap.closed).toEqual(["a"])
      expect((yield* routed.decision).outcome).toBe("interrupted")
      expect(log.released.map((r) => r.outcome._tag)).toEqual(["Interrupted"])
    }).pipe(
      Effect.provide(
        routerLayer(twoUpstreams(), {
          provider: streamsBy({ a: helloStream }, tap),
          guards: guards(recordingGuard(log))
        })
      )
    )
  })
})
