import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Fiber, Layer, Stream, TestClock } from "effect"
import type { Strategy as StrategyTypes } from "../src/index.js"
import {
  Config,
  Decision,
  Guard,
  Live,
  Matcher,
  Provider,
  RateLimiter,
  Router,
  StateStore,
  Strategy,
  TokenCounter,
  Topology
} from "../src/index.js"
import { answer, chatRequest, chunk, completion, httpError, opened, provider, upstream } from "./fixtures.js"

/** What a strategy saw of the candidates on each selection. */
type Seen = Array<{ readonly inFlight: Record<string, number>; readonly prefixHash: number | undefined }>

/** A strategy that records the live view and takes the candidate with the fewest in flight (the first on ties). */
const watching = (seen: Seen, live?: boolean): Strategy.Service => {
  const select = (selection: StrategyTypes.Selection) => {
    const inFlight: Record<string, number> = {}
    let best = selection.candidates[0]
    for (const u of selection.candidates) {
      inFlight[u.id] = selection.live.inFlight(u)
      if (inFlight[u.id]! < inFlight[best.id]!) best = u
    }
    seen.push({ inFlight, prefixHash: selection.prefixHash() })
    return Strategy.scored(best, inFlight)
  }
  return live === undefined ? Strategy.make("watching", select) : { ...Strategy.make("watching", select), live }
}

const pools = [
  Topology.pool({
    id: "gpt",
    models: ["gpt-4o"],
    upstreams: [upstream("a", { limits: { rpm: 10 } }), upstream("b")],
    maxAttempts: 1
  })
]

/** The router over `pools` with the rate limiter, exposing its state store. */
const routing = (strategy: Strategy.Service, stub: Layer.Layer<Provider.Provider>, among = pools) =>
  Router.layer.pipe(
    Layer.provide(Matcher.layer),
    Layer.provide(Guard.layer(RateLimiter.guard)),
    Layer.provide(RateLimiter.layer),
    Layer.provideMerge(
      Layer.mergeAll(Topology.layerPools(among), TokenCounter.layerEstimate, stub, Strategy.layer(strategy))
    ),
    Layer.provideMerge(StateStore.layerMemory)
  )

const reader = Effect.map(StateStore.StateStore, (store) => Live.make(store.local))

describe("the live view of candidates", () => {
  it.effect(
    "counts an answer in flight on its upstream from admission until it answers, with its reserved tokens",
    () => {
      const seen: Seen = []
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const live = yield* reader
        const [a, b] = pools[0]!.upstreams
        const first = yield* Effect.fork(router.chat(chatRequest("gpt-4o", { max_tokens: 100 })))
        yield* TestClock.adjust("10 millis")
        expect(live.inFlight(a!)).toBe(1)
        expect(live.reservedTokens(a!)).toBe(109)
        const second = yield* Effect.fork(router.chat(chatRequest()))
        yield* TestClock.adjust("10 millis")
        // The strategy saw `a` busy and took `b`.
        expect(seen[1]!.inFlight).toEqual({ a: 1, b: 0 })
        expect(live.inFlight(b!)).toBe(1)
        yield* TestClock.adjust("300 millis")
        const done = yield* Fiber.join(first)
        yield* Fiber.join(second)
        expect([live.inFlight(a!), live.inFlight(b!), live.reservedTokens(a!)]).toEqual([0, 0, 0])
        // The scores it returned are the decision's and its trace's.
        expect(done.decision.scores).toEqual({ a: 0, b: 0 })
        expect(Decision.spanAttributes(done.decision)["sluice.strategy.scores"]).toEqual(["a=0", "b=0"])
        expect(live.latency(a!, "answer")?.ms).toBe(300)
        // 7 output tokens in 300 ms.
        expect(live.latency(a!, "per-output-token")?.ms).toBeCloseTo(300 / 7)
        expect(live.outputTokens(a!)).toBe(7)
        expect(live.errorRate(a!)).toBe(0)
      }).pipe(
        Effect.provide(
          routing(
            watching(seen),
            provider({ chat: (u) => Effect.as(Effect.sleep("300 millis"), answer(completion(u.id))) })
          )
        )
      )
    }
  )

  it.effect("keeps with each attempt the scores its upstream was chosen by: a retry's are its own", () => {
    const seen: Seen = []
    const retrying = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a"), upstream("b")] })]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const { decision } = yield* router.chat(chatRequest())
      expect(decision.attempts.map((a) => [a.upstream, a.outcome, a.scores])).toEqual([
        ["a", "failure", { a: 0, b: 0 }],
        ["b", "success", { b: 0 }]
      ])
      // The decision's own are the last selection's.
      expect(decision.scores).toEqual({ b: 0 })
    }).pipe(
      Effect.provide(
        routing(
          watching(seen),
          provider({
            chat: (u) => (u.id === "a" ? Effect.fail(httpError("a", 503)) : Effect.succeed(answer(completion("b"))))
          }),
          retrying
        )
      )
    )
  })

  it.effect("counts a stream in flight until it ends, not just until its first content", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const live = yield* reader
      const a = pools[0]!.upstreams[0]!
      const routed = yield* router.chatStream(chatRequest())
      expect(live.inFlight(a)).toBe(1)
      const reading = yield* Effect.fork(Router.collect(routed))
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(reading)
      expect(live.inFlight(a)).toBe(0)
      expect(live.latency(a, "first-content")?.ms).toBe(0)
    }).pipe(
      Effect.provide(
        routing(
          watching([]),
          provider({
            chatStream: () =>
              opened(
                Stream.concat(
                  Stream.make(chunk("Hi")),
                  Stream.fromEffect(Effect.as(Effect.sleep("1 second"), chunk(" there")))
                )
              )
          })
        )
      )
    )
  )

  it.effect("rates an upstream's recent failures, and forgets them while it takes no traffic", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const live = yield* reader
      const a = pools[0]!.upstreams[0]!
      for (let i = 0; i < 3; i++) yield* Effect.either(router.chat(chatRequest()))
      const failing = live.errorRate(a)
      // Each failure moves the rate 10% of the way to 1 when they come at once.
      expect(failing).toBeCloseTo(1 - 0.9 ** 3)
      yield* TestClock.adjust(`${Live.HALF_LIFE_MS} millis`)
      live.now = Live.HALF_LIFE_MS
      expect(live.errorRate(a)).toBeCloseTo(failing / 2)
      expect(live.inFlight(a)).toBe(0)
    }).pipe(Effect.provide(routing(watching([]), provider({ chat: (u) => Effect.fail(httpError(u.id, 503)) }))))
  )

  it.effect("reads what is left of an upstream's RPM budget, and 1 where it has none", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const live = yield* reader
      const [a, b] = pools[0]!.upstreams
      for (let i = 0; i < 4; i++) yield* router.chat(chatRequest())
      // Every request went to `a` (nothing in flight at each selection): 4 of its 10 requests used.
      expect(live.budgetLeft(a!)).toBeCloseTo(0.6)
      expect(live.budgetLeft(b!)).toBe(1)
      expect(live.candidate(a!)).toMatchObject({ upstream: "a", inFlight: 0, budgetLeft: 0.6, errorRate: 0 })
    }).pipe(Effect.provide(routing(watching([]), provider({ chat: (u) => Effect.succeed(answer(completion(u.id))) }))))
  )

  it.effect("counts nothing per attempt for a strategy that reads no load", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      const store = yield* StateStore.StateStore
      const fiber = yield* Effect.fork(router.chat(chatRequest()))
      yield* TestClock.adjust("10 millis")
      expect(store.local.peek("load:a")).toBeUndefined()
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(fiber)
    }).pipe(
      Effect.provide(
        routing(
          watching([], false),
          provider({ chat: (u) => Effect.as(Effect.sleep("100 millis"), answer(completion(u.id))) })
        )
      )
    )
  )

  it.effect("hands strategies one hash per prompt prefix: system prompt and tools, else the first message", () => {
    const seen: Seen = []
    const ask = (system: string | undefined, user: string) =>
      chatRequest("gpt-4o", {
        messages: [
          ...(system === undefined ? [] : [{ role: "system" as const, content: system }]),
          { role: "user", content: user }
        ]
      })
    return Effect.gen(function* () {
      const router = yield* Router.Router
      yield* router.chat(ask("You are terse.", "one"))
      yield* router.chat(ask("You are terse.", "two"))
      yield* router.chat(ask("You are verbose.", "one"))
      yield* router.chat(ask(undefined, "one"))
      yield* router.chat(ask(undefined, "two"))
      const hashes = seen.map((s) => s.prefixHash)
      expect(hashes.every((h) => typeof h === "number")).toBe(true)
      expect(hashes[0]).toBe(hashes[1])
      expect(new Set(hashes).size).toBe(4)
    }).pipe(
      Effect.provide(routing(watching(seen), provider({ chat: (u) => Effect.succeed(answer(completion(u.id))) })))
    )
  })
})

