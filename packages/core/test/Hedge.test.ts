import { describe, expect, it } from "@effect/vitest"
import type { Duration } from "effect"
import { Effect, Fiber, Stream, TestClock } from "effect"
import type { Errors, Provider } from "../src/index.js"
import { Decision, Router, Strategy, Topology } from "../src/index.js"
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
  upstream,
  usageChunk
} from "./fixtures.js"

const usage = { prompt_tokens: 9, completion_tokens: 1, total_tokens: 10 }

/** How an upstream answers a stream: its first content after `ms`, or a failure then. */
type Script = { readonly contentAfterMs: number } | { readonly failAfterMs: number }

const eventsOf = (id: string, script: Script): Stream.Stream<Provider.StreamEvent, Errors.UpstreamError> => {
  if ("failAfterMs" in script) {
    return Stream.fromEffect(Effect.zipRight(Effect.sleep(script.failAfterMs), Effect.fail(httpError(id, 500))))
  }
  const wait = Stream.drain(Stream.fromEffect(Effect.sleep(script.contentAfterMs)))
  return Stream.concat(wait, Stream.make(chunk(`from ${id}`), usageChunk(usage)))
}

/** A provider whose streams follow `scripts` (per upstream, per request in turn); it records what it opened and closed. */
const scripted = (
  scripts: Record<string, ReadonlyArray<Script>>,
  tap = { opened: [] as Array<string>, closed: [] as Array<string> }
) => {
  const turns: Record<string, number> = {}
  return {
    tap,
    layer: provider({
      chatStream: (u) =>
        Effect.gen(function* () {
          tap.opened.push(u.id)
          yield* Effect.addFinalizer(() => Effect.sync(() => void tap.closed.push(u.id)))
          const list = scripts[u.id] ?? []
          const turn = (turns[u.id] = (turns[u.id] ?? -1) + 1)
          return yield* opened(eventsOf(u.id, list[Math.min(turn, list.length - 1)]!))
        })
    })
  }
}

const hedgedPool = (hedge: Partial<Topology.Pool["hedge"] & object>, ids = ["a", "b"]) => [
  Topology.pool({
    id: "gpt",
    models: ["gpt-4o"],
    upstreams: ids.map((id) => upstream(id)),
    hedge: { maxExtraPercent: 100, ...hedge }
  })
]

/** Starts a stream on a fiber, as a client would. */
const startStream = Effect.flatMap(Router.Router, (router) => Effect.fork(router.chatStream(chatRequest())))

/** Streams one request to its end while the clock moves `by`: the routed stream and its decision. */
const streamed = (by: Duration.DurationInput) =>
  Effect.gen(function* () {
    const fiber = yield* startStream
    yield* TestClock.adjust(by)
    const routed = yield* Fiber.join(fiber)
    yield* Router.collect(routed)
    return { routed, decision: yield* routed.decision }
  })

