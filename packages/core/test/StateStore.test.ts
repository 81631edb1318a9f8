import { describe, expect, it } from "@effect/vitest"
import { Array as Arr, Effect, Option, TestClock } from "effect"
import { StateStore } from "../src/index.js"

describe("StateStore.layerMemory", () => {
  it.effect("increments atomically under 100 concurrent fibers", () =>
    Effect.gen(function* () {
      const store = yield* StateStore.StateStore
      const seen = yield* Effect.forEach(
        Arr.range(1, 100),
        () => Effect.zipRight(Effect.yieldNow(), store.increment("rr:gpt")),
        { concurrency: "unbounded" }
      )
      // Every fiber saw a distinct value: no two read-modify-writes interleaved.
      expect([...seen].sort((a, b) => a - b)).toEqual(Arr.range(1, 100))
      expect(yield* store.increment("rr:gpt", 0)).toBe(100)
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("starts missing counters at 0 and adds any amount, including negative", () =>
    Effect.gen(function* () {
      const store = yield* StateStore.StateStore
      expect(yield* store.increment("inflight:a")).toBe(1)
      expect(yield* store.increment("inflight:a", 5)).toBe(6)
      expect(yield* store.increment("inflight:a", -6)).toBe(0)
      expect(yield* store.increment("inflight:b", 2)).toBe(2)
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("expires a value set with a ttl once the clock reaches it", () =>
    Effect.gen(function* () {
      const store = yield* StateStore.StateStore
      yield* store.set("sticky:session-1", "upstream-a", 1000)
      yield* store.set("forever", "x")
      expect(yield* store.get("sticky:session-1")).toEqual(Option.some("upstream-a"))
      yield* TestClock.adjust("999 millis")
      expect(yield* store.get("sticky:session-1")).toEqual(Option.some("upstream-a"))
      yield* TestClock.adjust("1 millis")
      expect(yield* store.get("sticky:session-1")).toEqual(Option.none())
      yield* TestClock.adjust("1 days")
      expect(yield* store.get("forever")).toEqual(Option.some("x"))
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("overwriting a value restarts its ttl, and remove deletes values and counters", () =>
    Effect.gen(function* () {
      const store = yield* StateStore.StateStore
      yield* store.set("k", "v1", 1000)
      yield* TestClock.adjust("800 millis")
      yield* store.set("k", "v2", 1000)
      yield* TestClock.adjust("800 millis")
      expect(yield* store.get("k")).toEqual(Option.some("v2"))
      yield* store.remove("k")
      expect(yield* store.get("k")).toEqual(Option.none())
      yield* store.increment("c", 4)
      yield* store.remove("c")
      expect(yield* store.increment("c")).toBe(1)
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("gives each layer build its own state", () =>
    Effect.gen(function* () {
      const first = yield* Effect.provide(StateStore.StateStore, StateStore.layerMemory)
      const second = yield* Effect.provide(StateStore.StateStore, StateStore.layerMemory)
      yield* first.increment("n", 3)
      expect(yield* second.increment("n")).toBe(1)
    })
  )
})
