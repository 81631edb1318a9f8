/**
 * `npm run bench`: Sluice against a bare Node proxy and against no proxy at all, on the same simulated
 * upstream, one scenario after another. See bench/README.md for what is measured and how to read it.
 *
 * Environment (all optional):
 *   BENCH_SECONDS=5              measured seconds per target, non-streaming
 *   BENCH_WARMUP_SECONDS=1       warm-up seconds per target before measuring, non-streaming
 *   BENCH_CONNECTIONS=50         concurrent connections, non-streaming
 *   BENCH_STREAM_REQUESTS=300    streamed requests per target and concurrency
 *   BENCH_STREAM_CONCURRENCY=1,10
 *   BENCH_COMPLETION_TOKENS=16   words per simulated answer
 *   BENCH_TARGETS=direct,bare,sluice  (add "effect" for the bare @effect/platform proxy, bench/effect-proxy.ts)
 *   BENCH_SLUICE_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof"   extra node flags for the gateway
 *   BENCH_EFFECT_NODE_ARGS=...   the same for the opt-in `effect` target
 *   BENCH_SIM_ARGS="--failure-rate 0.01"   extra `sluice simulate` flags (e.g. to see errors reported)
 *   BENCH_TIMEOUT_SECONDS        hard limit for the whole run (default: computed from the above)
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import type { Child } from "./lib/children.js"
import { cpuMs, freePort, killAllNow, start, stopAll, waitReady } from "./lib/children.js"
import type { Errors } from "./lib/load.js"
import { closedLoop, pool, streamRequests } from "./lib/load.js"
import type { Summary } from "./lib/stats.js"
import { fmt, round, signed, summarize, table } from "./lib/stats.js"

const ROOT = fileURLToPath(new URL("..", import.meta.url))
const SLUICE_BIN = join(ROOT, "packages/server/bin/sluice.js")
const RESULTS_DIR = join(ROOT, "bench/results")
const MODEL = "bench-model"
const TTFB_BAR_MS = 1

// ---------------------------------------------------------------------------------------------------
// Settings

const positive = (name: string, fallback: number): number => {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === "") return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name}: expected a positive number, got '${raw}'`)
  return value
}

const list = (name: string, fallback: string): Array<string> =>
  (process.env[name] ?? fallback)
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")

type TargetName = "direct" | "bare" | "effect" | "sluice"
/** Every target, in run order; `effect` (the bare @effect/platform floor) is opt-in. */
const TARGET_NAMES: ReadonlyArray<TargetName> = ["direct", "bare", "effect", "sluice"]
const DEFAULT_TARGETS = "direct,bare,sluice"

const settings = (() => {
  const targets = list("BENCH_TARGETS", DEFAULT_TARGETS)
  for (const t of targets) {
    if (!TARGET_NAMES.includes(t as TargetName)) {
      throw new Error(`BENCH_TARGETS: unknown target '${t}' (known: ${TARGET_NAMES.join(", ")})`)
    }
  }
  const streamConcurrency = list("BENCH_STREAM_CONCURRENCY", "1,10").map((s) => {
    const n = Number(s)
    if (!Number.isInteger(n) || n <= 0) throw new Error(`BENCH_STREAM_CONCURRENCY: bad value '${s}'`)
    return n
  })
  const s = {
    seconds: positive("BENCH_SECONDS", 5),
    warmupSeconds: positive("BENCH_WARMUP_SECONDS", 1),
    connections: Math.round(positive("BENCH_CONNECTIONS", 50)),
    streamRequests: Math.round(positive("BENCH_STREAM_REQUESTS", 300)),
    streamConcurrency,
    completionTokens: Math.round(positive("BENCH_COMPLETION_TOKENS", 16)),
    targets: TARGET_NAMES.filter((t) => targets.includes(t)),
    sluiceNodeArgs: (process.env["BENCH_SLUICE_NODE_ARGS"] ?? "").split(/\s+/).filter((a) => a !== ""),
    effectNodeArgs: (process.env["BENCH_EFFECT_NODE_ARGS"] ?? "").split(/\s+/).filter((a) => a !== ""),
    bareNodeArgs: (process.env["BENCH_BARE_NODE_ARGS"] ?? "").split(/\s+/).filter((a) => a !== ""),
    simulatorArgs: (process.env["BENCH_SIM_ARGS"] ?? "").split(/\s+/).filter((a) => a !== ""),
    /** Cap on one streaming run (warm-up included), so a slow target cannot stall the bench. */
    streamCapSeconds: 8
  }
  const nonStreaming = s.targets.length * (s.warmupSeconds + s.seconds + 1)
  const streaming = s.targets.length * s.streamConcurrency.length * (s.streamCapSeconds + 1)
  return { ...s, timeoutSeconds: positive("BENCH_TIMEOUT_SECONDS", 40 + nonStreaming + streaming) }
})()

