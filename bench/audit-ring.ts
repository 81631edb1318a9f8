/**
 * What an audit entry costs the event loop on its way to the audit file (`fileSink` in
 * `packages/server/src/internal/audit.ts`): `writeEntry` of an answered request's decision, timed
 * alone, with `BENCH_RING_CHURN_KB` (1024) of memory read between entries so that the code and the
 * data are as cold as on a gateway doing a request's other work between entries (0: back to back).
 * Every 64 entries it pauses 1 ms, so that the writer thread keeps up and the ring never fills (an
 * entry that waits for room costs less, and would flatter the figure). Also prints the CPU time
 * the process's other threads (the writer thread, V8's helpers) used per entry meanwhile.
 *
 *   npm run build && node --import tsx bench/audit-ring.ts
 *
 * Environment: BENCH_RING_ENTRIES (20,000 a round), BENCH_RING_ROUNDS (5), BENCH_RING_CHURN_KB (1024).
 * Linux only (the other threads' time comes from `/proc/self/task`).
 */
import { Decision } from "@sluice/core"
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileSink } from "../packages/server/dist/internal/audit.js"
import { positive } from "./lib/env.js"
import { summarize } from "./lib/stats.js"

const entries = Math.round(positive("BENCH_RING_ENTRIES", 20_000))
const rounds = Math.round(positive("BENCH_RING_ROUNDS", 5))
/** Zero is allowed here (back to back), so not `positive`. */
const churnKb = Number(process.env["BENCH_RING_CHURN_KB"] ?? 1024)
if (!Number.isFinite(churnKb) || churnKb < 0)
  throw new Error(`BENCH_RING_CHURN_KB: expected 0 or more, got '${process.env["BENCH_RING_CHURN_KB"]}'`)

/** An answered request's decision, as the gateway's bench traffic makes them. */
const decision = (i: number): Decision.Decision => {
  const startedAt = Date.now()
  const b = new Decision.Builder(
    `req_${(1e15 + i).toString(16)}0123456789abcdef012`,
    "chat",
    false,
    "bench-model",
    "bench",
    "round-robin",
    14,
    false,
    startedAt
  )
  b.pools.push("bench")
  b.candidates = ["bench-upstream"]
  b.attempts.push({ attempt: 1, pool: "bench", upstream: "bench-upstream", outcome: "success", latencyMs: 15 })
  b.upstream = "bench-upstream"
  b.provider = "openai-compatible"
  b.responseModel = "bench-model"
  b.inputTokens = 10
  b.outputTokens = 16
  return b.end(startedAt + 15, "success", undefined)
}

/** CPU nanoseconds of this process's threads other than the main one. */
const otherThreadsNs = (): number => {
  let ns = 0
  for (const tid of readdirSync("/proc/self/task"))
    if (Number(tid) !== process.pid)
      ns += Number(readFileSync(`/proc/self/task/${tid}/schedstat`, "utf8").split(" ")[0])
  return ns
}

const dir = mkdtempSync(join(tmpdir(), "sluice-bench-ring-"))
const sink = fileSink(join(dir, "audit.jsonl"), Number.MAX_SAFE_INTEGER, 0)
const churn = new Float64Array(churnKb * 128)
const pause = new Int32Array(new SharedArrayBuffer(4))

/** The timer's own cost, taken off each entry's time: the least of a few batches (the first ones warm it up). */
const timerNs = (): number => {
  let least = Number.POSITIVE_INFINITY
  for (let batch = 0; batch < 20; batch++) {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < 10_000; i++) process.hrtime.bigint()
    least = Math.min(least, Number(process.hrtime.bigint() - t0) / 10_000)
  }
  return least
}

/** One round: nanoseconds per entry on the event loop and on the other threads. */
const round = (): { readonly loop: number; readonly others: number } => {
  let ns = 0n
  let sum = 0
  const before = otherThreadsNs()
  for (let i = 0; i < entries; i++) {
    // Every 8th double of the churn, from a different offset each time: one read per cache line.
    for (let j = i & 7; j < churn.length; j += 8) sum += churn[j]!++
    const d = decision(i)
    const t = process.hrtime.bigint()
    sink.writeEntry(d, "anonymous", 0)
    ns += process.hrtime.bigint() - t
    if ((i & 63) === 63) Atomics.wait(pause, 0, 0, 1)
  }
  if (Number.isNaN(sum)) throw new Error("unreachable: keeps the churn's reads")
  return { loop: Number(ns) / entries - timer, others: (otherThreadsNs() - before) / entries }
}

const timer = timerNs()
console.log(
  `audit ring bench: ${rounds} rounds of ${entries} entries, ${churnKb} KB read between entries; timer ${timer.toFixed(0)} ns taken off`
)
const loops: Array<number> = []
for (let r = 1; r <= rounds; r++) {
  const { loop, others } = round()
  loops.push(loop)
  console.log(
    `round ${r}: event loop ${(loop / 1000).toFixed(2)} µs an entry, other threads ${(others / 1000).toFixed(2)} µs`
  )
}
sink.close()
rmSync(dir, { recursive: true, force: true })
console.log(`SUMMARY: event loop per entry, median of rounds ${(summarize(loops).p50 / 1000).toFixed(2)} µs`)
