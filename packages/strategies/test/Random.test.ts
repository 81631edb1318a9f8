import { describe, expect, it } from "@effect/vitest"
import { Strategy } from "@sluice/core"
import { Effect } from "effect"
import { Random } from "../src/index.js"
import { picks, poolOf, selection, tally, upstreams } from "./fixtures.js"

describe("Random", () => {
  const pool = poolOf("chat", upstreams({ a: 5, b: 3, c: 2 }), "random")

  it.effect("picks the same sequence for the same seed", () =>
    Effect.gen(function* () {
      const strategy = yield* Random.make
      expect(strategy.name).toBe("random")
      const run = (seed: number) => picks(strategy, selection(pool, { seed }), 50)
      const first = run(42)
      expect(run(42)).toEqual(first)
      expect(run(7)).not.toEqual(first)
    })
  )

  it.effect("picks in proportion to weight over 10,000 picks, within 3 points", () =>
    Effect.gen(function* () {
      const strategy = yield* Random.make
      const counts = tally(picks(strategy, selection(pool, { seed: "sluice" }), 10_000))
      expect(Math.abs((counts["a"] ?? 0) / 10_000 - 0.5)).toBeLessThan(0.03)
      expect(Math.abs((counts["b"] ?? 0) / 10_000 - 0.3)).toBeLessThan(0.03)
      expect(Math.abs((counts["c"] ?? 0) / 10_000 - 0.2)).toBeLessThan(0.03)
    })
  )

  it.effect("never picks a zero-weight candidate while another has weight", () =>
    Effect.gen(function* () {
      const strategy = yield* Random.make
      const withOff = poolOf("chat", upstreams({ a: 1, off: 0 }), "random")
      expect(tally(picks(strategy, selection(withOff, { seed: 1 }), 200))).toEqual({ a: 200 })
    })
  )

  it.effect("is provided as the Strategy service by its layer", () =>
    Effect.gen(function* () {
      const strategy = yield* Strategy.Strategy
      expect(strategy.name).toBe("random")
    }).pipe(Effect.provide(Random.layer))
  )
})