// ---------------------------------------------------------------------------------------------------
// Processes

interface Target {
  readonly name: TargetName
  readonly label: string
  readonly origin: string
  /** The process doing the proxying (none for direct). */
  readonly child: Child | undefined
}

const node = process.execPath

const startSimulator = async (): Promise<{ child: Child; origin: string }> => {
  const port = await freePort()
  // prettier-ignore
  const args = [
    SLUICE_BIN, "simulate", "--port", String(port), "--name", "bench-sim", "--models", MODEL, "--seed", "1",
    "--latency-ms", "0", "--ttft-ms", "0", "--tokens-per-second", "0",
    "--completion-tokens", String(settings.completionTokens), ...settings.simulatorArgs
  ]
  const child = start("simulator", node, args, { cwd: ROOT })
  const origin = `http://127.0.0.1:${port}`
  await waitReady(child, `${origin}/health`)
  return { child, origin }
}

const startBare = async (upstream: string): Promise<Target> => {
  const port = await freePort()
  const child = start("bare proxy", node, [...settings.bareNodeArgs, "--import", "tsx", join(ROOT, "bench/proxy.ts")], {
    cwd: ROOT,
    env: { BENCH_UPSTREAM: upstream, PORT: String(port) }
  })
  const origin = `http://127.0.0.1:${port}`
  // The proxy has no routes of its own: this is the simulator's /health through the proxy.
  await waitReady(child, `${origin}/health`)
  return { name: "bare", label: "bare proxy", origin, child }
}

const startEffect = async (upstream: string): Promise<Target> => {
  const port = await freePort()
  const args = [...settings.effectNodeArgs, "--import", "tsx", join(ROOT, "bench/effect-proxy.ts")]
  const child = start("effect proxy", node, args, {
    cwd: ROOT,
    env: { BENCH_UPSTREAM: upstream, PORT: String(port) }
  })
  const origin = `http://127.0.0.1:${port}`
  await waitReady(child, `${origin}/health`)
  return { name: "effect", label: "effect floor", origin, child }
}

const sluiceConfig = (port: number, upstream: string): string => `# Generated by bench/run.ts
server:
  host: 127.0.0.1
  port: ${port}

upstreams:
  - id: bench-upstream
    name: Benchmark simulator (separate process)
    provider: openai-compatible
    baseUrl: ${upstream}/v1

pools:
  - id: bench
    models: ["${MODEL}"]
    upstreams: [bench-upstream]
`

const startSluice = async (upstream: string, configDir: string): Promise<Target> => {
  const port = await freePort()
  const config = join(configDir, "sluice.bench.yaml")
  writeFileSync(config, sluiceConfig(port, upstream))
  const child = start("sluice", node, [...settings.sluiceNodeArgs, SLUICE_BIN, "serve", "--config", config], {
    cwd: ROOT,
    env: { PORT: String(port) }
  })
  const origin = `http://127.0.0.1:${port}`
  await waitReady(child, `${origin}/health`, 60_000)
  return { name: "sluice", label: "sluice", origin, child }
}