describe("strategy settings in the config", () => {
  const config = (upstreamFields: Record<string, unknown>, poolFields: Record<string, unknown>) => ({
    upstreams: [
      { id: "a", provider: "openai", baseUrl: "https://api.example.com/v1", ...upstreamFields },
      { id: "b", provider: "openai", baseUrl: "https://api.example.com/v1", quality: 0.9 }
    ],
    pools: [{ id: "gpt", models: ["gpt-4o"], upstreams: ["a", "b"], ...poolFields }]
  })
  const problemsOf = (input: unknown) => {
    const result = Config.decode(input)
    return Either.isLeft(result) ? result.left.problems : []
  }

  it("decodes quality, the cost strategy's weights and floor, and consistent hashing's epsilon with its default", () => {
    const decoded = Either.getOrThrow(
      Config.decode(
        config(
          { quality: 0.5 },
          { strategy: "cost", cost: { weights: { cost: 0.7, latency: 0.3 }, minQuality: 0.6 }, consistentHash: {} }
        )
      )
    )
    expect(decoded.upstreams[0]!.quality).toBe(0.5)
    expect(decoded.pools[0]!.cost).toEqual({ weights: { cost: 0.7, latency: 0.3 }, minQuality: 0.6 })
    expect(decoded.pools[0]!.consistentHash).toEqual({ epsilon: 0.25 })
  })

  it("names a quality outside 0 to 1, weights that weigh nothing and an epsilon of 0, by path", () => {
    expect(
      problemsOf(
        config({ quality: 1.5 }, { cost: { weights: { cost: 0, latency: 0 } }, consistentHash: { epsilon: 0 } })
      )
    ).toEqual([
      "upstreams[0].quality: expected a quality score from 0 to 1, actual 1.5",
      "pools[0].cost.weights: expected a weight above 0 for cost or latency (or both)",
      "pools[0].consistentHash.epsilon: expected a number above 0 (0.25 allows 25% above the average load)"
    ])
  })

  it("asks for a quality on every upstream of a pool with a minQuality", () => {
    expect(problemsOf(config({}, { strategy: "cost", cost: { minQuality: 0.8 } }))).toEqual([
      "pools[0].cost.minQuality: upstream 'a' of the pool states no quality; give each a quality from 0 to 1, or remove minQuality"
    ])
  })
})
