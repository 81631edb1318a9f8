/**
 * What one decision costs each strategy, in process: `npm run bench:decision` (or
 * `node --import tsx bench/strategies-decision.ts` after `npm run build`).
 *
 * For pools of 10, 100, 1,000 and 10,000 candidates, every built-in strategy picks among all of them
 * over a memory state store holding a live state like a busy gateway's: some requests in flight on
 * every upstream, latencies of answers and streams, output tokens, and a rate limiter's window on
 * each (one admission). The same selection is asked again and again (its prefix hash cycling over
 * 1,024 keys, as many sessions would), after a warm-up that builds what a strategy caches (weighted
 * round robin's schedule, consistent hashing's ring); the fastest of five rounds counts, the machine's
 * other work being what makes a round slower. Printed: microseconds per decision, and the reads of
 * the state store per decision (counted by a wrapper around the memory store), then the two bars as
 * PASS or FAIL, judged on the reads, which the machine cannot blur:
 *
 * - p2c flat: the same reads per decision at every size.
 * - Nothing worse than linear: reads per decision at most proportional to the candidates.
 *
 * Time per candidate still grows past 1,000 candidates: the state of 10,000 upstreams (their records,
 * keys and `Upstream` objects) no longer fits the CPU's caches, and each read waits on memory.
 *
 * Environment (optional): DECISION_MS=150, the time measured per strategy and pool size.
 */
import { Effect, Layer } from "effect"
import type { Strategy as StrategyTypes } from "../packages/core/src/index.js"
import { Guard, Live, RateLimiter, StateStore, Strategy, Topology } from "../packages/core/src/index.js"
import { Strategies } from "../packages/strategies/src/index.js"
import { seeded } from "./lib/random.js"

const SIZES = [10, 100, 1_000, 10_000] as const
const MEASURE_MS = Number(process.env["DECISION_MS"] ?? 150)
const NOW = 1_000_000

/** Reads and writes of the state store's `local` state since the last reset. */
let reads = 0

/** The memory store, counting every operation on its `local` state. */
const countingStore = Layer.effect(
  StateStore.StateStore,
  Effect.map(StateStore.makeMemory, (memory) => {
    const local = memory.local
    return StateStore.StateStore.of({
      ...memory,
      local: {
        modify: (key, f) => (reads++, local.modify(key, f)),
        peek: (key) => (reads++, local.peek(key)),
        get: (key, now) => (reads++, local.get(key, now)),
        set: (key, value, now, ttlMs) => (reads++, local.set(key, value, now, ttlMs))
      }
    })
  })
)

/** A pool of `n` upstreams with weights, prices, quality and RPM limits, and their live state. */
const setUp = (n: number) =>
  Effect.gen(function* () {
    const store = yield* StateStore.StateStore
    const limiter = yield* RateLimiter.RateLimiter
    const random = seeded(n)
    const upstreams = Array.from({ length: n }, (_, i) =>
      Topology.upstream({
        id: `u${i}`,
        provider: "openai",
        baseUrl: `http://127.0.0.1:9/u${i}`,
        weight: 1 + Math.floor(random() * 3),
        pricing: { inputPerMillion: 0.1 + random() * 10, outputPerMillion: 0.4 + random() * 40 },
        quality: random(),
        limits: { rpm: 1_000_000 }
      })
    )
    const pool = Topology.pool({
      id: `p${n}`,
      models: ["m"],
      upstreams,
      cost: { weights: { cost: 0.7, latency: 0.3 } }
    })
    for (const upstream of upstreams) {
      for (let k = Math.floor(random() * 4); k > 0; k--) Live.started(store.local, upstream.id, 500)
      Live.recordLatency(store.local, "answer", upstream.id, 50 + random() * 2000, NOW - random() * 30_000)
      Live.recordLatency(store.local, "first-content", upstream.id, 20 + random() * 500, NOW - random() * 30_000)
      Live.started(store.local, upstream.id, 0)
      Live.finished(
        store.local,
        upstream.id,
        0,
        { _tag: "Success", latencyMs: 100, inputTokens: 100, outputTokens: Math.floor(50 + random() * 500) },
        NOW
      )
      yield* Guard.admit(limiter.guard, {
        pool,
        model: "m",
        promptTokens: 100,
        reservedOutputTokens: 100,
        sessionKey: undefined,
        priority: 0,
        stream: false,
        upstream,
        attempt: 1
      })
    }
    const keys = Array.from({ length: 1024 }, (_, i) => Strategy.hash(`system prompt ${i}`))
    let next = 0
    const selection: StrategyTypes.Selection = {
      pool,
      candidates: upstreams as unknown as readonly [Topology.Upstream, ...Array<Topology.Upstream>],
      model: "m",
      attempt: 1,
      promptTokens: 800,
      reservedOutputTokens: 400,
      stream: false,
      sessionKey: undefined,
      prefixHash: () => keys[next++ & 1023],
      now: NOW,
      random: seeded(7),
      explore: true,
      live: Live.make(store.local, NOW)
    }
    const strategies: Record<string, StrategyTypes.Service> = {}
    for (const [name, make] of Object.entries(Strategies.builtins)) strategies[name] = yield* make
    return { selection, strategies }
  }).pipe(Effect.provide(RateLimiter.layer), Effect.provide(countingStore))

