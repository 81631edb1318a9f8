import { describe, expect, it } from "@effect/vitest"
import { Config, Live, StateStore, Strategy, Topology } from "@sluice/core"
import { Effect, Layer } from "effect"
import { Cost, Strategies } from "../src/index.js"
import { memoryLocal, pick, selection } from "./fixtures.js"

/** An upstream priced per million tokens, with an optional quality. */
const priced = (id: string, input: number, output: number, quality?: number) =>
  Topology.upstream({
    id,
    provider: "simulated",
    baseUrl: `http://127.0.0.1/${id}`,
    pricing: { inputPerMillion: input, outputPerMillion: output },
    quality
  })

const poolOf = (upstreams: ReadonlyArray<Topology.Upstream>, cost?: Config.CostConfig) =>
  Topology.pool({ id: "chat", models: ["chat-*"], upstreams, strategy: "cost", cost })

describe("Cost", () => {
  const strategy = Cost.service

  it("takes the lowest expected cost of this request, input and output priced apart", () => {
    // 1000 prompt tokens, 100 reserved for the answer: `long-prompts` is cheaper for this request.
    const pool = poolOf([priced("cheap-output", 10, 1), priced("long-prompts", 1, 20)])
    const choice = strategy.select(selection(pool, { promptTokens: 1000, reservedOutputTokens: 100 }))
    expect(Strategy.chosen(choice).id).toBe("long-prompts")
    expect("scores" in choice && choice.scores).toEqual({ "cheap-output": 0.0101, "long-prompts": 0.003 })
  })

  it("expects the output the candidates' answers averaged, not the whole reservation", () => {
    const local = memoryLocal()
    const pool = poolOf([priced("a", 1, 30), priced("b", 5, 1)])
    // With 4000 reserved output tokens, `b`'s cheap output wins...
    expect(pick(strategy, selection(pool, { local, promptTokens: 1000, reservedOutputTokens: 4000 }))).toBe("b")
    // ...but answers have averaged 20 tokens: then `a`'s cheap input does.
    Live.started(local, "a", 0)
    Live.finished(local, "a", 0, { _tag: "Success", latencyMs: 5, inputTokens: 1000, outputTokens: 20 }, 5)
    expect(Cost.expectedOutput(selection(pool, { local, reservedOutputTokens: 4000 }))).toBe(20)
    expect(pick(strategy, selection(pool, { local, promptTokens: 1000, reservedOutputTokens: 4000 }))).toBe("a")
  })

  it("trades cost against latency with weights, each relative to the candidates' mean", () => {
    const local = memoryLocal()
    const upstreams = [priced("cheap-slow", 1, 1), priced("dear-fast", 2, 2)]
    Live.recordLatency(local, "answer", "cheap-slow", 5000, 0)
    Live.recordLatency(local, "answer", "dear-fast", 500, 0)
    const ask = (cost: Config.CostConfig) =>
      pick(strategy, selection(poolOf(upstreams, cost), { local, promptTokens: 100 }))
    expect(ask({ weights: { cost: 1, latency: 0 } })).toBe("cheap-slow")
    expect(ask({ weights: { cost: 0.7, latency: 0.3 } })).toBe("dear-fast")
    expect(ask({ weights: { cost: 0.95, latency: 0.05 } })).toBe("cheap-slow")
  })

  it("leaves out upstreams below minQuality, and serves with the best quality when none reaches it", () => {
    const upstreams = [priced("cheapest", 0.1, 0.1, 0.4), priced("good", 1, 1, 0.8), priced("best", 5, 5, 0.95)]
    expect(pick(strategy, selection(poolOf(upstreams, { minQuality: 0.7 }), { promptTokens: 100 }))).toBe("good")
    expect(pick(strategy, selection(poolOf(upstreams), { promptTokens: 100 }))).toBe("cheapest")
    const floor = poolOf(upstreams, { minQuality: 0.99 })
    expect(pick(strategy, selection(floor, { promptTokens: 100 }))).toBe("best")
  })

  it.effect("refuses to build for a pool with an upstream without pricing, naming it", () =>
    Effect.gen(function* () {
      const pool = poolOf([
        priced("a", 1, 1),
        Topology.upstream({ id: "free", provider: "simulated", baseUrl: "http://127.0.0.1/free" })
      ])
      const error = yield* Strategy.Strategy.pipe(
        Effect.provide(
          Strategies.layer().pipe(Layer.provide(Topology.layerPools([pool])), Layer.provide(StateStore.layerMemory))
        ),
        Effect.flip
      )
      expect(error.problems).toEqual([
        "pools.chat.strategy: 'cost' needs pricing on every upstream of the pool; 'free' has none (set pricing: { inputPerMillion, outputPerMillion })"
      ])
    })
  )
})
