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

  it.effect("modify returns f's result, stores f's next state for the next call, and undefined removes the key", () =>
    Effect.gen(function* () {
      const store = yield* StateStore.StateStore
      const seen: Array<{ count: number } | undefined> = []
      const bump = (current: { count: number } | undefined) => {
        seen.push(current)
        const next = { count: (current?.count ?? 0) + 1 }
        return [`now ${next.count}`, next] as const
      }
      expect(yield* store.modify("cb:a", bump)).toBe("now 1")
      expect(yield* store.modify("cb:a", bump)).toBe("now 2")
      // Keys are independent.
      expect(yield* store.modify("cb:b", bump)).toBe("now 1")
      expect(seen).toEqual([undefined, { count: 1 }, undefined])
      // A read: the current state handed back unchanged stays stored.
      expect(yield* store.modify<{ count: number }, number>("cb:a", (c) => [c?.count ?? -1, c])).toBe(2)
      expect(yield* store.modify<{ count: number }, number>("cb:a", (c) => [c?.count ?? -1, c])).toBe(2)
      // Undefined as the next state removes the key: the next call starts from nothing.
      expect(yield* store.modify<{ count: number }, string>("cb:a", () => ["dropped", undefined])).toBe("dropped")
      expect(yield* store.modify<{ count: number }, boolean>("cb:a", (c) => [c === undefined, c])).toBe(true)
      expect(yield* store.modify<{ count: number }, number>("cb:b", (c) => [c?.count ?? -1, c])).toBe(1)
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("modify is atomic under 100 concurrent fibers", () =>
    Effect.gen(function* () {
      const store = yield* StateStore.StateStore
      const seen = yield* Effect.forEach(
        Arr.range(1, 100),
        () =>
          Effect.zipRight(
            Effect.yieldNow(),
            store.modify<ReadonlyArray<number>, number>("log", (current = []) => [
              current.length + 1,
              [...current, current.length + 1]
            ])
          ),
        { concurrency: "unbounded" }
      )
      expect([...seen].sort((a, b) => a - b)).toEqual(Arr.range(1, 100))
      expect(yield* store.modify<ReadonlyArray<number>, number>("log", (c) => [c?.length ?? 0, c])).toBe(100)
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("remove also forgets state stored with modify", () =>
    Effect.gen(function* () {
      const store = yield* StateStore.StateStore
      yield* store.modify("rl:a", () => [undefined, { window: [1] }])
      yield* store.remove("rl:a")
      expect(yield* store.modify<unknown, unknown>("rl:a", (c) => [c, c])).toBeUndefined()
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
