import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Stream, TestClock } from "effect"
import { Router, Topology } from "../src/index.js"
import { decayed, HALF_LIFE_MS } from "../src/internal/latency.js"
import {
  answer,
  chatRequest,
  chunk,
  completion,
  opened,
  provider,
  routerLayer,
  streamOf,
  upstream
} from "./fixtures.js"

describe("decayed latency", () => {
  it("starts at the first sample, and forgets an old average by half every half-life", () => {
    const first = decayed(undefined, 400, 0)
    expect(first).toEqual({ ms: 400, at: 0, samples: 1, peak: 400 })
    // One half-life later, the old average and the new sample weigh the same.
    expect(decayed(first, 100, HALF_LIFE_MS).ms).toBeCloseTo(250)
    // Long after, a recovered upstream is judged by its new sample, not its old average.
    expect(decayed(first, 100, 20 * HALF_LIFE_MS).ms).toBeCloseTo(100, 2)
    // Samples in the same instant still move it (the old average keeps at most 90%).
    expect(decayed(first, 100, 0)).toEqual({ ms: 370, at: 0, samples: 2, peak: 370 })
  })
})

const pools = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a")] })]

describe("Router.latency", () => {
  it.effect("averages an upstream's whole answers and, apart, its streams' time to first content", () =>
    Effect.gen(function* () {
      const router = yield* Router.Router
      expect(router.latency?.("a")).toEqual({})
      const call = yield* Effect.fork(router.chat(chatRequest()))
      yield* TestClock.adjust("300 millis")
      yield* Fiber.join(call)
      expect(router.latency?.("a")).toEqual({ answer: { ms: 300, at: 300, samples: 1, peak: 300 } })
      const stream = yield* Effect.fork(router.chatStream(chatRequest()))
      yield* TestClock.adjust("50 millis")
      yield* Router.collect(yield* Fiber.join(stream))
      expect(router.latency?.("a")?.firstContent).toEqual({ ms: 50, at: 350, samples: 1, peak: 50 })
      // A stream's time to first content does not move the answers' average.
      expect(router.latency?.("a")?.answer?.samples).toBe(1)
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          provider: provider({
            chat: () => Effect.as(Effect.sleep("300 millis"), answer(completion("a"))),
            chatStream: () =>
              opened(Stream.concat(Stream.fromEffect(Effect.as(Effect.sleep("50 millis"), chunk("Hi"))), streamOf()))
          })
        })
      )
    )
  )
})
