import { describe, expect, it } from "@effect/vitest"
import { Live, Strategy } from "@sluice/core"
import { LeastConnections } from "../src/index.js"
import { memoryLocal, pick, picks, poolOf, selection, tally, upstreams } from "./fixtures.js"

describe("LeastConnections", () => {
  const strategy = LeastConnections.service

  it("takes the candidate with the fewest requests in flight", () => {
    const local = memoryLocal()
    const pool = poolOf("chat", upstreams({ a: 1, b: 1, c: 1 }), "least-connections")
    Live.started(local, "a", 10)
    Live.started(local, "c", 10)
    expect(pick(strategy, selection(pool, { local }))).toBe("b")
  })

  it("counts in flight relative to weight: an idle pool prefers its heavier upstream", () => {
    const local = memoryLocal()
    const pool = poolOf("chat", upstreams({ light: 1, heavy: 3 }), "least-connections")
    expect(pick(strategy, selection(pool, { local }))).toBe("heavy")
    // Two in flight on `heavy` weigh (2 + 1) / 3 = 1, as the idle light one's (0 + 1) / 1.
    Live.started(local, "heavy", 10)
    Live.started(local, "heavy", 10)
    const choice = strategy.select(selection(pool, { local }))
    expect("scores" in choice && choice.scores).toEqual({ light: 1, heavy: 1 })
  })

  it("breaks ties at random, not by config order", () => {
    const pool = poolOf("chat", upstreams({ a: 1, b: 1, c: 1, d: 1 }), "least-connections")
    const counts = tally(picks(strategy, selection(pool, { seed: 7 }), 4000))
    for (const id of ["a", "b", "c", "d"]) expect(counts[id]).toBeGreaterThan(850)
  })

  it("reads no load of its own and asks the pipeline to count attempts", () => {
    expect(strategy.live).not.toBe(false)
    expect(Strategy.chosen(strategy.select(selection(poolOf("one", upstreams({ only: 1 })))))).toMatchObject({
      id: "only"
    })
  })
})
