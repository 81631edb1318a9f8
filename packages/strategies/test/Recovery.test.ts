/**
 * The latency-reading strategies in a whole router, on `TestClock`: an upstream that was slow and
 * recovered gets traffic back once its old average has aged, without a real second passing.
 */
import { describe, expect, it } from "@effect/vitest"
import type { Wire } from "@sluice/core"
import { Guard, Matcher, Provider, Router, StateStore, Strategy, TokenCounter, Topology } from "@sluice/core"
import { Effect, Fiber, Layer, Random, TestClock } from "effect"
import { Latency, P2C } from "../src/index.js"

const upstream = (id: string) => Topology.upstream({ id, provider: "openai", baseUrl: "http://127.0.0.1:9/v1" })

const completion = (id: string): Wire.ChatCompletion => ({
  id: `chatcmpl-${id}`,
  object: "chat.completion",
  created: 0,
  model: "gpt-4o",
  choices: [{ index: 0, message: { role: "assistant", content: id }, finish_reason: "stop" }],
  usage: { prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 }
})

/** A router over `fast` and `slow`, whose answers take what `latencies` says at the time of the call. */
const routerWith = (strategy: Strategy.Service, latencies: Record<string, number>) =>
  Router.layer.pipe(
    Layer.provide(Matcher.layer),
    Layer.provide(
      Layer.mergeAll(
        Topology.layerPools([
          Topology.pool({ id: "chat", models: ["gpt-4o"], upstreams: [upstream("fast"), upstream("slow")] })
        ]),
        TokenCounter.layerEstimate,
        Layer.succeed(
          Provider.Provider,
          Provider.Provider.of({
            chat: (u) => Effect.as(Effect.sleep(`${latencies[u.id]!} millis`), { value: completion(u.id) }),
            chatStream: (u) => Effect.dieMessage(`no stream expected on ${u.id}`),
            embeddings: (u) => Effect.dieMessage(`no embeddings expected on ${u.id}`)
          })
        ),
        Strategy.layer(strategy),
        Guard.none,
        StateStore.layerMemory
      )
    )
  )

/** One request answered after the clock moves past every latency; then `gapMs` of quiet. Its upstream. */
const oneRequest = (gapMs: number) =>
  Effect.gen(function* () {
    const router = yield* Router.Router
    const fiber = yield* Effect.fork(router.chat({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] }))
    yield* TestClock.adjust("2 seconds")
    const routed = yield* Fiber.join(fiber)
    yield* TestClock.adjust(`${gapMs} millis`)
    return routed.decision.upstream!
  })

const recovers = (strategy: Strategy.Service) => {
  const latencies = { fast: 100, slow: 1000 }
  return Effect.gen(function* () {
    const before: Array<string> = []
    for (let i = 0; i < 10; i++) before.push(yield* oneRequest(0))
    // Once each has a sample, the slow one is left alone.
    expect(before.slice(2).filter((id) => id === "slow")).toEqual([])
    latencies.slow = 50
    // Requests every 7 s of simulated time: once the slow one's 1000 ms is stale (30 s), it is probed again.
    const after: Array<string> = []
    for (let i = 0; i < 30; i++) after.push(yield* oneRequest(5_000))
    const back = after.indexOf("slow")
    expect(back).toBeGreaterThan(0)
    // Its fresh samples (50 ms) then win: the fast one only gets its own probe now and then.
    const last = after.slice(-12)
    expect(last.filter((id) => id === "slow").length).toBeGreaterThanOrEqual(9)
    // Seeded: ties are broken at random, and the run must be the same every time.
  }).pipe(Effect.provide(routerWith(strategy, latencies)), Effect.withRandom(Random.make(5)))
}

describe("a recovered upstream is not starved by its old average", () => {
  it.effect("latency: tried again once its old average has aged below the fast one's, then preferred", () =>
    recovers(Latency.service)
  )

  it.effect("p2c: tried again once its old peak has leaned toward the other's, then preferred", () =>
    recovers(P2C.service)
  )
})