// ---------------------------------------------------------------------------------------------------
// Measuring

interface Cpu {
  /** CPU used during the measurement as % of one core: the target's process, the simulator, this process. */
  readonly targetPct: number | undefined
  readonly simulatorPct: number | undefined
  readonly loadgenPct: number
}

const cpuMeter = (target: Target, simulator: Child) => {
  const t0 = target.child === undefined ? undefined : cpuMs(target.child.pid)
  const s0 = cpuMs(simulator.pid)
  const l0 = process.cpuUsage()
  const w0 = performance.now()
  return (): Cpu => {
    const wall = performance.now() - w0
    const t1 = target.child === undefined ? undefined : cpuMs(target.child.pid)
    const s1 = cpuMs(simulator.pid)
    const l = process.cpuUsage(l0)
    const pct = (a: number | undefined, b: number | undefined) =>
      a === undefined || b === undefined ? undefined : ((b - a) / wall) * 100
    return { targetPct: pct(t0, t1), simulatorPct: pct(s0, s1), loadgenPct: ((l.user + l.system) / 1000 / wall) * 100 }
  }
}

interface NonStreamingRun {
  readonly target: TargetName
  readonly ok: number
  readonly errors: Errors
  readonly warmupErrors: Errors
  readonly elapsedMs: number
  readonly rps: number
  readonly latency: Summary
  readonly cpu: Cpu
}

interface StreamingRun {
  readonly target: TargetName
  readonly ok: number
  readonly errors: Errors
  readonly warmupErrors: Errors
  readonly skipped: number
  readonly elapsedMs: number
  readonly rps: number
  readonly ttfb: Summary
  readonly total: Summary
  readonly cpu: Cpu
}

const nonStreaming = async (target: Target, simulator: Child): Promise<NonStreamingRun> => {
  const p = pool(target.origin, settings.connections)
  try {
    const warm = await closedLoop(p, settings.connections, settings.warmupSeconds * 1000, MODEL)
    const meter = cpuMeter(target, simulator)
    const run = await closedLoop(p, settings.connections, settings.seconds * 1000, MODEL)
    const cpu = meter()
    return {
      target: target.name,
      ok: run.ok,
      errors: run.errors,
      warmupErrors: warm.errors,
      elapsedMs: run.elapsedMs,
      rps: (run.ok / run.elapsedMs) * 1000,
      latency: summarize(run.latencies),
      cpu
    }
  } finally {
    await p.destroy()
  }
}

const streaming = async (target: Target, simulator: Child, concurrency: number): Promise<StreamingRun> => {
  const p = pool(target.origin, concurrency)
  const capMs = settings.streamCapSeconds * 1000
  try {
    const warmCount = Math.max(50, concurrency * 10)
    const warmStarted = performance.now()
    const warm = await streamRequests(p, concurrency, warmCount, MODEL, capMs / 4)
    const left = capMs - (performance.now() - warmStarted)
    const meter = cpuMeter(target, simulator)
    const run = await streamRequests(p, concurrency, settings.streamRequests, MODEL, Math.max(left, 1000))
    const cpu = meter()
    return {
      target: target.name,
      ok: run.ok,
      errors: run.errors,
      warmupErrors: warm.errors,
      skipped: run.skipped,
      elapsedMs: run.elapsedMs,
      rps: (run.ok / run.elapsedMs) * 1000,
      ttfb: summarize(run.ttfb),
      total: summarize(run.total),
      cpu
    }
  } finally {
    await p.destroy()
  }
}

// ---------------------------------------------------------------------------------------------------
// Reporting

const pct = (x: number | undefined): string => (x === undefined ? "-" : `${x.toFixed(0)}%`)
const ratio = (a: number | undefined, b: number | undefined): number =>
  a === undefined || b === undefined || b === 0 ? Number.NaN : a / b
