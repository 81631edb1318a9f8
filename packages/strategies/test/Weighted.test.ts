import { describe, expect, it } from "@effect/vitest"
import { StateStore, Strategy } from "@sluice/core"
import { Effect } from "effect"
import { Weighted } from "../src/index.js"
import { pick, picks, poolOf, selection, tally, upstreams } from "./fixtures.js"

describe("Weighted", () => {
  const nginx = poolOf("chat", upstreams({ a: 5, b: 1, c: 1 }), "weighted")

  it.effect("follows nginx's smooth weighted sequence for weights 5,1,1", () =>
    Effect.gen(function* () {
      const strategy = yield* Weighted.make
      expect(strategy.name).toBe("weighted")
      expect(picks(strategy, selection(nginx), 14)).toEqual([..."aabacaa".split(""), ..."aabacaa".split("")])
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("holds exact proportions over 700 picks and over every window of sum(weights) picks", () =>
    Effect.gen(function* () {
      const strategy = yield* Weighted.make
      const ids = picks(strategy, selection(nginx), 700)
      expect(tally(ids)).toEqual({ a: 500, b: 100, c: 100 })
      for (let start = 0; start + 7 <= ids.length; start++) {
        expect(tally(ids.slice(start, start + 7))).toEqual({ a: 5, b: 1, c: 1 })
      }
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("never picks the light upstream twice in a row at 3:1", () =>
    Effect.gen(function* () {
      const strategy = yield* Weighted.make
      const pool = poolOf("chat", upstreams({ heavy: 3, light: 1 }), "weighted")
      const ids = picks(strategy, selection(pool), 400)
      expect(tally(ids)).toEqual({ heavy: 300, light: 100 })
      for (let i = 1; i < ids.length; i++) {
        expect(ids[i] === "light" && ids[i - 1] === "light").toBe(false)
      }
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("picks only the remaining candidates, in proportion, when one is excluded", () =>
    Effect.gen(function* () {
      const strategy = yield* Weighted.make
      picks(strategy, selection(nginx), 3)
      const [a, , c] = nginx.upstreams
      const ids = picks(strategy, selection(nginx, { candidates: [a!, c!] }), 600)
      expect(tally(ids)).toEqual({ a: 500, c: 100 })
      const back = picks(strategy, selection(nginx), 700)
      expect(tally(back)).toEqual({ a: 500, b: 100, c: 100 })
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("follows the new weights when the pool is reloaded with them", () =>
    Effect.gen(function* () {
      const strategy = yield* Weighted.make
      picks(strategy, selection(nginx), 7)
      const reloaded = poolOf("chat", upstreams({ a: 1, b: 1, c: 5 }), "weighted")
      expect(tally(picks(strategy, selection(reloaded), 7))).toEqual({ a: 1, b: 1, c: 5 })
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("keeps one schedule for two instances sharing a state store", () =>
    Effect.gen(function* () {
      const first = yield* Weighted.make
      const second = yield* Weighted.make
      const ids: Array<string> = []
      for (let i = 0; i < 7; i++) {
        ids.push(pick(i % 2 === 0 ? first : second, selection(nginx)))
      }
      expect(ids.join("")).toBe("aabacaa")
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("reduces large weights by their common divisor, keeping exact proportions", () =>
    Effect.gen(function* () {
      const strategy = yield* Weighted.make
      const pool = poolOf("chat", upstreams({ a: 30_000, b: 10_000 }), "weighted")
      expect(picks(strategy, selection(pool), 8).join("")).toBe("aabaaaba")
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("scales weights summing past 10,000 to a bounded schedule in the same proportions", () =>
    Effect.gen(function* () {
      const strategy = yield* Weighted.make
      const pool = poolOf("chat", upstreams({ a: 1_000_003, b: 500_001, c: 1 }), "weighted")
      const ids = picks(strategy, selection(pool), 20_000)
      const counts = tally(ids)
      expect(counts["c"]).toBeGreaterThanOrEqual(1)
      expect(Math.abs((counts["a"] ?? 0) / (counts["b"] ?? 1) - 2)).toBeLessThan(0.01)
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("never picks a zero-weight candidate while another has weight", () =>
    Effect.gen(function* () {
      const strategy = yield* Weighted.make
      const pool = poolOf("chat", upstreams({ a: 2, off: 0, b: 1 }), "weighted")
      expect(tally(picks(strategy, selection(pool), 30))).toEqual({ a: 20, b: 10 })
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("is provided as the Strategy service by its layer", () =>
    Effect.gen(function* () {
      const strategy = yield* Strategy.Strategy
      expect(strategy.name).toBe("weighted")
    }).pipe(Effect.provide(Weighted.layer), Effect.provide(StateStore.layerMemory))
  )
})
