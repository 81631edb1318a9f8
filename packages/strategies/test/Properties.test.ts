/**
 * Properties every strategy keeps, checked with fast-check over generated pools, candidate sets and
 * live states. Runs are seeded, so they are the same on every machine (no flakiness), and the
 * tolerances below are stated with each property.
 */
import { describe, expect, it } from "@effect/vitest"
import type { Topology } from "@sluice/core"
import { Live, StateStore, Strategy } from "@sluice/core"
import { Effect } from "effect"
import fc from "fast-check"
import { ConsistentHash, Strategies } from "../src/index.js"
import { memoryLocal, selection, upstreams } from "./fixtures.js"
import { Topology as T } from "@sluice/core"

/** Every built-in strategy, built over one memory store (the one its selections' live view reads). */
const built = (local: StateStore.Local) =>
  Object.fromEntries(
    Object.entries(Strategies.builtins).map(([name, make]) => [
      name,
      Effect.runSync(Effect.provideService(make, StateStore.StateStore, { local } as StateStore.Service))
    ])
  )

/** A generated upstream: weight (0 drawn too), price, quality, limits and live state. */
const upstreamArb = fc.record({
  weight: fc.integer({ min: 0, max: 5 }),
  input: fc.double({ min: 0, max: 20, noNaN: true }),
  output: fc.double({ min: 0, max: 60, noNaN: true }),
  quality: fc.double({ min: 0, max: 1, noNaN: true }),
  rpm: fc.option(fc.integer({ min: 1, max: 50 }), { nil: undefined }),
  inFlight: fc.integer({ min: 0, max: 6 }),
  latencyMs: fc.option(fc.integer({ min: 1, max: 5000 }), { nil: undefined }),
  latencyAgeMs: fc.integer({ min: 0, max: 60_000 }),
  outputTokens: fc.option(fc.integer({ min: 1, max: 2000 }), { nil: undefined }),
  candidate: fc.boolean()
})

const scenarioArb = fc.record({
  upstreams: fc.array(upstreamArb, { minLength: 1, maxLength: 12 }),
  promptTokens: fc.integer({ min: 0, max: 8000 }),
  stream: fc.boolean(),
  sessionKey: fc.option(fc.string({ maxLength: 12 }), { nil: undefined }),
  prefixHash: fc.option(fc.integer({ min: 0, max: 0xffffffff }), { nil: undefined }),
  costWeights: fc.option(
    fc.record({
      cost: fc.double({ min: 0.01, max: 1, noNaN: true }),
      latency: fc.double({ min: 0, max: 1, noNaN: true })
    }),
    { nil: undefined }
  ),
  minQuality: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: undefined }),
  epsilon: fc.double({ min: 0.01, max: 3, noNaN: true }),
  seed: fc.integer()
})

const NOW = 100_000

describe("every strategy", () => {
  it("chooses only among the candidates it is given, whatever the pool, weights and live state", () => {
    const wrong: Array<string> = []
    fc.assert(
      fc.property(scenarioArb, (scenario) => {
        const local = memoryLocal()
        const members = scenario.upstreams.map((u, i) =>
          T.upstream({
            id: `u${i}`,
            provider: "simulated",
            baseUrl: `http://127.0.0.1/u${i}`,
            weight: u.weight,
            pricing: { inputPerMillion: u.input, outputPerMillion: u.output },
            quality: u.quality,
            limits: u.rpm === undefined ? {} : { rpm: u.rpm }
          })
        )
        scenario.upstreams.forEach((u, i) => {
          for (let k = 0; k < u.inFlight; k++) Live.started(local, `u${i}`, 100)
          if (u.latencyMs !== undefined)
            for (const kind of ["answer", "first-content"] as const)
              Live.recordLatency(local, kind, `u${i}`, u.latencyMs, NOW - u.latencyAgeMs)
          if (u.outputTokens !== undefined) {
            Live.started(local, `u${i}`, 0)
            Live.finished(
              local,
              `u${i}`,
              0,
              { _tag: "Success", latencyMs: 1, inputTokens: 1, outputTokens: u.outputTokens },
              NOW
            )
          }
        })
        const chosenOnes = members.filter((_, i) => scenario.upstreams[i]!.candidate)
        const candidates = chosenOnes.length > 0 ? chosenOnes : [members[0]!]
        const pool = T.pool({
          id: "p",
          models: ["m"],
          upstreams: members,
          cost: { weights: scenario.costWeights, minQuality: scenario.minQuality },
          consistentHash: { epsilon: scenario.epsilon }
        })
        for (const [name, strategy] of Object.entries(built(local))) {
          for (let draw = 0; draw < 3; draw++) {
            const choice = strategy.select(
              selection(pool, {
                candidates,
                local,
                now: NOW,
                seed: scenario.seed + draw,
                promptTokens: scenario.promptTokens,
                stream: scenario.stream,
                ...(scenario.sessionKey === undefined ? {} : { sessionKey: scenario.sessionKey }),
                ...(scenario.prefixHash === undefined ? {} : { prefixHash: scenario.prefixHash })
              })
            )
            const upstream = Strategy.chosen(choice)
            if (!candidates.includes(upstream)) wrong.push(`${name} chose ${upstream.id}, not a candidate`)
            if ("scores" in choice && choice.scores[upstream.id] === undefined)
              wrong.push(`${name} gave no score for its choice ${upstream.id}`)
          }
        }
      }),
      { seed: 8, numRuns: 150 }
    )
    expect(wrong).toEqual([])
  })
})