describe("Hedge", () => {
  it.effect(
    "starts a second attempt afterMs after the first was admitted; the first to deliver content wins and the other is cancelled with its reservation released",
    () => {
      const { tap, layer } = scripted({ a: [{ contentAfterMs: 1_000 }], b: [{ contentAfterMs: 50 }] })
      const log = guardLog()
      return Effect.gen(function* () {
        const fiber = yield* startStream
        yield* TestClock.adjust("99 millis")
        expect(tap.opened).toEqual(["a"])
        yield* TestClock.adjust("1 millis")
        expect(tap.opened).toEqual(["a", "b"])
        expect(fiber.unsafePoll()).toBeNull()
        yield* TestClock.adjust("50 millis")
        const routed = yield* Fiber.join(fiber)
        expect(routed.upstream).toBe("b")
        expect(routed.attempts).toBe(2)
        // The loser was cancelled at once: its connection closed and its reservation given back.
        expect(tap.closed).toEqual(["a"])
        // What it waited counts as its time to first content (at least): a latency strategy learns.
        expect((yield* Router.Router).latency?.("a").firstContent).toMatchObject({ ms: 150, samples: 1 })
        expect(log.released).toEqual([{ upstream: "a", outcome: { _tag: "Interrupted", latencyMs: 150 } }])
        expect(yield* Router.collect(routed)).toEqual([chunk("from b").data])
        const decision = yield* routed.decision
        const hedge = {
          primary: "a",
          hedge: "b",
          afterMs: 100,
          winner: "b",
          loser: "a",
          reason: "slower to first content; cancelled"
        }
        expect(decision.hedge).toEqual(hedge)
        expect(routed.hedge).toEqual(hedge)
        expect(decision).toMatchObject({ upstream: "b", outcome: "success", firstChunkMs: 150 })
        expect(attemptsOf(decision)).toEqual([
          { attempt: 1, pool: "gpt", upstream: "a", outcome: "interrupted" },
          { attempt: 2, pool: "gpt", upstream: "b", outcome: "success" }
        ])
        // Each attempt finished exactly once.
        expect(log.released.map((r) => [r.upstream, r.outcome._tag])).toEqual([
          ["a", "Interrupted"],
          ["b", "Success"]
        ])
        expect(Decision.spanAttributes(decision)).toMatchObject({
          "sluice.hedged": true,
          "sluice.hedge.upstream": "b",
          "sluice.hedge.after_ms": 100,
          "sluice.hedge.loser": "a",
          "sluice.hedge.reason": "slower to first content; cancelled"
        })
      }).pipe(
        Effect.provide(
          routerLayer(hedgedPool({ afterMs: 100 }), { provider: layer, guards: guards(recordingGuard(log)) })
        )
      )
    }
  )

  it.effect(
    "a hedge that loses to the attempt it hedged, which started sooner, keeps its average unless it waited past it",
    () => {
      const { layer } = scripted({
        a: [{ contentAfterMs: 5_000 }, { contentAfterMs: 120 }],
        b: [{ contentAfterMs: 50 }, { contentAfterMs: 50 }]
      })
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const first = yield* streamed("10 seconds")
        expect(first.routed.hedge).toMatchObject({ winner: "b", loser: "a" })
        expect(router.latency?.("b").firstContent).toMatchObject({ ms: 50, peak: 50, samples: 1 })
        const second = yield* streamed("10 seconds")
        // The hedge started at 100 ms and lost 20 ms later to the attempt it hedged: no slower than its 50.
        expect(second.routed.hedge).toMatchObject({ winner: "a", loser: "b" })
        expect(router.latency?.("b").firstContent).toMatchObject({ ms: 50, peak: 50, samples: 2 })
      }).pipe(Effect.provide(routerLayer(hedgedPool({ afterMs: 100 }), { provider: layer })))
    }
  )

  it.effect(
    "a loser cancelled for being slower is judged by what it waited plus its average still to go, not by the wait alone",
    () => {
      const { layer } = scripted({
        a: [{ contentAfterMs: 80 }, { contentAfterMs: 5_000 }],
        b: [{ contentAfterMs: 50 }]
      })
      return Effect.gen(function* () {
        const router = yield* Router.Router
        yield* streamed("10 seconds")
        expect(router.latency?.("a").firstContent).toMatchObject({ ms: 80, peak: 80, samples: 1 })
        const { routed } = yield* streamed("10 seconds")
        expect(routed.hedge).toMatchObject({ winner: "b", loser: "a" })
        // Cancelled after 150 ms (100 before the hedge, 50 for it): its real time is longer. A hedge
        // rescues it at about the same moment whatever that time is, so the wait alone would teach
        // that an upstream ten times slower is hardly slower; an attempt that has waited 150 ms is
        // expected to need its average (80) more, and each race it loses raises its figure again.
        const figure = router.latency?.("a").firstContent
        expect(figure).toMatchObject({ peak: 230, samples: 2 })
        expect(figure!.ms).toBeGreaterThan(80)
        expect(figure!.ms).toBeLessThan(230)
      }).pipe(Effect.provide(routerLayer(hedgedPool({ afterMs: 100 }), { provider: layer })))
    }
  )

  it.effect("the hedged attempt wins when it delivers first after all; the hedge is cancelled", () => {
    const { tap, layer } = scripted({ a: [{ contentAfterMs: 150 }], b: [{ contentAfterMs: 500 }] })
    const log = guardLog()
    return Effect.gen(function* () {
      const fiber = yield* startStream
      yield* TestClock.adjust("150 millis")
      const routed = yield* Fiber.join(fiber)
      expect(routed.upstream).toBe("a")
      expect(tap.closed).toEqual(["b"])
      expect(log.released).toEqual([{ upstream: "b", outcome: { _tag: "Interrupted", latencyMs: 50 } }])
      yield* Router.collect(routed)
      expect((yield* routed.decision).hedge).toMatchObject({ winner: "a", loser: "b" })
    }).pipe(
      Effect.provide(
        routerLayer(hedgedPool({ afterMs: 100 }), { provider: layer, guards: guards(recordingGuard(log)) })
      )
    )
  })

  it.effect(
    "the decision's scores are those of the selection that chose the upstream that served, the hedged attempt's or the hedge's",
    () => {
      // Scores each candidate with the attempt number its selection was for: 1 for the hedged attempt, 2 for the hedge.
      const scoring = Strategy.make("scoring", (selection) =>
        Strategy.scored(
          selection.candidates[0],
          Object.fromEntries(selection.candidates.map((u) => [u.id, selection.attempt]))
        )
      )
      const { layer } = scripted({
        a: [{ contentAfterMs: 150 }, { contentAfterMs: 1_000 }],
        b: [{ contentAfterMs: 500 }, { contentAfterMs: 50 }]
      })
      return Effect.gen(function* () {
        const first = (yield* streamed("1 seconds")).decision
        expect(first.hedge).toMatchObject({ winner: "a", loser: "b" })
        expect(first.scores).toEqual({ a: 1, b: 1 })
        expect(Decision.spanAttributes(first)["sluice.strategy.scores"]).toEqual(["a=1", "b=1"])
        const second = (yield* streamed("1 seconds")).decision
        expect(second.hedge).toMatchObject({ winner: "b", loser: "a" })
        expect(second.scores).toEqual({ b: 2 })
        // Each attempt keeps its own.
        expect(second.attempts.map((a) => [a.upstream, a.scores])).toEqual([
          ["a", { a: 1, b: 1 }],
          ["b", { b: 2 }]
        ])
      }).pipe(Effect.provide(routerLayer(hedgedPool({ afterMs: 100 }), { provider: layer, strategy: scoring })))
    }
  )

  it.effect("a client gone during the race cancels both attempts, each finished once", () => {
    const { tap, layer } = scripted({ a: [{ contentAfterMs: 1_000 }], b: [{ contentAfterMs: 1_000 }] })
    const log = guardLog()
    return Effect.gen(function* () {
      const fiber = yield* startStream
      yield* TestClock.adjust("150 millis")
      expect(tap.opened).toEqual(["a", "b"])
      yield* Fiber.interrupt(fiber)
      expect([...tap.closed].sort()).toEqual(["a", "b"])
      expect(log.released.map((r) => [r.upstream, r.outcome._tag]).sort()).toEqual([
        ["a", "Interrupted"],
        ["b", "Interrupted"]
      ])
      // Nothing is left running: the clock moving on changes nothing.
      yield* TestClock.adjust("5 seconds")
      expect(log.released).toHaveLength(2)
    }).pipe(
      Effect.provide(
        routerLayer(hedgedPool({ afterMs: 100 }), { provider: layer, guards: guards(recordingGuard(log)) })
      )
    )
  })

  it.effect("a stream whose first content comes in time runs alone", () => {
    const { tap, layer } = scripted({ a: [{ contentAfterMs: 99 }], b: [{ contentAfterMs: 1 }] })
    return Effect.gen(function* () {
      const { routed, decision } = yield* streamed("1 seconds")
      expect(tap.opened).toEqual(["a"])
      expect(routed.hedge).toBeUndefined()
      expect(decision.hedge).toBeUndefined()
    }).pipe(Effect.provide(routerLayer(hedgedPool({ afterMs: 100 }), { provider: layer })))
  })

  it.effect("starts no hedge without another candidate, nor on an upstream whose guards refuse it (no budget)", () => {
    const { tap, layer } = scripted({ a: [{ contentAfterMs: 500 }], b: [{ contentAfterMs: 1 }] })
    const log = guardLog()
    const refuse = (attempt: { readonly upstream: { readonly id: string } }) =>
      attempt.upstream.id === "b" ? { upstream: "b", stage: "rate-limit", reason: "rpm budget spent" } : undefined
    return Effect.gen(function* () {
      const { decision } = yield* streamed("500 millis")
      expect(tap.opened).toEqual(["a"])
      expect(decision.hedge).toBeUndefined()
      expect(decision.excluded).toEqual([{ upstream: "b", stage: "rate-limit", reason: "rpm budget spent" }])
      expect(log.admitted).toEqual(["a"])
    }).pipe(
      Effect.provide(
        routerLayer(hedgedPool({ afterMs: 100 }), { provider: layer, guards: guards(recordingGuard(log, { refuse })) })
      )
    )
  })

  it.effect("starts no hedge in a pool of one upstream", () => {
    const { tap, layer } = scripted({ a: [{ contentAfterMs: 500 }] })
    return Effect.gen(function* () {
      const { routed, decision } = yield* streamed("500 millis")
      expect(tap.opened).toEqual(["a"])
      expect(routed.hedge).toBeUndefined()
      expect(decision.attempts).toHaveLength(1)
    }).pipe(Effect.provide(routerLayer(hedgedPool({ afterMs: 100 }, ["a"]), { provider: layer })))
  })

  it.effect("never hedges more than maxExtraPercent of the pool's requests", () => {
    const { layer } = scripted({ a: [{ contentAfterMs: 1_000 }], b: [{ contentAfterMs: 10 }] })
    return Effect.gen(function* () {
      const hedged: Array<boolean> = []
      for (let i = 0; i < 12; i++) hedged.push((yield* streamed("1 seconds")).routed.hedge !== undefined)
      // 25%: the 4th, 8th and 12th request may hedge, and do.
      expect(hedged.flatMap((h, i) => (h ? [i + 1] : []))).toEqual([4, 8, 12])
    }).pipe(Effect.provide(routerLayer(hedgedPool({ afterMs: 100, maxExtraPercent: 25 }), { provider: layer })))
  })

  it.effect(
    "a request hedged twice (its first race failed entirely) counts both hedges, in the budget and in the decision",
    () => {
      const fast: Script = { contentAfterMs: 10 }
      const { tap, layer } = scripted({
        a: [fast, fast, fast, { failAfterMs: 200 }, { contentAfterMs: 1_000 }],
        b: [{ failAfterMs: 300 }, fast],
        c: [{ contentAfterMs: 1_000 }],
        d: [{ contentAfterMs: 50 }]
      })
      const pool = Topology.pool({
        id: "gpt",
        models: ["gpt-4o"],
        upstreams: ["a", "b", "c", "d"].map((id) => upstream(id)),
        maxAttempts: 4,
        hedge: { afterMs: 100, maxExtraPercent: 50 }
      })
      return Effect.gen(function* () {
        for (let i = 0; i < 3; i++) expect((yield* streamed("10 seconds")).decision.hedges).toBe(0)
        // The 4th request: 50% of 4 requests leaves room for two hedges, and it takes both.
        const { routed, decision } = yield* streamed("10 seconds")
        expect(tap.opened.slice(3)).toEqual(["a", "b", "c", "d"])
        expect(routed.upstream).toBe("d")
        expect(decision.hedges).toBe(2)
        // The last race is the one recorded in full; the first's attempts are in `attempts`.
        expect(decision.hedge).toMatchObject({ primary: "c", hedge: "d", winner: "d" })
        expect(Decision.spanAttributes(decision)).toMatchObject({ "sluice.hedged": true, "sluice.hedges": 2 })
        // Two hedges in 5 requests leave no room for a third (it would pass 50%); counted once, one would.
        const next = yield* streamed("10 seconds")
        expect(next.decision).toMatchObject({ upstream: "a", hedge: undefined, hedges: 0 })
      }).pipe(Effect.provide(routerLayer([pool], { provider: layer })))
    }
  )

  it.effect("a request that falls back to a pool that hedges counts in that pool's budget too", () => {
    const { tap, layer } = scripted({
      a: [{ failAfterMs: 50 }],
      b: [{ failAfterMs: 50 }],
      c: [{ contentAfterMs: 1_000 }],
      d: [{ contentAfterMs: 10 }]
    })
    const pool = (id: string, ids: ReadonlyArray<string>, fallback?: string) =>
      Topology.pool({
        id,
        models: [id === "gpt" ? "gpt-4o" : "backup-model"],
        upstreams: ids.map((u) => upstream(u)),
        hedge: { afterMs: 100, maxExtraPercent: 100 },
        ...(fallback === undefined ? {} : { fallback })
      })
    return Effect.gen(function* () {
      // Both of gpt's upstreams fail before a hedge is due; in backup, its one request leaves room
      // for one hedge at 100% — which a budget that had not counted it would refuse.
      const { routed, decision } = yield* streamed("10 seconds")
      expect(tap.opened).toEqual(["a", "b", "c", "d"])
      expect(routed.upstream).toBe("d")
      expect(decision.hedges).toBe(1)
      expect(decision.hedge).toMatchObject({ primary: "c", hedge: "d", winner: "d" })
    }).pipe(
      Effect.provide(routerLayer([pool("gpt", ["a", "b"], "backup"), pool("backup", ["c", "d"])], { provider: layer }))
    )
  })

  it.effect("counts the last minute's requests at a minute's turn: a slow stream right after it is hedged", () => {
    // Eight streams in time, then slow ones from the start of the next minute.
    const fast: ReadonlyArray<Script> = Array.from({ length: 8 }, () => ({ contentAfterMs: 10 }))
    const { layer } = scripted({ a: [...fast, { contentAfterMs: 1_000 }], b: [{ contentAfterMs: 10 }] })
    return Effect.gen(function* () {
      for (let i = 0; i < 8; i++) expect((yield* streamed("1 seconds")).routed.hedge).toBeUndefined()
      yield* TestClock.adjust("52 seconds")
      const hedged: Array<boolean> = []
      for (let i = 0; i < 8; i++) hedged.push((yield* streamed("1 seconds")).routed.hedge !== undefined)
      // Within 25% of the last minute's requests (the 8 before the turn, weighing less as the window
      // slides past them, and these): the 1st, 2nd and 5th may hedge. A window that forgot the minute
      // before would refuse the first three: a hedge would need 4 requests of its own minute.
      expect(hedged.flatMap((h, i) => (h ? [i + 1] : []))).toEqual([1, 2, 5])
    }).pipe(Effect.provide(routerLayer(hedgedPool({ afterMs: 100, maxExtraPercent: 25 }), { provider: layer })))
  })

  it.effect("serves from the hedge when the hedged attempt fails after it started, and says so", () => {
    const { layer } = scripted({ a: [{ failAfterMs: 200 }], b: [{ contentAfterMs: 300 }] })
    return Effect.gen(function* () {
      const { routed, decision } = yield* streamed("400 millis")
      expect(routed.upstream).toBe("b")
      expect(decision.hedge).toMatchObject({ winner: "b", loser: "a", reason: "failed first: upstream answered 500" })
      expect(attemptsOf(decision)).toEqual([
        { attempt: 1, pool: "gpt", upstream: "a", outcome: "failure", status: 500, error: "upstream answered 500" },
        { attempt: 2, pool: "gpt", upstream: "b", outcome: "success" }
      ])
    }).pipe(Effect.provide(routerLayer(hedgedPool({ afterMs: 100 }), { provider: layer })))
  })

  it.effect("fails over as usual when both attempts fail, trying neither again", () => {
    const { tap, layer } = scripted({
      a: [{ failAfterMs: 200 }],
      b: [{ failAfterMs: 300 }],
      c: [{ contentAfterMs: 10 }]
    })
    return Effect.gen(function* () {
      const { routed, decision } = yield* streamed("1 seconds")
      expect(routed.upstream).toBe("c")
      expect(tap.opened).toEqual(["a", "b", "c"])
      expect(decision.hedge).toMatchObject({ winner: undefined, loser: undefined })
    }).pipe(
      Effect.provide(
        routerLayer(
          [
            Topology.pool({
              id: "gpt",
              models: ["gpt-4o"],
              upstreams: [upstream("a"), upstream("b"), upstream("c")],
              hedge: { afterMs: 100, maxExtraPercent: 100 }
            })
          ],
          { provider: layer }
        )
      )
    )
  })

  it.effect(
    "afterPercentile hedges at the pool's recent percentile of time to first content, once it has 20 samples",
    () => {
      const fast = Array.from({ length: 20 }, (_, i) => ({ contentAfterMs: 100 + i }))
      const { tap, layer } = scripted({ a: [...fast, { contentAfterMs: 5_000 }], b: [{ contentAfterMs: 10 }] })
      return Effect.gen(function* () {
        for (let i = 0; i < 21; i++) {
          const { routed } = yield* streamed("10 seconds")
          if (i < 20) expect(routed.hedge).toBeUndefined()
          else expect(routed.hedge).toMatchObject({ afterMs: 109, winner: "b" })
        }
        expect(tap.opened.filter((id) => id === "b")).toHaveLength(1)
      }).pipe(Effect.provide(routerLayer(hedgedPool({ afterPercentile: 50 }), { provider: layer })))
    }
  )
})

