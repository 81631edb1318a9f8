import { describe, expect, it } from "@effect/vitest"
import { LabScenarios } from "@sluice/providers"
import { ConsistentHash, Strategies } from "@sluice/strategies"
import { Effect } from "effect"
import { strategyTable } from "../lab.js"

/** Scenario `id` with the named strategy, `minutes` long, in the lab's virtual time. */
const run = (id: string, strategy: string, minutes: number, hedge?: LabScenarios.RunOptions["hedge"]) =>
  LabScenarios.run(
    LabScenarios.scenarios.find((s) => s.id === id)!,
    strategy,
    {
      strategies: Strategies.layer(),
      minutes,
      ...(hedge === undefined ? {} : { hedge })
    }
  )

// The bars, on shorter runs than `npm run bench:strategies` makes (the same scenarios). Each
// run is CPU-bound simulation in virtual time, a second or two on an idle machine: the timeout leaves
// room for a busy one (a CI runner sharing its cores), where 5 s was seen to run out.
describe("the lab's bars for the strategies", { timeout: 60_000 }, () => {
  it.effect(
    "(b) one upstream ten times slower from halfway: p2c and latency keep p99 at least 2x below round robin's",
    () =>
      Effect.gen(function* () {
        const roundRobin = yield* run("b", "round-robin", 6)
        for (const strategy of ["p2c", "latency"]) {
          const row = yield* run("b", strategy, 6)
          expect(row.latency.p99 * 2).toBeLessThanOrEqual(roundRobin.latency.p99)
          expect(row.firstToken.p99 * 2).toBeLessThanOrEqual(roundRobin.firstToken.p99)
          expect(row.errors).toBe(0)
        }
      })
  )

  it.effect(
    "(d) ten times the summed quota: headroom and least-tokens serve at least 98% of it, with no upstream 429",
    () =>
      Effect.gen(function* () {
        for (const strategy of ["headroom", "least-tokens"]) {
          const row = yield* run("d", strategy, 4)
          expect(row.ofCapacity).toBeGreaterThanOrEqual(0.98)
          expect(row.upstream429s).toBe(0)
          expect(row.errors).toBe(0)
        }
      })
  )

  it.effect(
    "(e) sessions with long prefixes: consistent-hash hits the prompt caches at least 90% of the time, no upstream past (1 + ε) x the average load",
    () =>
      Effect.gen(function* () {
        const row = yield* run("e", "consistent-hash", 10)
        expect(row.cacheHitRate).toBeGreaterThanOrEqual(0.9)
        expect(row.maxOverAverage).toBeLessThanOrEqual(1 + ConsistentHash.defaultEpsilon)
        // Round robin spreads every session over every cache, which holds two thirds of them.
        expect((yield* run("e", "round-robin", 10)).cacheHitRate).toBeLessThan(0.7)
      })
  )

  it.effect(
    "(a) a long tail: hedging at the p95 cuts round robin's time-to-first-token p99 by 40% or more, with at most 10% extra requests",
    () =>
      Effect.gen(function* () {
        const plain = yield* run("a", "round-robin", 6)
        const hedged = yield* run("a", "round-robin", 6, LabScenarios.hedge)
        expect(hedged.firstToken.p99).toBeLessThanOrEqual(plain.firstToken.p99 * 0.6)
        expect(hedged.hedgedShare).toBeLessThanOrEqual(0.1)
      })
  )

  it.effect(
    "(b) hedged too, p2c and latency keep time-to-first-token p99 at least 2x below round robin's, with at most 10% extra requests",
    () =>
      Effect.gen(function* () {
        const roundRobin = yield* run("b", "round-robin", 6)
        for (const strategy of ["p2c", "latency"]) {
          const hedged = yield* run("b", strategy, 6, LabScenarios.hedge)
          expect(hedged.firstToken.p99 * 2).toBeLessThanOrEqual(roundRobin.firstToken.p99)
          expect(hedged.hedgedShare).toBeLessThanOrEqual(0.1)
        }
      })
  )

  it.effect(
    "(b) hedged, p2c cuts the time-to-first-token p99 of the requests after the slowdown by 40% or more, with at most 10% extra requests",
    () =>
      Effect.gen(function* () {
        // Its probes of the slowed upstream are the tail after the slowdown; a hedge rescues them.
        const plain = yield* run("b", "p2c", 6)
        for (const hedge of [LabScenarios.hedge, LabScenarios.hedgeAfterMs]) {
          const hedged = yield* run("b", "p2c", 6, hedge)
          expect(hedged.afterChange!.firstToken.p99).toBeLessThanOrEqual(plain.afterChange!.firstToken.p99 * 0.6)
          expect(hedged.hedgedShare).toBeLessThanOrEqual(0.1)
          expect(hedged.afterChange!.changedShare).toBeLessThan(plain.afterChange!.changedShare)
        }
      }),
    // Three runs of six simulated minutes: seconds of work, more on a busy machine.
    60_000
  )

  it.effect(
    "(b) hedged, latency-blind round robin cuts its whole-run time-to-first-token p99 by 40% or more with at most 10% extra requests: the slowed upstream, losing its races, is ejected",
    () =>
      Effect.gen(function* () {
        // Unhedged, round robin sends the slowed upstream a third of the second half: p99 ~2,900 ms.
        // Hedges alone (at most 10%) could not rescue a sixth of the run; ejection stops the sixth.
        const plain = yield* run("b", "round-robin", 6)
        for (const hedge of [LabScenarios.hedge, LabScenarios.hedgeAfterMs]) {
          const hedged = yield* run("b", "round-robin", 6, hedge)
          expect(hedged.firstToken.p99).toBeLessThanOrEqual(plain.firstToken.p99 * 0.6)
          expect(hedged.hedgedShare).toBeLessThanOrEqual(0.1)
        }
      }),
    60_000
  )

  it.effect(
    "(b) hedged, p2c's whole-run time-to-first-token p99 is no worse than unhedged: the streams hedges rescue do not hide the slowed upstream from it",
    () =>
      Effect.gen(function* () {
        // A hedge only ever brings a stream's first content sooner. Yet were a rescued attempt judged
        // by the time it waited alone (about 650 ms, against the slowed upstream's 2,000 to 3,000),
        // p2c would keep sending it first attempts, more than 1% of the run, each needing a hedge.
        const plain = yield* run("b", "p2c", 10)
        for (const hedge of [LabScenarios.hedge, LabScenarios.hedgeAfterMs]) {
          const hedged = yield* run("b", "p2c", 10, hedge)
          expect(hedged.firstToken.p99).toBeLessThanOrEqual(plain.firstToken.p99)
          expect(hedged.firstToken.p999).toBeLessThan(plain.firstToken.p999)
        }
      }),
    60_000
  )

  it.effect(
    "npm run lab's table has a row for every strategy the strategies package registers, in every scenario",
    () =>
      Effect.gen(function* () {
        const table = yield* strategyTable(0.25)
        for (const id of ["a", "b", "c", "d", "e"]) expect(table).toContain(`(${id}) `)
        const firstCells = table.split("\n").map((line) => line.split("|")[1]?.trim() ?? "")
        for (const name of Strategies.names) {
          // Five scenarios, hedged in (a) at the p95 and in (b) at the p95 and after 400 ms; and in (b)'s
          // hedging table, once per hedge.
          expect(firstCells.filter((cell) => cell === name)).toHaveLength(7)
          expect(firstCells.filter((cell) => cell.startsWith(`${name} +hedge`))).toHaveLength(3)
        }
      })
  )
})
