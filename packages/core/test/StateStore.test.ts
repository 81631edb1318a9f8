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

  it.effect("local.modify runs f synchronously on this instance's state, shared with the effectful modify", () =>
    Effect.gen(function* () {
      const { local, modify } = yield* StateStore.StateStore
      const bump = (current: { count: number } | undefined) => {
        const next = { count: (current?.count ?? 0) + 1 }
        return [next.count, next] as const
      }
      expect(local.modify("cb:a", bump)).toBe(1)
      expect(local.modify("cb:a", bump)).toBe(2)
      // One state under both levels: the memory store is one process.
      expect(yield* modify("cb:a", bump)).toBe(3)
      expect(local.modify("cb:a", bump)).toBe(4)
      // A read hands the current object back: it stays stored, unchanged.
      const before = local.modify<{ count: number }, { count: number } | undefined>("cb:a", (c) => [c, c])
      expect(local.modify<{ count: number }, { count: number } | undefined>("cb:a", (c) => [c, c])).toBe(before)
      expect(before).toEqual({ count: 4 })
      // Undefined as the next state removes the key.
      expect(local.modify<{ count: number }, string>("cb:a", () => ["dropped", undefined])).toBe("dropped")
      expect(local.modify<{ count: number }, boolean>("cb:a", (c) => [c === undefined, c])).toBe(true)
      expect(yield* modify<{ count: number }, boolean>("cb:a", (c) => [c === undefined, c])).toBe(true)
      // Removing a key that was never there stores nothing either.
      expect(local.modify<{ count: number }, string>("cb:never", () => ["none", undefined])).toBe("none")
      expect(local.modify<{ count: number }, boolean>("cb:never", (c) => [c === undefined, c])).toBe(true)
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("local.set expires a value ttlMs after the now it was set at, read with local.get at a given now", () =>
    Effect.gen(function* () {
      const store = yield* StateStore.StateStore
      const { local } = store
      local.set("sticky:s1", "upstream-a", 5_000, 1_000)
      local.set("forever", "x", 5_000)
      expect(local.get("sticky:s1", 5_000)).toBe("upstream-a")
      expect(local.get("sticky:s1", 5_999)).toBe("upstream-a")
      expect(local.get("sticky:s1", 6_000)).toBeUndefined()
      expect(local.get("forever", Number.MAX_SAFE_INTEGER)).toBe("x")
      expect(local.get("missing", 0)).toBeUndefined()
      // Overwriting restarts the ttl from the new now.
      local.set("k", "v1", 0, 1_000)
      local.set("k", "v2", 800, 1_000)
      expect(local.get("k", 1_600)).toBe("v2")
      expect(local.get("k", 1_800)).toBeUndefined()
      // The effectful level reads the same values, at the Clock's time.
      local.set("shared", "y", 0, 1_000)
      expect(yield* store.get("shared")).toEqual(Option.some("y"))
      yield* store.set("from-effect", "z", 500)
      expect(local.get("from-effect", 499)).toBe("z")
      expect(local.get("from-effect", 500)).toBeUndefined()
      yield* TestClock.adjust("1 second")
      expect(yield* store.get("shared")).toEqual(Option.none())
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("lease grants up to what is left of the limit, fewer near its end and 0 once it is spent", () =>
    Effect.gen(function* () {
      const { lease } = yield* StateStore.StateStore
      expect(yield* lease("tpm:a", 40, 100, 60_000)).toEqual({ units: 40, expiresAt: 60_000 })
      yield* TestClock.adjust("1 second")
      expect(yield* lease("tpm:a", 40, 100, 60_000)).toEqual({ units: 40, expiresAt: 61_000 })
      expect(yield* lease("tpm:a", 40, 100, 60_000)).toEqual({ units: 20, expiresAt: 61_000 })
      expect((yield* lease("tpm:a", 40, 100, 60_000)).units).toBe(0)
      expect((yield* lease("tpm:a", 1, 100, 60_000)).units).toBe(0)
      // Budgets are independent by key.
      expect((yield* lease("tpm:b", 500, 100, 60_000)).units).toBe(100)
      expect((yield* lease("tpm:b", 1, 100, 60_000)).units).toBe(0)
    }).pipe(Effect.provide(StateStore.layerMemory))
  )

  it.effect("a lease's units count against the budget until windowMs after the grant", () =>
    Effect.gen(function* () {
      const { lease } = yield* StateStore.StateStore
      expect((yield* lease("rpm:a", 6, 10, 60_000)).units).toBe(6) // t = 0, until 60 s
      yield* TestClock.adjust("30 seconds")
      expect((yield* lease("rpm:a", 6, 10, 60_000)).units).toBe(4) // t = 30 s, until 90 s
      expect((yield* lease("rpm:a", 6, 10, 60_000)).units).toBe(0)
      yield* TestClock.adjust("29999 millis")
      expect((yield* lease("rpm:a", 6, 10, 60_000)).units).toBe(0)
      yield* TestClock.adjust("1 millis") // t = 60 s: the first grant expired, the second still counts
      expect(yield* lease("rpm:a", 10, 10, 60_000)).toEqual({ units: 6, expiresAt: 120_000 })
      yield* TestClock.adjust("60 seconds") // t = 120 s: every grant expired
      expect((yield* lease("rpm:a", 20, 10, 60_000)).units).toBe(10)
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