/**
 * 10,000 picks among candidates of weights 1 to 5; the load-reading strategies see every pick stay
 * in flight (nothing finishes), as under saturation, where their load per weight evens out. Stated
 * tolerance: each candidate's share of the picks is within 1 point (0.01) of its share of the
 * weights, 2 points for `random` (10,000 independent draws: about 4 standard deviations).
 */
describe("the weighted strategies over 10,000 picks", () => {
  const tolerance: Record<string, number> = {
    weighted: 0.01,
    random: 0.02,
    "least-connections": 0.01,
    "least-tokens": 0.01,
    p2c: 0.01
  }
  for (const name of Object.keys(tolerance)) {
    it(`${name}: every share within ${tolerance[name]! * 100} point(s) of its share of the weights`, () => {
      fc.assert(
        fc.property(
          fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 2, maxLength: 6 }),
          fc.integer(),
          (weights, seed) => {
            const local = memoryLocal()
            const strategy = built(local)[name]!
            const pool = T.pool({
              id: `w${seed}`,
              models: ["m"],
              upstreams: upstreams(Object.fromEntries(weights.map((w, i) => [`u${i}`, w])))
            })
            const select = selection(pool, { local, seed, promptTokens: 100, reservedOutputTokens: 100 })
            const counts = new Map<string, number>()
            for (let i = 0; i < 10_000; i++) {
              const id = Strategy.chosen(strategy.select(select)).id
              counts.set(id, (counts.get(id) ?? 0) + 1)
              Live.started(local, id, 200)
            }
            const total = weights.reduce((a, b) => a + b, 0)
            weights.forEach((w, i) => {
              expect(Math.abs((counts.get(`u${i}`) ?? 0) / 10_000 - w / total)).toBeLessThanOrEqual(tolerance[name]!)
            })
          }
        ),
        { seed: 21, numRuns: 8 }
      )
    })
  }
})

/** `n` upstreams of weight 1, named `u0`... */
const evenly = (n: number): Array<Topology.Upstream> =>
  upstreams(Object.fromEntries(Array.from({ length: n }, (_, i) => [`u${i}`, 1])))

describe("consistent hashing with bounded loads", () => {
  it("moves about 1/(n + 1) of the keys when an upstream joins n, all of them to the newcomer", () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 12 }), fc.integer(), (n, seed) => {
        const before = T.pool({ id: "ring", models: ["m"], upstreams: evenly(n), strategy: "consistent-hash" })
        const after = T.pool({ ...before, upstreams: evenly(n + 1) })
        const strategy = Effect.runSync(ConsistentHash.make)
        let moved = 0
        const elsewhere = new Set<string>()
        const keys = 4000
        for (let k = 0; k < keys; k++) {
          const prefixHash = Strategy.hash(`${seed}:${k}`)
          const from = Strategy.chosen(strategy.select(selection(before, { prefixHash }))).id
          const to = Strategy.chosen(strategy.select(selection(after, { prefixHash }))).id
          if (from !== to) {
            moved++
            if (to !== `u${n}`) elsewhere.add(`${from} -> ${to}`)
          }
        }
        expect([...elsewhere]).toEqual([])
        // Stated tolerance: within a third of the ideal share, plus 1 point (160 points per upstream).
        expect(Math.abs(moved / keys - 1 / (n + 1))).toBeLessThanOrEqual(1 / (n + 1) / 3 + 0.01)
      }),
      { seed: 5, numRuns: 20 }
    )
  })

  it("never loads an upstream past ceil((1 + ε) × average), whatever the keys and finishes", () => {
    const op = fc.oneof(
      fc.record({ pick: fc.integer({ min: 0, max: 5 }), weightless: fc.constant(false) }),
      fc.record({ finish: fc.integer({ min: 0, max: 1000 }) })
    )
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 2, maxLength: 8 }),
        fc.double({ min: 0.05, max: 2, noNaN: true }),
        fc.array(op, { minLength: 1, maxLength: 300 }),
        (weights, epsilon, ops) => {
          const local = memoryLocal()
          const members = upstreams(Object.fromEntries(weights.map((w, i) => [`u${i}`, w])))
          const pool = T.pool({ id: "bounded", models: ["m"], upstreams: members, consistentHash: { epsilon } })
          const strategy = Effect.runSync(ConsistentHash.make)
          const totalWeight = weights.reduce((a, b) => a + b, 0)
          const inFlight: Array<string> = []
          for (const step of ops) {
            if ("finish" in step) {
              const id = inFlight.splice(step.finish % Math.max(1, inFlight.length), 1)[0]
              if (id !== undefined) Live.finished(local, id, 0, { _tag: "Interrupted", latencyMs: 0 }, 0)
              continue
            }
            const before = inFlight.length
            const chosen = Strategy.chosen(
              strategy.select(selection(pool, { local, prefixHash: Strategy.hash(`hot-${step.pick}`) }))
            )
            Live.started(local, chosen.id, 0)
            inFlight.push(chosen.id)
            const load = inFlight.filter((id) => id === chosen.id).length
            expect(load).toBeLessThanOrEqual(Math.ceil(((1 + epsilon) * (before + 1) * chosen.weight) / totalWeight))
          }
        }
      ),
      { seed: 13, numRuns: 100 }
    )
  })
})
