import { describe, expect, it } from "@effect/vitest"
import type { Strategy, Topology } from "@sluice/core"
import { Live } from "@sluice/core"
import { P2C } from "../src/index.js"
import { memoryLocal, pick, picks, poolOf, selection, tally, upstreams } from "./fixtures.js"

describe("P2C", () => {
  const strategy = P2C.service

  it("takes the lower of latency × (in flight + 1) / weight of the two it draws", () => {
    const local = memoryLocal()
    const pool = poolOf("chat", upstreams({ a: 1, b: 2 }), "p2c")
    Live.recordLatency(local, "answer", "a", 100, 0)
    Live.recordLatency(local, "answer", "b", 300, 0)
    // a: 100 × 1 / 1 = 100; b: 300 × 1 / 2 = 150.
    let choice = strategy.select(selection(pool, { local }))
    expect("scores" in choice && choice.scores).toEqual({ a: 100, b: 150 })
    expect(pick(strategy, selection(pool, { local }))).toBe("a")
    // Two in flight on `a`: 300 against b's 150.
    Live.started(local, "a", 10)
    Live.started(local, "a", 10)
    choice = strategy.select(selection(pool, { local }))
    expect("scores" in choice && choice.scores).toEqual({ a: 300, b: 150 })
    expect(pick(strategy, selection(pool, { local }))).toBe("b")
  })

  it("judges by the peak: one slow answer counts at once", () => {
    const local = memoryLocal()
    const pool = poolOf("chat", upstreams({ a: 1, b: 1 }), "p2c")
    for (let i = 0; i < 10; i++) Live.recordLatency(local, "answer", "a", 100, 0)
    Live.recordLatency(local, "answer", "a", 2000, 0)
    Live.recordLatency(local, "answer", "b", 500, 0)
    expect(pick(strategy, selection(pool, { local }))).toBe("b")
  })

  it("explores a candidate without a sample, then judges it by the other's latency while its probe is out", () => {
    const local = memoryLocal()
    const pool = poolOf("chat", upstreams({ known: 1, unknown: 1 }), "p2c")
    Live.recordLatency(local, "answer", "known", 100, 0)
    let choice = strategy.select(selection(pool, { local }))
    expect("scores" in choice && choice.scores).toEqual({ known: 100, unknown: 0 })
    Live.started(local, "unknown", 10)
    choice = strategy.select(selection(pool, { local }))
    expect("scores" in choice && choice.scores).toEqual({ known: 100, unknown: 200 })
  })

  it("reads two candidates per pick, however many there are", () => {
    const pool = poolOf(
      "big",
      upstreams(Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`u${i}`, 1]))),
      "p2c"
    )
    const base = selection(pool, { seed: 3 })
    const read = new Set<string>()
    const counting: Strategy.Selection = {
      ...base,
      live: {
        ...base.live,
        inFlight: (u: Topology.Upstream) => (read.add(u.id), 0),
        latency: (u: Topology.Upstream, kind: Live.LatencyKind) => (read.add(u.id), base.live.latency(u, kind))
      }
    }
    strategy.select(counting)
    expect(read.size).toBe(2)
  })

  it("spreads picks over the pool when every candidate looks the same", () => {
    const pool = poolOf("chat", upstreams({ a: 1, b: 1, c: 1 }), "p2c")
    const counts = tally(picks(strategy, selection(pool, { seed: 11 }), 3000))
    for (const id of ["a", "b", "c"]) expect(counts[id]).toBeGreaterThan(800)
  })
})