const byName = <A extends { readonly target: TargetName }>(runs: ReadonlyArray<A>, name: TargetName): A | undefined =>
  runs.find((r) => r.target === name)

const summaryJson = (s: Summary) => ({
  count: s.count,
  min: round(s.min),
  mean: round(s.mean),
  p50: round(s.p50),
  p90: round(s.p90),
  p99: round(s.p99),
  max: round(s.max)
})

const cpuJson = (c: Cpu) => ({
  targetPct: c.targetPct === undefined ? null : round(c.targetPct, 1),
  simulatorPct: c.simulatorPct === undefined ? null : round(c.simulatorPct, 1),
  loadgenPct: round(c.loadgenPct, 1)
})

const nonStreamingComparison = (runs: ReadonlyArray<NonStreamingRun>) => {
  const direct = byName(runs, "direct")
  const bare = byName(runs, "bare")
  const sluice = byName(runs, "sluice")
  const effect = byName(runs, "effect")
  return {
    sluiceRpsOverBare: ratio(sluice?.rps, bare?.rps),
    sluiceRpsOverDirect: ratio(sluice?.rps, direct?.rps),
    bareRpsOverDirect: ratio(bare?.rps, direct?.rps),
    sluiceAddedP50VsBareMs: (sluice?.latency.p50 ?? Number.NaN) - (bare?.latency.p50 ?? Number.NaN),
    sluiceAddedP99VsBareMs: (sluice?.latency.p99 ?? Number.NaN) - (bare?.latency.p99 ?? Number.NaN),
    sluiceAddedP50VsDirectMs: (sluice?.latency.p50 ?? Number.NaN) - (direct?.latency.p50 ?? Number.NaN),
    sluiceAddedP99VsDirectMs: (sluice?.latency.p99 ?? Number.NaN) - (direct?.latency.p99 ?? Number.NaN),
    bareAddedP50VsDirectMs: (bare?.latency.p50 ?? Number.NaN) - (direct?.latency.p50 ?? Number.NaN),
    bareAddedP99VsDirectMs: (bare?.latency.p99 ?? Number.NaN) - (direct?.latency.p99 ?? Number.NaN),
    // Only with the opt-in `effect` target (NaN otherwise).
    sluiceRpsOverEffect: ratio(sluice?.rps, effect?.rps),
    effectRpsOverBare: ratio(effect?.rps, bare?.rps),
    sluiceAddedP50VsEffectMs: (sluice?.latency.p50 ?? Number.NaN) - (effect?.latency.p50 ?? Number.NaN),
    effectAddedP50VsBareMs: (effect?.latency.p50 ?? Number.NaN) - (bare?.latency.p50 ?? Number.NaN)
  }
}

const streamingComparison = (runs: ReadonlyArray<StreamingRun>) => {
  const direct = byName(runs, "direct")
  const bare = byName(runs, "bare")
  const sluice = byName(runs, "sluice")
  const effect = byName(runs, "effect")
  const addedTtfbP50VsBare = (sluice?.ttfb.p50 ?? Number.NaN) - (bare?.ttfb.p50 ?? Number.NaN)
  return {
    sluiceAddedTtfbP50VsBareMs: addedTtfbP50VsBare,
    sluiceAddedTtfbP99VsBareMs: (sluice?.ttfb.p99 ?? Number.NaN) - (bare?.ttfb.p99 ?? Number.NaN),
    sluiceAddedTtfbP50VsDirectMs: (sluice?.ttfb.p50 ?? Number.NaN) - (direct?.ttfb.p50 ?? Number.NaN),
    bareAddedTtfbP50VsDirectMs: (bare?.ttfb.p50 ?? Number.NaN) - (direct?.ttfb.p50 ?? Number.NaN),
    sluiceTotalP50OverBare: ratio(sluice?.total.p50, bare?.total.p50),
    sluiceTotalP99OverBare: ratio(sluice?.total.p99, bare?.total.p99),
    sluiceTotalP50OverDirect: ratio(sluice?.total.p50, direct?.total.p50),
    // Only with the opt-in `effect` target (NaN otherwise).
    sluiceAddedTtfbP50VsEffectMs: (sluice?.ttfb.p50 ?? Number.NaN) - (effect?.ttfb.p50 ?? Number.NaN),
    effectAddedTtfbP50VsBareMs: (effect?.ttfb.p50 ?? Number.NaN) - (bare?.ttfb.p50 ?? Number.NaN),
    ttfbBarMs: TTFB_BAR_MS,
    ttfbBarMet: Number.isFinite(addedTtfbP50VsBare) ? addedTtfbP50VsBare < TTFB_BAR_MS : null
  }
}

