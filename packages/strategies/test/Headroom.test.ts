import { describe, expect, it } from "@effect/vitest"
import { Guard, RateLimiter, StateStore, Strategy, Topology } from "@sluice/core"
import { Effect, Layer } from "effect"
import { Headroom } from "../src/index.js"
import { selection, tally } from "./fixtures.js"

const limited = (id: string, rpm: number) =>
  Topology.upstream({ id, provider: "simulated", baseUrl: `http://127.0.0.1/${id}`, limits: { rpm } })

describe("Headroom", () => {
  const pool = Topology.pool({
    id: "chat",
    models: ["chat-*"],
    upstreams: [limited("small", 10), limited("large", 30)],
    strategy: "headroom"
  })

  it.effect("drains every budget at the same pace, so the pool serves its summed quota without a refusal", () =>
    Effect.gen(function* () {
      const { local } = yield* StateStore.StateStore
      const limiter = yield* RateLimiter.RateLimiter
      const chosen: Array<string> = []
      for (let i = 0; i < 40; i++) {
        const upstream = Strategy.chosen(Headroom.service.select(selection(pool, { local, seed: i })))
        chosen.push(upstream.id)
        // Admitted by the rate limiter every time: no upstream was ever asked past its budget.
        yield* Guard.admit(limiter.guard, {
          pool,
          model: "chat-1",
          promptTokens: 10,
          reservedOutputTokens: 10,
          sessionKey: undefined,
          priority: 0,
          stream: false,
          upstream,
          attempt: 1
        })
      }
      expect(tally(chosen)).toEqual({ small: 10, large: 30 })
      const choice = Headroom.service.select(selection(pool, { local }))
      expect("scores" in choice && choice.scores).toEqual({ small: 0, large: 0 })
    }).pipe(Effect.provide(RateLimiter.layer.pipe(Layer.provideMerge(StateStore.layerMemory))))
  )

  it("takes the largest share left, and counts an upstream without limits as wholly free", () => {
    const open = Topology.upstream({ id: "open", provider: "simulated", baseUrl: "http://127.0.0.1/open" })
    const mixed = Topology.pool({ id: "mixed", models: ["m"], upstreams: [limited("small", 10), open] })
    const choice = Headroom.service.select(selection(mixed))
    expect("scores" in choice && choice.scores).toEqual({ small: 1, open: 1 })
    expect(Headroom.service.live).toBe(false)
  })
})
