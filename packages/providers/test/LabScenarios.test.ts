import { describe, expect, it } from "@effect/vitest"
import { Strategy } from "@sluice/core"
import { Effect, Fiber, Layer, TestClock } from "effect"
import * as LabScenarios from "../src/LabScenarios.js"

/** A strategy of the test's own (this package knows none by name): each pick takes the next candidate. */
const rotating = () => {
  let n = 0
  return Layer.succeed(
    Strategy.Strategy,
    Strategy.make("rotate", ({ candidates }) => candidates[n++ % candidates.length]!)
  )
}

const scenario = (id: string) => LabScenarios.scenarios.find((s) => s.id === id)!

/** A short run of scenario `id`: two simulated minutes. */
const run = (id: string, options: Partial<LabScenarios.RunOptions> = {}) =>
  LabScenarios.run(scenario(id), "rotate", { strategies: rotating(), minutes: 2, ...options })

describe("LabScenarios", () => {
  it.effect("runs a scenario reproducibly: the same seed gives the same row, another seed another", () =>
    Effect.gen(function* () {
      const first = yield* run("a", { seed: 3 })
      expect(yield* run("a", { seed: 3 })).toEqual(first)
      const other = yield* run("a", { seed: 4 })
      expect(other.latency).not.toEqual(first.latency)
      expect(other.offered).toBe(first.offered)
    })
  )

  it.effect("gives the same row on Effect's TestClock as in its own virtual time", () =>
    Effect.gen(function* () {
      // Half a minute of (b) hedged: a slow upstream, hedges racing, cancelled attempts.
      const options = { minutes: 0.5, hedge: { afterMs: 280, maxExtraPercent: 10 } }
      const virtual = yield* run("b", options)
      expect(virtual.hedgedShare).toBeGreaterThan(0)
      const fiber = yield* Effect.fork(run("b", { ...options, clock: "ambient" }))
      yield* TestClock.adjust("2 minutes")
      expect(yield* Fiber.join(fiber)).toEqual(virtual)
    })
  )

  it.effect("offers the scenario's load and accounts for every request: served, shed or failed", () =>
    Effect.gen(function* () {
      const row = yield* run("c")
      // 4 a second for 2 minutes.
      expect(row.offered).toBe(480)
      expect(row.served + row.shed + row.errors).toBe(row.offered)
      // The failing upstream's 500s were retried elsewhere: every stream served once.
      expect(row.served).toBe(480)
      expect(Object.values(row.servedBy).reduce((sum, n) => sum + n, 0)).toBe(row.served)
      expect(row.latency.p50).toBeGreaterThan(row.firstToken.p50)
      expect(row.latency.p99).toBeGreaterThanOrEqual(row.latency.p50)
      expect(row.cacheHitRate).toBeUndefined()
      expect(row.ofCapacity).toBeUndefined()
      expect(row.costUsd).toBeGreaterThan(0)
    })
  )

  it.effect(
    "(d) serves the upstreams' summed capacity without an upstream 429, and sheds the rest with its own 429",
    () =>
      Effect.gen(function* () {
        const row = yield* run("d", { minutes: 3 })
        expect(row.upstream429s).toBe(0)
        expect(row.errors).toBe(0)
        expect(row.served + row.shed).toBe(row.offered)
        expect(row.ofCapacity).toBeGreaterThanOrEqual(0.95)
        expect(row.ofCapacity).toBeLessThanOrEqual(1)
        expect(row.shed).toBeGreaterThan(row.offered / 2)
      })
  )

  it.effect("(b) hedged at the pool's p95: hedges stay within maxExtraPercent and the row says how it hedged", () =>
    Effect.gen(function* () {
      const row = yield* run("b", { hedge: LabScenarios.hedge })
      expect(row.hedge).toBe("p95 ≤10%")
      expect(row.hedgedShare).toBeGreaterThan(0)
      expect(row.hedgedShare).toBeLessThanOrEqual(0.1)
      expect(row.served).toBe(row.offered)
    })
  )

  it.effect(
    "(b) tells what came after its upstream slowed down, and the hedging table sets each hedged row against the unhedged one",
    () =>
      Effect.gen(function* () {
        const plain = yield* run("b")
        const hedged = yield* run("b", { hedge: LabScenarios.hedgeAfterMs })
        // A rotation over three upstreams: a third of the streams after the change came from the slow one.
        expect(plain.afterChange!.changedShare).toBeCloseTo(1 / 3, 2)
        expect(plain.afterChange!.firstToken.p99).toBeGreaterThan(2_000)
        // Hedges after 400 ms that won moved streams away from it, within the budget.
        expect(hedged.hedgesWon).toBeGreaterThan(0)
        expect(hedged.hedgesWon).toBeLessThanOrEqual(Math.round(hedged.hedgedShare * hedged.offered))
        expect(hedged.afterChange!.changedShare).toBeLessThan(plain.afterChange!.changedShare)
        expect(hedged.hedgedShare).toBeLessThanOrEqual(0.1)
        expect((yield* run("a")).afterChange).toBeUndefined()
        const cellsOf = (row: LabScenarios.Row) =>
          LabScenarios.hedgeTable([plain, row])
            .split("\n")
            .find((line) => line.startsWith("| rotate"))!
            .split("|")
            .map((cell) => cell.trim())
        const cells = cellsOf(hedged)
        expect(cells[2]).toBe("400ms ≤10%")
        expect(cells[3]).toBe(`${Math.round(plain.firstToken.p99)}`)
        expect(cells[6]).toBe(`${Math.round(plain.afterChange!.firstToken.p99)}`)
        // The slow upstream lost its races and was ejected: its third of the streams went elsewhere.
        expect(cells.slice(-3, -1)).toEqual(["met", "met"])
        // Never ejected, a third of the streams stays slow beyond what 10% of hedges can rescue.
        const kept = yield* run("b", { hedge: { ...LabScenarios.hedgeAfterMs, ejectAfterLosses: 0 } })
        expect(cellsOf(kept).slice(-3, -1)).toEqual(["not met", "not met"])
      })
  )

  it.effect("(e) counts prompt-cache hits over lookups", () =>
    Effect.gen(function* () {
      const row = yield* run("e")
      expect(row.cacheHitRate).toBeGreaterThan(0)
      expect(row.cacheHitRate).toBeLessThan(1)
    })
  )

  it.effect(
    "a matrix runs every strategy in every scenario, hedged in (a) and (b), and prints a table per scenario",
    () =>
      Effect.gen(function* () {
        const rows = yield* LabScenarios.matrix({
          strategies: ["rotate"],
          layer: rotating(),
          minutes: 1,
          scenarios: LabScenarios.scenarios.filter((s) => s.id === "a" || s.id === "c")
        })
        expect(rows.map((r) => [r.scenario, r.strategy, r.hedge])).toEqual([
          ["a", "rotate", undefined],
          ["a", "rotate", "p95 ≤10%"],
          ["c", "rotate", undefined]
        ])
        const table = LabScenarios.table(rows)
        expect(table).toContain("(a) upstreams with different latency distributions: 3 upstreams, 240 requests")
        expect(table).toContain("(c) one upstream fails 30% of requests")
        expect(table.split("\n").filter((line) => line.startsWith("| rotate"))).toHaveLength(3)
      })
  )
})