const roundAll = (o: Record<string, number | boolean | null>) =>
  Object.fromEntries(Object.entries(o).map(([k, v]) => [k, typeof v === "number" ? round(v, 4) : v]))

const errorCell = (e: Errors, warm: Errors): string =>
  e.count === 0 && warm.count === 0 ? "0" : `${e.count}${warm.count > 0 ? ` (+${warm.count} warm-up)` : ""} !!`

const describeErrors = (label: string, e: Errors): Array<string> =>
  e.count === 0
    ? []
    : [
        `  ${label}: ${e.count} failed — ${Object.entries(e.kinds)
          .map(([k, n]) => `${k} ×${n}`)
          .join(", ")}`,
        ...e.examples.map((x) => `      e.g. ${x}`)
      ]

// ---------------------------------------------------------------------------------------------------
// Main

const log = (line = ""): void => console.log(line)

/** Formats JSON the way the repository's Prettier does, so `prettier --check .` stays clean. */
const formatJson = async (file: string, json: string): Promise<string> => {
  try {
    const prettier = await import("prettier")
    const options = (await prettier.resolveConfig(file)) ?? {}
    return await prettier.format(json, { ...options, filepath: file })
  } catch {
    return json
  }
}
/** Temporary directories (the generated config), removed when the process exits. */
const tempDirs: Array<string> = []

