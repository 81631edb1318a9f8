/**
 * The latency-reading strategies choosing a hedge in a whole router, on `TestClock`: a hedge goes to
 * the best known candidate, never to one picked to explore it.
 */
import { describe, expect, it } from "@effect/vitest"
import {
  Guard,
  Live,
  Matcher,
  Provider,
  Router,
  StateStore,
  Strategy,
  StreamEvent,
  TokenCounter,
  Topology
} from "@sluice/core"
import { Effect, Fiber, Layer, Stream, TestClock } from "effect"
import { Latency, P2C } from "../src/index.js"

const upstream = (id: string) => Topology.upstream({ id, provider: "openai", baseUrl: "http://127.0.0.1:9/v1" })

const chunk = (content: string): Provider.StreamEvent => ({
  data: JSON.stringify({
    id: "chatcmpl-s",
    object: "chat.completion.chunk",
    created: 0,
    model: "gpt-4o",
    choices: [{ index: 0, delta: { content }, finish_reason: null }]
  })
})

/**
 * Streams whose first content comes after `slowMs` for the first stream opened (the attempt that
 * gets hedged) and for `slow`, after 50 ms for any other.
 */
const providerLayer = (slowMs: number) => {
  let opened = 0
  return Layer.succeed(
    Provider.Provider,
    Provider.Provider.of({
      chat: (u) => Effect.dieMessage(`no whole answer expected on ${u.id}`),
      chatStream: (u) => {
        const wait = opened++ === 0 || u.id === "slow" ? slowMs : 50
        const events = Stream.concat(Stream.drain(Stream.fromEffect(Effect.sleep(wait))), Stream.make(chunk(u.id)))
        return Effect.map(StreamEvent.fromStream(events), (stream) => ({ events: stream }))
      },
      embeddings: (u) => Effect.dieMessage(`no embeddings expected on ${u.id}`)
    })
  )
}

/** A router over `quick`, `steady` and `slow`, hedging streams after 100 ms, on `store`. */
const routerWith = (strategy: Strategy.Service, store: StateStore.Service) =>
  Router.layer.pipe(
    Layer.provide(Matcher.layer),
    Layer.provide(
      Layer.mergeAll(
        Topology.layerPools([
          Topology.pool({
            id: "chat",
            models: ["gpt-4o"],
            upstreams: [upstream("quick"), upstream("steady"), upstream("slow")],
            hedge: { afterMs: 100, maxExtraPercent: 100 }
          })
        ]),
        TokenCounter.layerEstimate,
        providerLayer(3_000),
        Strategy.layer(strategy),
        Guard.none,
        Layer.succeed(StateStore.StateStore, store)
      )
    )
  )

/**
 * `slow` was measured at 3 s when the clock started, `quick` and `steady` at 60 and 80 ms just now:
 * the first attempt is chosen while `slow`'s figure is exactly `Latency.STALE_MS` old, and the hedge
 * 100 ms later, once that figure is stale — when an idle `slow` would be explored.
 */
const hedgedOnce = (strategy: Strategy.Service) =>
  Effect.gen(function* () {
    const store = yield* StateStore.makeMemory
    yield* TestClock.adjust(`${Latency.STALE_MS} millis`)
    Live.recordLatency(store.local, "first-content", "slow", 3_000, 0)
    Live.recordLatency(store.local, "first-content", "quick", 60, Latency.STALE_MS)
    Live.recordLatency(store.local, "first-content", "steady", 80, Latency.STALE_MS)
    return yield* Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(
        router.chatStream({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }], stream: true })
      )
      yield* TestClock.adjust("5 seconds")
      const routed = yield* Fiber.join(fiber)
      yield* Router.collect(routed)
      return yield* routed.decision
    }).pipe(Effect.provide(routerWith(strategy, store)))
  })

describe("a hedge chosen by a latency-reading strategy", () => {
  it.effect("latency: goes to the best known candidate, not to one it would explore", () =>
    Effect.gen(function* () {
      const decision = yield* hedgedOnce(Latency.service)
      expect(decision.hedge).toMatchObject({ primary: "quick", hedge: "steady", winner: "steady" })
      expect(decision.upstream).toBe("steady")
    })
  )

  it.effect("p2c: goes to the known candidate of its two, not to one it would explore", () =>
    Effect.gen(function* () {
      const decision = yield* hedgedOnce(P2C.service)
      // Two candidates are left beside the hedged attempt: p2c compares both.
      expect(decision.hedge?.primary).not.toBe("slow")
      expect(decision.hedge?.hedge).not.toBe("slow")
      expect(decision.hedge?.winner).toBe(decision.hedge?.hedge)
    })
  )
})
