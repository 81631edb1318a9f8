import { describe, expect, it } from "@effect/vitest"
import { Config, StateStore, Strategy, Topology } from "@sluice/core"
import { Array as Arr, Effect, Layer } from "effect"
import { Strategies } from "../src/index.js"
import { pick, picks, poolOf, selection, upstreams } from "./fixtures.js"

const provided = (pools: ReadonlyArray<Topology.Pool>, custom?: Record<string, Strategy.Service>) =>
  Strategies.layer(custom).pipe(Layer.provide(Topology.layerPools(pools)), Layer.provide(StateStore.layerMemory))

describe("Strategies", () => {
  const members = upstreams({ a: 5, b: 1, c: 1 })
  const rr = poolOf("rr", members, "round-robin")
  const weighted = poolOf("weighted", members, "weighted")
  const priority = poolOf("priority", members, "priority")
  const random = poolOf("random", members, "random")

  it("lists the built-in names", () => {
    expect(Strategies.names).toEqual([
      "round-robin",
      "weighted",
      "random",
      "priority",
      "least-connections",
      "latency",
      "p2c",
      "least-tokens",
      "cost",
      "headroom",
      "consistent-hash"
    ])
  })

  it.effect("serves each pool with the strategy its config names", () =>
    Effect.gen(function* () {
      const strategy = yield* Strategy.Strategy
      expect(picks(strategy, selection(rr), 4).join("")).toBe("abca")
      expect(picks(strategy, selection(weighted), 7).join("")).toBe("aabacaa")
      expect(picks(strategy, selection(priority), 3).join("")).toBe("aaa")
      expect(members.map((u) => u.id)).toContain(pick(strategy, selection(random)))
      expect([rr, weighted, priority, random].map((pool) => Strategy.nameOf(strategy, pool))).toEqual([
        "round-robin",
        "weighted",
        "priority",
        "random"
      ])
    }).pipe(Effect.provide(provided([rr, weighted, priority, random])))
  )

  it.effect("fails to build with a ConfigError naming the pool and the known strategies", () =>
    Effect.gen(function* () {
      const error = yield* Strategy.Strategy.pipe(
        Effect.provide(provided([rr, poolOf("fast", members, "fastest")])),
        Effect.flip
      )
      expect(error).toBeInstanceOf(Config.ConfigError)
      expect(error.source).toBe("config")
      expect(error.problems).toEqual([
        `pools.fast.strategy: unknown strategy 'fastest'; known: ${Strategies.names.join(", ")}`
      ])
    })
  )

  it.effect("serves pools naming a custom strategy with it", () =>
    Effect.gen(function* () {
      const strategy = yield* Strategy.Strategy
      const mine = poolOf("mine", members, "mine")
      expect(picks(strategy, selection(mine), 3).join("")).toBe("ccc")
      expect(Strategy.nameOf(strategy, mine)).toBe("mine")
      expect(picks(strategy, selection(rr), 2).join("")).toBe("ab")
    }).pipe(
      Effect.provide(
        provided([rr, poolOf("mine", members, "mine")], {
          mine: Strategy.make("mine", (s) => Arr.lastNonEmpty(s.candidates))
        })
      )
    )
  )

  it.effect("lists custom names among the known ones when a pool names an unknown strategy", () =>
    Effect.gen(function* () {
      const error = yield* Strategy.Strategy.pipe(
        Effect.provide(provided([poolOf("x", members, "nope")], { mine: Strategy.first })),
        Effect.flip
      )
      expect(error.problems).toEqual([
        `pools.x.strategy: unknown strategy 'nope'; known: ${Strategies.names.join(", ")}, mine`
      ])
    })
  )
})