/** Rounds per cell: the fastest is kept, as the one least disturbed by other work on the machine. */
const ROUNDS = 5

/**
 * Microseconds per decision of `strategy` on `selection`: after a warm-up, the fastest of
 * {@link ROUNDS} rounds of about `MEASURE_MS / ROUNDS` each.
 */
const measure = (strategy: StrategyTypes.Service, selection: StrategyTypes.Selection): number => {
  let sink = 0
  const warmUntil = performance.now() + MEASURE_MS / 3
  while (performance.now() < warmUntil) sink += Strategy.chosen(strategy.select(selection)).weight
  let fastest = Number.POSITIVE_INFINITY
  for (let round = 0; round < ROUNDS; round++) {
    let decisions = 0
    const started = performance.now()
    let elapsed = 0
    while (elapsed < MEASURE_MS / ROUNDS) {
      for (let i = 0; i < 8; i++) sink += Strategy.chosen(strategy.select(selection)).weight
      decisions += 8
      elapsed = performance.now() - started
    }
    fastest = Math.min(fastest, (elapsed * 1000) / decisions)
  }
  if (sink < 0) console.log(sink)
  return fastest
}

/** State-store operations per decision of `strategy` on `selection` (after the warm-up's caches are built). */
const readsPer = (strategy: StrategyTypes.Service, selection: StrategyTypes.Selection): number => {
  reads = 0
  for (let i = 0; i < 64; i++) strategy.select(selection)
  return reads / 64
}

const results = new Map<string, Map<number, number>>()
const readCounts = new Map<string, Map<number, number>>()
for (const n of SIZES) {
  const { selection, strategies } = Effect.runSync(setUp(n))
  for (const [name, strategy] of Object.entries(strategies)) {
    const row = results.get(name) ?? new Map<number, number>()
    row.set(n, measure(strategy, selection))
    results.set(name, row)
    const counted = readCounts.get(name) ?? new Map<number, number>()
    counted.set(n, readsPer(strategy, selection))
    readCounts.set(name, counted)
  }
}

const format = (us: number) => (us < 10 ? us.toFixed(2) : us < 100 ? us.toFixed(1) : us.toFixed(0))
const width = Math.max(...[...results.keys()].map((name) => name.length))
console.log(`µs per decision, all candidates live (fastest of ${ROUNDS} rounds in ${MEASURE_MS} ms per cell)\n`)
console.log(`${"strategy".padEnd(width)}  ${SIZES.map((n) => `${n.toLocaleString("en")}`.padStart(9)).join("")}`)
for (const [name, row] of results)
  console.log(`${name.padEnd(width)}  ${SIZES.map((n) => format(row.get(n)!).padStart(9)).join("")}`)

console.log(`\nstate-store reads per decision\n`)
console.log(`${"strategy".padEnd(width)}  ${SIZES.map((n) => `${n.toLocaleString("en")}`.padStart(9)).join("")}`)
for (const [name, row] of readCounts)
  console.log(`${name.padEnd(width)}  ${SIZES.map((n) => format(row.get(n)!).padStart(9)).join("")}`)

const p2c = readCounts.get("p2c")!
const flat = SIZES.every((n) => p2c.get(n)! <= p2c.get(10)!)
console.log(
  `\np2c flat: ${format(p2c.get(10)!)} reads per decision among 10 candidates, ${format(p2c.get(10_000)!)} among 10,000; ${format(results.get("p2c")!.get(10)!)} µs against ${format(results.get("p2c")!.get(10_000)!)} µs [${flat ? "PASS" : "FAIL"}: bar the same reads at every size]`
)
// Linear: reads per decision grow no faster than the candidates (a little slack for the fixed reads).
const superlinear = [...readCounts].filter(([, row]) =>
  SIZES.some((n, i) => i > 0 && row.get(n)! > (n / SIZES[i - 1]!) * row.get(SIZES[i - 1]!)! + 4)
)
console.log(
  `no strategy worse than linear: ${superlinear.length === 0 ? "PASS" : `FAIL: ${superlinear.map(([name]) => name).join(", ")}`} [bar: reads per decision at most proportional to the candidates]`
)