const main = async (): Promise<number> => {
  const startedAt = new Date()
  const configDir = mkdtempSync(join(tmpdir(), "sluice-bench-"))
  tempDirs.push(configDir)
  try {
    log(
      `Sluice bench — node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model ?? "?"}); ` +
        `targets: ${settings.targets.join(", ")}`
    )
    log(
      `non-streaming: ${settings.connections} connections, ${settings.warmupSeconds} s warm-up + ${settings.seconds} s per target; ` +
        `streaming: ${settings.streamRequests} requests at concurrency ${settings.streamConcurrency.join(" and ")}; ` +
        `simulator: 0 ms latency, ${settings.completionTokens} tokens; hard limit ${settings.timeoutSeconds.toFixed(0)} s`
    )
    if (settings.sluiceNodeArgs.length > 0) log(`sluice runs with node ${settings.sluiceNodeArgs.join(" ")}`)
    if (settings.simulatorArgs.length > 0) log(`simulator runs with ${settings.simulatorArgs.join(" ")}`)
    if (settings.effectNodeArgs.length > 0) log(`effect floor runs with node ${settings.effectNodeArgs.join(" ")}`)
    log()

    const t0 = performance.now()
    const sim = await startSimulator()
    const targets: Array<Target> = []
    if (settings.targets.includes("direct")) {
      targets.push({ name: "direct", label: "direct (no proxy)", origin: sim.origin, child: undefined })
    }
    const started = await Promise.all([
      settings.targets.includes("bare") ? startBare(sim.origin) : undefined,
      settings.targets.includes("effect") ? startEffect(sim.origin) : undefined,
      settings.targets.includes("sluice") ? startSluice(sim.origin, configDir) : undefined
    ])
    for (const t of started) if (t !== undefined) targets.push(t)
    log(
      `ready in ${((performance.now() - t0) / 1000).toFixed(1)} s: ` +
        [
          `simulator ${sim.origin}`,
          ...targets.filter((t) => t.child !== undefined).map((t) => `${t.name} ${t.origin}`)
        ].join(", ")
    )
    log()

    // Non-streaming
    const nsRuns: Array<NonStreamingRun> = []
    for (const target of targets) {
      process.stdout.write(`non-streaming → ${target.label} ... `)
      const run = await nonStreaming(target, sim.child)
      nsRuns.push(run)
      log(
        `${run.rps.toFixed(0)} req/s, p50 ${fmt(run.latency.p50)} ms${run.errors.count > 0 ? `, ${run.errors.count} ERRORS` : ""}`
      )
    }
    // Streaming
    const sRuns: Array<{ concurrency: number; runs: Array<StreamingRun> }> = []
    for (const concurrency of settings.streamConcurrency) {
      const runs: Array<StreamingRun> = []
      for (const target of targets) {
        process.stdout.write(`streaming c=${concurrency} → ${target.label} ... `)
        const run = await streaming(target, sim.child, concurrency)
        runs.push(run)
        log(
          `TTFB p50 ${fmt(run.ttfb.p50)} ms, total p50 ${fmt(run.total.p50)} ms` +
            (run.errors.count > 0 ? `, ${run.errors.count} ERRORS` : "") +
            (run.skipped > 0 ? `, ${run.skipped} not sent (time cap)` : "")
        )
      }
      sRuns.push({ concurrency, runs })
    }

    // Tables
    const label = (name: TargetName): string => targets.find((t) => t.name === name)?.label ?? name
    log()
    log(
      `NON-STREAMING chat completions — ${settings.connections} connections, ${settings.seconds} s measured (latency in ms)`
    )
    log(
      table(
        ["target", "ok", "errors", "req/s", "p50", "p90", "p99", "max", "cpu proxy", "cpu sim", "cpu loadgen"],
        nsRuns.map((r) => [
          label(r.target),
          String(r.ok),
          errorCell(r.errors, r.warmupErrors),
          r.rps.toFixed(0),
          fmt(r.latency.p50),
          fmt(r.latency.p90),
          fmt(r.latency.p99),
          fmt(r.latency.max),
          pct(r.cpu.targetPct),
          pct(r.cpu.simulatorPct),
          pct(r.cpu.loadgenPct)
        ])
      )
    )
    const ns = nonStreamingComparison(nsRuns)
    log()
    log(
      `  sluice vs bare:   throughput ×${fmt(ns.sluiceRpsOverBare, 3)}, ` +
        `added latency p50 ${signed(ns.sluiceAddedP50VsBareMs)} ms, p99 ${signed(ns.sluiceAddedP99VsBareMs)} ms`
    )
    log(
      `  sluice vs direct: throughput ×${fmt(ns.sluiceRpsOverDirect, 3)}, ` +
        `added latency p50 ${signed(ns.sluiceAddedP50VsDirectMs)} ms, p99 ${signed(ns.sluiceAddedP99VsDirectMs)} ms`
    )
    log(
      `  bare vs direct:   throughput ×${fmt(ns.bareRpsOverDirect, 3)}, ` +
        `added latency p50 ${signed(ns.bareAddedP50VsDirectMs)} ms, p99 ${signed(ns.bareAddedP99VsDirectMs)} ms`
    )
    if (settings.targets.includes("effect")) {
      log(
        `  effect floor:     effect/bare throughput ×${fmt(ns.effectRpsOverBare)}, added p50 ${signed(ns.effectAddedP50VsBareMs)} ms; ` +
          `sluice/effect throughput ×${fmt(ns.sluiceRpsOverEffect)}, added p50 ${signed(ns.sluiceAddedP50VsEffectMs)} ms`
      )
    }

    const streamComparisons = sRuns.map(({ concurrency, runs }) => ({ concurrency, ...streamingComparison(runs) }))
    for (const { concurrency, runs } of sRuns) {
      const c = streamComparisons.find((x) => x.concurrency === concurrency)!
      log()
      log(
        `STREAMING chat completions — concurrency ${concurrency}, ${settings.streamRequests} requests (ms; TTFB = first SSE data chunk)`
      )
      log(
        table(
          [
            "target",
            "ok",
            "errors",
            "req/s",
            "TTFB p50",
            "TTFB p99",
            "total p50",
            "total p99",
            "cpu proxy",
            "cpu sim",
            "cpu loadgen"
          ],
          runs.map((r) => [
            label(r.target),
            String(r.ok) + (r.skipped > 0 ? ` (${r.skipped} not sent)` : ""),
            errorCell(r.errors, r.warmupErrors),
            r.rps.toFixed(0),
            fmt(r.ttfb.p50),
            fmt(r.ttfb.p99),
            fmt(r.total.p50),
            fmt(r.total.p99),
            pct(r.cpu.targetPct),
            pct(r.cpu.simulatorPct),
            pct(r.cpu.loadgenPct)
          ])
        )
      )
      log()
      const verdict = c.ttfbBarMet === null ? "n/a" : c.ttfbBarMet ? "PASS" : "FAIL"
      log(
        `  sluice vs bare:   added TTFB p50 ${signed(c.sluiceAddedTtfbP50VsBareMs)} ms ` +
          `[${verdict}: bar < ${TTFB_BAR_MS} ms], p99 ${signed(c.sluiceAddedTtfbP99VsBareMs)} ms; ` +
          `total p50 ×${fmt(c.sluiceTotalP50OverBare)}, p99 ×${fmt(c.sluiceTotalP99OverBare)}`
      )
      log(
        `  vs direct:        sluice added TTFB p50 ${signed(c.sluiceAddedTtfbP50VsDirectMs)} ms, ` +
          `bare added TTFB p50 ${signed(c.bareAddedTtfbP50VsDirectMs)} ms`
      )
      if (settings.targets.includes("effect")) {
        log(
          `  effect floor:     effect added TTFB p50 vs bare ${signed(c.effectAddedTtfbP50VsBareMs)} ms, ` +
            `sluice added TTFB p50 vs effect ${signed(c.sluiceAddedTtfbP50VsEffectMs)} ms`
        )
      }
    }

    // Errors
    const allErrors: Array<string> = []
    for (const r of nsRuns) {
      allErrors.push(...describeErrors(`non-streaming ${r.target}`, r.errors))
      allErrors.push(...describeErrors(`non-streaming ${r.target} (warm-up)`, r.warmupErrors))
    }
    for (const { concurrency, runs } of sRuns) {
      for (const r of runs) {
        allErrors.push(...describeErrors(`streaming c=${concurrency} ${r.target}`, r.errors))
        allErrors.push(...describeErrors(`streaming c=${concurrency} ${r.target} (warm-up)`, r.warmupErrors))
      }
    }
    const errorTotal =
      nsRuns.reduce((n, r) => n + r.errors.count + r.warmupErrors.count, 0) +
      sRuns.reduce((n, s) => n + s.runs.reduce((m, r) => m + r.errors.count + r.warmupErrors.count, 0), 0)
    const skippedTotal = sRuns.reduce((n, s) => n + s.runs.reduce((m, r) => m + r.skipped, 0), 0)

    // Summary
    const parts = [
      `non-stream sluice/bare rps ×${fmt(ns.sluiceRpsOverBare)} (sluice ${byName(nsRuns, "sluice")?.rps.toFixed(0) ?? "-"} vs bare ${byName(nsRuns, "bare")?.rps.toFixed(0) ?? "-"} vs direct ${byName(nsRuns, "direct")?.rps.toFixed(0) ?? "-"} req/s), ` +
        `added p50 ${signed(ns.sluiceAddedP50VsBareMs)} ms, p99 ${signed(ns.sluiceAddedP99VsBareMs)} ms`,
      ...streamComparisons.map(
        (c) =>
          `stream c=${c.concurrency} added TTFB p50 ${signed(c.sluiceAddedTtfbP50VsBareMs)} ms ` +
          `(${c.ttfbBarMet === null ? "n/a" : c.ttfbBarMet ? "PASS" : "FAIL"} <${TTFB_BAR_MS} ms), total p50 ×${fmt(c.sluiceTotalP50OverBare)}`
      ),
      `errors ${errorTotal}`
    ]
    const summaryLine = `SUMMARY: ${parts.join("; ")}`
    log()
    if (errorTotal > 0 || skippedTotal > 0) {
      const bar = "!".repeat(100)
      log(bar)
      log(
        `!!! ${errorTotal} REQUEST(S) FAILED${skippedTotal > 0 ? `, ${skippedTotal} NOT SENT (time cap)` : ""} — ` +
          `the figures above are NOT trustworthy`
      )
      for (const line of allErrors) log(line)
      log(bar)
      log()
    }
    log(summaryLine)

    // JSON
    const results = {
      startedAt: startedAt.toISOString(),
      durationSeconds: round((performance.now() - t0) / 1000, 1),
      environment: { node: process.version, cpus: cpus().length, cpuModel: cpus()[0]?.model ?? null },
      settings,
      nonStreaming: {
        connections: settings.connections,
        seconds: settings.seconds,
        targets: Object.fromEntries(
          nsRuns.map((r) => [
            r.target,
            {
              ok: r.ok,
              errors: r.errors,
              warmupErrors: r.warmupErrors,
              elapsedMs: round(r.elapsedMs, 1),
              rps: round(r.rps, 1),
              latencyMs: summaryJson(r.latency),
              cpu: cpuJson(r.cpu)
            }
          ])
        ),
        comparison: roundAll(ns)
      },
      streaming: sRuns.map(({ concurrency, runs }) => ({
        concurrency,
        requests: settings.streamRequests,
        targets: Object.fromEntries(
          runs.map((r) => [
            r.target,
            {
              ok: r.ok,
              errors: r.errors,
              warmupErrors: r.warmupErrors,
              skipped: r.skipped,
              elapsedMs: round(r.elapsedMs, 1),
              rps: round(r.rps, 1),
              ttfbMs: summaryJson(r.ttfb),
              totalMs: summaryJson(r.total),
              cpu: cpuJson(r.cpu)
            }
          ])
        ),
        comparison: roundAll(streamComparisons.find((c) => c.concurrency === concurrency) ?? {})
      })),
      errors: errorTotal,
      skipped: skippedTotal,
      summary: summaryLine
    }
    mkdirSync(RESULTS_DIR, { recursive: true })
    const file = join(RESULTS_DIR, "latest.json")
    writeFileSync(file, await formatJson(file, JSON.stringify(results, null, 2) + "\n"))
    log(`results: ${file}`)
    return errorTotal > 0 || skippedTotal > 0 ? 1 : 0
  } finally {
    await stopAll()
  }
}

// ---------------------------------------------------------------------------------------------------
// Lifetime: children never outlive the bench, and the bench never runs unbounded.

process.on("exit", () => {
  killAllNow()
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true })
})
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    console.error(`\nbench: ${signal} — stopping child processes`)
    void stopAll(2_000).finally(() => process.exit(130))
  })
}
const hardLimit = setTimeout(() => {
  console.error(`\nbench: hard time limit of ${settings.timeoutSeconds.toFixed(0)} s reached — killing child processes`)
  killAllNow()
  process.exit(2)
}, settings.timeoutSeconds * 1000)
hardLimit.unref()

main().then(
  (code) => {
    process.exitCode = code
    clearTimeout(hardLimit)
  },
  async (error: unknown) => {
    console.error(`\nbench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    await stopAll(2_000)
    process.exit(1)
  }
)
