import { describe, expect, it } from "@effect/vitest"
import { StateStore, Strategy } from "@sluice/core"
import { Effect } from "effect"
import { RoundRobin } from "../src/index.js"
import { pick, picks, poolOf, selection, upstreams } from "./fixtures.js"

describe("RoundRobin", () => {
  const pool = poolOf("chat", upstreams({ a: 1, b: 1, c: 1 }))

  it.effect("cycles through the candidates in config order", () =>
    Effect.gen(function* () {
      const strategy = yield* RoundRobin.make
      expect(strategy.name).toBe("round-robin")
      expect(picks(strategy, selection(pool), 7)).toEqual(["a", "b", "c", "a", "b", "c", "a"])
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("keeps one rotation for two instances sharing a state store", () =>
    Effect.gen(function* () {
      const first = yield* RoundRobin.make
      const second = yield* RoundRobin.make
      const ids: Array<string> = []
      for (let i = 0; i < 6; i++) {
        ids.push(pick(i % 2 === 0 ? first : second, selection(pool)))
      }
      expect(ids).toEqual(["a", "b", "c", "a", "b", "c"])
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("keeps a separate rotation per pool", () =>
    Effect.gen(function* () {
      const strategy = yield* RoundRobin.make
      const other = poolOf("embed", upstreams({ x: 1, y: 1 }))
      expect(pick(strategy, selection(pool))).toBe("a")
      expect(pick(strategy, selection(other))).toBe("x")
      expect(pick(strategy, selection(pool))).toBe("b")
      expect(pick(strategy, selection(other))).toBe("y")
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("only picks current candidates when some are excluded", () =>
    Effect.gen(function* () {
      const strategy = yield* RoundRobin.make
      const [a, , c] = pool.upstreams
      const ids = picks(strategy, selection(pool, { candidates: [a!, c!] }), 6)
      expect(ids).toEqual(["a", "c", "a", "c", "a", "c"])
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("is provided as the Strategy service by its layer", () =>
    Effect.gen(function* () {
      const strategy = yield* Strategy.Strategy
      expect(strategy.name).toBe("round-robin")
    }).pipe(Effect.provide(RoundRobin.layer), Effect.provide(StateStore.layerMemory))
  )
})