/** The first candidate for an attempt, the last for a hedge: in a pool of three, the first races the last. */
const firstThenLast = Strategy.make("first-then-last", (selection) =>
  selection.explore ? selection.candidates[0] : selection.candidates[selection.candidates.length - 1]!
)

/** Streams `n` requests, each while the clock moves a second: the upstream of each one's first attempt. */
const firstAttempts = (n: number) =>
  Effect.gen(function* () {
    const out: Array<string> = []
    for (let i = 0; i < n; i++) {
      // Attempts are listed as they end: the hedge that won before the attempt it hedged.
      const { attempts } = (yield* streamed("1 seconds")).decision
      out.push(attempts.reduce((a, b) => (b.attempt < a.attempt ? b : a)).upstream)
    }
    return out
  })

const slow: Script = { contentAfterMs: 1_000 }
const fast: Script = { contentAfterMs: 10 }

describe("Hedge ejection", () => {
  it.effect(
    "an upstream that loses 3 races to first content in a row gets no first attempt until ejectMs has passed (the decision says why), then is tried again, and ejected twice as long when it keeps losing",
    () => {
      const { layer } = scripted({ a: [slow], b: [fast] })
      return Effect.gen(function* () {
        // Each of a's attempts is hedged at 100 ms and loses to b's content at 110 ms.
        expect(yield* firstAttempts(3)).toEqual(["a", "a", "a"])
        // The third race was lost at 2,110 ms: ejected for 30 s.
        const ejected = {
          upstream: "a",
          stage: "hedge",
          reason: "lost 3 races to first content in a row; ejected until 1970-01-01T00:00:32.110Z"
        }
        const { decision } = yield* streamed("1 seconds")
        expect(decision).toMatchObject({ upstream: "b", candidates: ["b"], hedge: undefined })
        expect(decision.excluded).toEqual([ejected])
        yield* TestClock.adjust("28109 millis")
        expect(yield* firstAttempts(1)).toEqual(["b"])
        // 32,110 ms: back, and it loses again; its next ejection lasts 60 s, from 35,219 ms.
        expect(yield* firstAttempts(3)).toEqual(["a", "a", "a"])
        expect((yield* streamed("1 seconds")).decision.excluded).toEqual([
          { ...ejected, reason: "lost 3 races to first content in a row; ejected until 1970-01-01T00:01:35.219Z" }
        ])
      }).pipe(Effect.provide(routerLayer(hedgedPool({ afterMs: 100 }), { provider: layer })))
    }
  )

  for (const [how, third] of [
    ["its first content comes before the hedge is due", { a: { contentAfterMs: 50 }, b: fast }],
    ["it wins the race against the hedge", { a: { contentAfterMs: 150 }, b: { contentAfterMs: 500 } }]
  ] as const) {
    it.effect(`an upstream's lost races start again from none when a stream of its delivers in time: ${how}`, () => {
      const { layer } = scripted({ a: [slow, slow, third.a, slow, slow, slow, slow], b: [fast, fast, third.b, fast] })
      return Effect.gen(function* () {
        // Two races lost, then one in time: two more lost make two in a row, not four; the third ejects it.
        expect(yield* firstAttempts(7)).toEqual(["a", "a", "a", "a", "a", "a", "b"])
      }).pipe(Effect.provide(routerLayer(hedgedPool({ afterMs: 100 }), { provider: layer })))
    })
  }

  it.effect("never ejects more than maxEjectedPercent of the pool's enabled upstreams at once", () => {
    const { layer } = scripted({ a: [slow], b: [slow], c: [fast] })
    return Effect.gen(function* () {
      // a races c three times and loses: ejected. Then b does, but 50% of three upstreams is one.
      expect(yield* firstAttempts(7)).toEqual(["a", "a", "a", "b", "b", "b", "b"])
      const { decision } = yield* streamed("1 seconds")
      expect(decision.excluded.map((e) => [e.upstream, e.stage])).toEqual([["a", "hedge"]])
    }).pipe(
      Effect.provide(
        routerLayer(hedgedPool({ afterMs: 100 }, ["a", "b", "c"]), { provider: layer, strategy: firstThenLast })
      )
    )
  })

  it.effect(
    "never ejects the last upstream, and an ejected one still serves when no other can (here, the hedges)",
    () => {
      const { layer } = scripted({ a: [slow, slow, slow, fast], b: [fast, fast, fast, slow] })
      return Effect.gen(function* () {
        // a is ejected; b, alone, is hedged on a and loses three times too, but stays.
        expect(yield* firstAttempts(7)).toEqual(["a", "a", "a", "b", "b", "b", "b"])
        const { decision } = yield* streamed("1 seconds")
        expect(decision.hedge).toMatchObject({ primary: "b", hedge: "a", winner: "a" })
      }).pipe(
        Effect.provide(
          routerLayer(hedgedPool({ afterMs: 100, maxEjectedPercent: 100 }), {
            provider: layer,
            strategy: firstThenLast
          })
        )
      )
    }
  )

  it.effect("ejectAfterLosses 0 ejects nothing", () => {
    const { layer } = scripted({ a: [slow], b: [fast] })
    return Effect.gen(function* () {
      expect(yield* firstAttempts(6)).toEqual(["a", "a", "a", "a", "a", "a"])
    }).pipe(Effect.provide(routerLayer(hedgedPool({ afterMs: 100, ejectAfterLosses: 0 }), { provider: layer })))
  })

  it.effect("a hedge that loses counts nothing against its upstream: it started later", () => {
    const { layer } = scripted({ a: [{ contentAfterMs: 150 }], b: [{ contentAfterMs: 500 }] })
    return Effect.gen(function* () {
      for (let i = 0; i < 4; i++)
        expect((yield* streamed("1 seconds")).decision.hedge).toMatchObject({ winner: "a", loser: "b" })
      const { decision } = yield* streamed("1 seconds")
      expect(decision).toMatchObject({ candidates: ["a", "b"], excluded: [] })
      expect(decision.hedge).toMatchObject({ hedge: "b" })
    }).pipe(Effect.provide(routerLayer(hedgedPool({ afterMs: 100, ejectAfterLosses: 1 }), { provider: layer })))
  })
})
