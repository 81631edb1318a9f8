import { describe, expect, it } from "@effect/vitest"
import { Live, Strategy } from "@sluice/core"
import { Effect } from "effect"
import { ConsistentHash } from "../src/index.js"
import { memoryLocal, pick, poolOf, selection, upstreams } from "./fixtures.js"

describe("ConsistentHash", () => {
  const pool = poolOf("chat", upstreams({ a: 1, b: 1, c: 1 }), "consistent-hash")

  it.effect("sends every request with the same prompt prefix to the same upstream, and different prefixes apart", () =>
    Effect.gen(function* () {
      const strategy = yield* ConsistentHash.make
      const homes = new Set<string>()
      for (let prefix = 0; prefix < 30; prefix++) {
        const home = pick(strategy, selection(pool, { prefixHash: Strategy.hash(`system prompt ${prefix}`) }))
        for (let i = 0; i < 5; i++)
          expect(pick(strategy, selection(pool, { prefixHash: Strategy.hash(`system prompt ${prefix}`) }))).toBe(home)
        homes.add(home)
      }
      expect([...homes].sort()).toEqual(["a", "b", "c"])
    })
  )

  it.effect("keys on the session key before the prompt prefix", () =>
    Effect.gen(function* () {
      const strategy = yield* ConsistentHash.make
      const prefixHash = Strategy.hash("shared system prompt")
      const homes = new Set<string>()
      for (let s = 0; s < 20; s++)
        homes.add(pick(strategy, selection(pool, { prefixHash, sessionKey: `session-${s}` })))
      expect(homes.size).toBe(3)
    })
  )

  it.effect("spills a key to the next upstream once its home carries more than (1 + ε) × the average", () =>
    Effect.gen(function* () {
      const strategy = yield* ConsistentHash.make
      const local = memoryLocal()
      const prefixHash = Strategy.hash("hot prompt")
      const home = pick(strategy, selection(pool, { local, prefixHash }))
      // Nine requests of one hot prefix: the bound is ceil(1.25 × (in flight + 1) / 3).
      const served: Array<string> = []
      for (let i = 0; i < 9; i++) {
        const id = pick(strategy, selection(pool, { local, prefixHash }))
        served.push(id)
        Live.started(local, id, 0)
      }
      expect(served[0]).toBe(home)
      expect(served.filter((id) => id === home).length).toBe(4)
      const loads = pool.upstreams.map((u) => selection(pool, { local }).live.inFlight(u))
      expect(Math.max(...loads)).toBeLessThanOrEqual(Math.ceil((1.25 * 9) / 3))
    })
  )

  it.effect("moves the keys of an upstream left out only while it is out", () =>
    Effect.gen(function* () {
      const strategy = yield* ConsistentHash.make
      const keys = Array.from({ length: 300 }, (_, i) => Strategy.hash(`prompt ${i}`))
      const before = keys.map((prefixHash) => pick(strategy, selection(pool, { prefixHash })))
      const [a, , c] = pool.upstreams
      const during = keys.map((prefixHash) => pick(strategy, selection(pool, { prefixHash, candidates: [a!, c!] })))
      keys.forEach((_, i) => {
        if (before[i] !== "b") expect(during[i]).toBe(before[i])
        else expect(during[i]).not.toBe("b")
      })
      const after = keys.map((prefixHash) => pick(strategy, selection(pool, { prefixHash })))
      expect(after).toEqual(before)
    })
  )

  it.effect("sends a request without a key (embeddings) to the least loaded candidate", () =>
    Effect.gen(function* () {
      const strategy = yield* ConsistentHash.make
      const local = memoryLocal()
      Live.started(local, "a", 0)
      Live.started(local, "c", 0)
      expect(pick(strategy, selection(pool, { local }))).toBe("b")
    })
  )
})
