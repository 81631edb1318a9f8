/**
 * `npm run bench`: Sluice against a bare Node proxy and against no proxy at all, on the same simulated
 * upstream, one scenario after another. See bench/README.md for what is measured and how to read it.
 *
 * Environment (all optional):
 *   BENCH_SECONDS=5              measured seconds per target, non-streaming
 *   BENCH_WARMUP_SECONDS=1       warm-up seconds per target before measuring, non-streaming
 *   BENCH_CONNECTIONS=50         concurrent connections, non-streaming
 *   BENCH_STREAM_REQUESTS=2000   streamed requests per target and concurrency
 *   BENCH_STREAM_CONCURRENCY=1,10
 *   BENCH_COMPLETION_TOKENS=16   words per simulated answer
 *   BENCH_TARGETS=direct,bare,sluice  (add "effect" for the bare @effect/platform proxy, bench/effect-proxy.ts)
 *   BENCH_SCENARIOS=requests,streams  (add "streams1000" for memory under 1,000 concurrent slow streams)
 *   BENCH_CONCURRENT_STREAMS=1000     streams open at once in the streams1000 scenario
 *   BENCH_SLUICE_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof"   extra node flags for the gateway
 *   BENCH_EFFECT_NODE_ARGS=...   the same for the opt-in `effect` target
 *   BENCH_SIM_ARGS="--failure-rate 0.01"   extra `sluice simulate` flags (e.g. to see errors reported)
 *   BENCH_TIMEOUT_SECONDS        hard limit for the whole run (default: computed from the above)
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { cpus, tmpdir } from "node:os"
import { join } from "node:path"
import { setTimeout as sleep } from "node:timers/promises"
import { fileURLToPath } from "node:url"
import type { Child } from "./lib/children.js"
import {
  cpuMs,
  freePort,
  killAllNow,
  openFilesLimit,
  rssMb,
  rssPeakMeter,
  start,
  stop,
  stopAll,
  waitReady
} from "./lib/children.js"
import { closedLoopSettings, positive } from "./lib/env.js"
import type { Errors } from "./lib/load.js"
import { closedLoop, concurrentStreams, noErrors, pool, streamRequests } from "./lib/load.js"
import type { Summary } from "./lib/stats.js"
import { fmt, round, signed, summarize, table } from "./lib/stats.js"

const ROOT = fileURLToPath(new URL("..", import.meta.url))
const SLUICE_BIN = join(ROOT, "packages/server/bin/sluice.js")
const RESULTS_DIR = join(ROOT, "bench/results")
const MODEL = "bench-model"
const TTFB_BAR_MS = 1
/** The p99 bar of added time to first content: at most this much over the bare proxy's p99. */
const TTFB_P99_BAR_MS = 3
/** The memory bars of the gateway, MB: idle, and peak with 1,000 streams open. */
const IDLE_RSS_BAR_MB = 100
const STREAMS_PEAK_RSS_BAR_MB = 200
/**
 * The slow simulator of the `streams1000` scenario: headers at once, the first word after
 * `ttftMs`, then `tokensPerSecond` words a second — a stream stays open ~10 s, long enough for all of
 * them to be open together even when a cold gateway takes seconds to open the last ones.
 */
const SLOW_STREAM = { ttftMs: 2_000, tokensPerSecond: 2, completionTokens: 16 }
const SLOW_STREAM_MS = SLOW_STREAM.ttftMs + (SLOW_STREAM.completionTokens / SLOW_STREAM.tokensPerSecond) * 1000
/** How long the streams1000 scenario waits for its streams: the ramp, one stream, and 10 s of slack. */
const concurrentCapMs = (rampMs: number): number => rampMs + SLOW_STREAM_MS + 10_000
/** A target is left alone this long after it is ready before its idle memory is read. */
const SETTLE_MS = 2_000

// ---------------------------------------------------------------------------------------------------
// Settings

const list = (name: string, fallback: string): Array<string> =>
  (process.env[name] ?? fallback)
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")

type TargetName = "direct" | "bare" | "effect" | "sluice"
type ScenarioName = "requests" | "streams" | "streams1000"
/** Every scenario, in run order; `streams1000` (memory under many open streams) is opt-in. */
const SCENARIO_NAMES: ReadonlyArray<ScenarioName> = ["requests", "streams", "streams1000"]
const DEFAULT_SCENARIOS = "requests,streams"
/** Every target, in run order; `effect` (the bare @effect/platform floor) is opt-in. */
const TARGET_NAMES: ReadonlyArray<TargetName> = ["direct", "bare", "effect", "sluice"]
const DEFAULT_TARGETS = "direct,bare,sluice"
/** How the tables name each target. */
const LABELS: Readonly<Record<TargetName, string>> = {
  direct: "direct (no proxy)",
  bare: "bare proxy",
  effect: "effect floor",
  sluice: "sluice"
}

const settings = (() => {
  const targets = list("BENCH_TARGETS", DEFAULT_TARGETS)
  for (const t of targets) {
    if (!TARGET_NAMES.includes(t as TargetName)) {
      throw new Error(`BENCH_TARGETS: unknown target '${t}' (known: ${TARGET_NAMES.join(", ")})`)
    }
  }
  const scenarios = list("BENCH_SCENARIOS", DEFAULT_SCENARIOS)
  for (const s of scenarios) {
    if (!SCENARIO_NAMES.includes(s as ScenarioName)) {
      throw new Error(`BENCH_SCENARIOS: unknown scenario '${s}' (known: ${SCENARIO_NAMES.join(", ")})`)
    }
  }
  const streamConcurrency = list("BENCH_STREAM_CONCURRENCY", "1,10").map((s) => {
    const n = Number(s)
    if (!Number.isInteger(n) || n <= 0) throw new Error(`BENCH_STREAM_CONCURRENCY: bad value '${s}'`)
    return n
  })
  const streamRequests = Math.round(positive("BENCH_STREAM_REQUESTS", 2000))
  const closedLoop = closedLoopSettings()
  const s = {
    ...closedLoop,
    streamRequests,
    streamConcurrency,
    completionTokens: Math.round(positive("BENCH_COMPLETION_TOKENS", 16)),
    targets: TARGET_NAMES.filter((t) => targets.includes(t)),
    scenarios: SCENARIO_NAMES.filter((s) => scenarios.includes(s)),
    concurrentStreams: Math.round(positive("BENCH_CONCURRENT_STREAMS", 1000)),
    /**
     * The streams1000 scenario also reads idle memory this long after the target is ready: V8's
     * memory reducer gives back the start-up heap only after some seconds without work.
     */
    settledIdleSeconds: positive("BENCH_IDLE_SETTLED_SECONDS", 20),
    /** Requests of the streams1000 scenario are sent over this long, not all in one instant. */
    concurrentRampMs: 1_000,
    sluiceNodeArgs: (process.env["BENCH_SLUICE_NODE_ARGS"] ?? "").split(/\s+/).filter((a) => a !== ""),
    effectNodeArgs: (process.env["BENCH_EFFECT_NODE_ARGS"] ?? "").split(/\s+/).filter((a) => a !== ""),
    bareNodeArgs: (process.env["BENCH_BARE_NODE_ARGS"] ?? "").split(/\s+/).filter((a) => a !== ""),
    simulatorArgs: (process.env["BENCH_SIM_ARGS"] ?? "").split(/\s+/).filter((a) => a !== ""),
    /**
     * Cap on one streaming run (warm-up included), so a slow target cannot stall the bench: 8 s, or
     * more when the warm-up and the streams asked for would not fit at 300 streams a second.
     */
    streamCapSeconds: Math.max(8, Math.ceil(closedLoop.warmupSeconds + 1 + streamRequests / 300))
  }
  const has = (name: ScenarioName) => s.scenarios.includes(name)
  const nonStreaming = has("requests") ? s.targets.length * (s.warmupSeconds + s.seconds + 1) : 0
  const streaming = has("streams") ? s.targets.length * s.streamConcurrency.length * (s.streamCapSeconds + 1) : 0
  // Each target of streams1000 starts afresh (up to ~10 s for the gateway), settles, then streams.
  const concurrent = has("streams1000")
    ? 10 + s.targets.length * (10 + (SETTLE_MS + s.concurrentRampMs + concurrentCapMs(s.concurrentRampMs)) / 1000)
    : 0
  return {
    ...s,
    timeoutSeconds: positive("BENCH_TIMEOUT_SECONDS", 40 + nonStreaming + streaming + concurrent)
  }
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

/** Starts `sluice simulate`: by default instant (0 ms latency and TTFT, no pacing), or paced as `pace` says. */
const startSimulator = async (
  pace: { readonly ttftMs: number; readonly tokensPerSecond: number; readonly completionTokens: number } = {
    ttftMs: 0,
    tokensPerSecond: 0,
    completionTokens: settings.completionTokens
  }
): Promise<{ child: Child; origin: string }> => {
  const port = await freePort()
  // prettier-ignore
  const args = [
    SLUICE_BIN, "simulate", "--port", String(port), "--name", "bench-sim", "--models", MODEL, "--seed", "1",
    "--latency-ms", "0", "--ttft-ms", String(pace.ttftMs), "--tokens-per-second", String(pace.tokensPerSecond),
    "--completion-tokens", String(pace.completionTokens), ...settings.simulatorArgs
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
  return { name: "bare", label: LABELS.bare, origin, child }
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
  return { name: "effect", label: LABELS.effect, origin, child }
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
  // Its access log (a line per request, on by default) goes to a file, as a deployed gateway's would:
  // read through a pipe, every line would cost this process — the load generator — too (see `stdoutFile`).
  const child = start("sluice", node, [...settings.sluiceNodeArgs, SLUICE_BIN, "serve", "--config", config], {
    cwd: ROOT,
    env: { PORT: String(port) },
    ...(process.env["BENCH_LOG_PIPE"] === undefined ? { stdoutFile: join(configDir, "sluice.log") } : {})
  })
  const origin = `http://127.0.0.1:${port}`
  await waitReady(child, `${origin}/health`, 60_000)
  return { name: "sluice", label: LABELS.sluice, origin, child }
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
    // Warmed up for as long as the non-streaming scenario (at least 10 streams a connection): the
    // stream's own path — events scanned, relayed, released — is compiled by V8's optimizing tier
    // only after some thousands of streams, and a gateway in service has long since done that.
    const warmCount = Math.max(50, concurrency * 10)
    const warmStarted = performance.now()
    const warmMs = Math.min(capMs / 4, settings.warmupSeconds * 1000)
    const warm = await streamRequests(p, concurrency, Number.MAX_SAFE_INTEGER, MODEL, warmMs, warmCount)
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

/** Resident memory of each process now, MB (undefined for no process, or off Linux). */
const rssOf = (children: ReadonlyArray<{ readonly name: string; readonly child: Child | undefined }>) =>
  Object.fromEntries(
    children.flatMap(({ child, name }) => (child === undefined ? [] : [[name, rssMb(child.pid)] as const]))
  ) as Record<string, number | undefined>

interface ConcurrentRun {
  readonly target: TargetName
  readonly ok: number
  readonly errors: Errors
  /** The most streams the load generator had open at once; less than the count means they did not overlap. */
  readonly maxOpen: number
  readonly elapsedMs: number
  readonly total: Summary
  /** Resident memory of the target, MB: idle before the load, the peak during it, 1 s after it. */
  readonly idleRssMb: number | undefined
  /** Idle again, `settledIdleSeconds` after ready (once V8's memory reducer has run), before the load. */
  readonly settledIdleRssMb: number | undefined
  readonly peakRssMb: number | undefined
  readonly afterRssMb: number | undefined
  /** (peak − idle) / streams, KB (10^3 bytes). */
  readonly perStreamKb: number | undefined
  readonly simulatorPeakRssMb: number | undefined
  readonly cpu: Cpu
}

/** Fails early, saying what to do, when a process may not open the `needed` sockets and files. */
const checkOpenFiles = (name: string, pid: number | "self", needed: number): void => {
  const limit = openFilesLimit(pid)
  if (limit !== undefined && limit < needed) {
    throw new Error(
      `${name} may open ${limit} files, and ${settings.concurrentStreams} concurrent streams need ~${needed}: ` +
        `raise the limit (ulimit -n ${2 * needed}) or lower BENCH_CONCURRENT_STREAMS`
    )
  }
}

/**
 * The streams1000 scenario on one freshly started target: idle memory first, then every stream
 * opened (over the ramp) and held open by the slow simulator while the target's memory is sampled.
 */
const concurrentRun = async (target: Target, simulator: Child): Promise<ConcurrentRun> => {
  const count = settings.concurrentStreams
  // A proxy holds two sockets a stream (client and upstream), the simulator and this process one.
  if (target.child !== undefined) checkOpenFiles(target.label, target.child.pid, 2 * count + 100)
  await sleep(SETTLE_MS)
  const idle = target.child === undefined ? undefined : rssMb(target.child.pid)
  await sleep(Math.max(0, settings.settledIdleSeconds * 1000 - SETTLE_MS))
  const settled = target.child === undefined ? undefined : rssMb(target.child.pid)
  const p = pool(target.origin, count)
  try {
    const targetPeak = target.child === undefined ? undefined : rssPeakMeter(target.child.pid)
    const simulatorPeak = rssPeakMeter(simulator.pid)
    const meter = cpuMeter(target, simulator)
    const capMs = concurrentCapMs(settings.concurrentRampMs)
    const run = await concurrentStreams(p, count, MODEL, settings.concurrentRampMs, capMs)
    const cpu = meter()
    const peak = targetPeak?.stop()
    const simulatorPeakRssMb = simulatorPeak.stop()
    await p.close()
    await sleep(1_000)
    return {
      target: target.name,
      ok: run.ok,
      errors: run.errors,
      maxOpen: run.maxOpen,
      elapsedMs: run.elapsedMs,
      total: summarize(run.total),
      idleRssMb: idle,
      settledIdleRssMb: settled,
      peakRssMb: peak,
      afterRssMb: target.child === undefined ? undefined : rssMb(target.child.pid),
      perStreamKb: idle === undefined || peak === undefined ? undefined : ((peak - idle) * 1000) / count,
      simulatorPeakRssMb,
      cpu
    }
  } finally {
    if (!p.closed && !p.destroyed) await p.destroy()
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
  const addedTtfbP99VsBare = (sluice?.ttfb.p99 ?? Number.NaN) - (bare?.ttfb.p99 ?? Number.NaN)
  const sluiceAddedP99VsDirect = (sluice?.ttfb.p99 ?? Number.NaN) - (direct?.ttfb.p99 ?? Number.NaN)
  const bareAddedP99VsDirect = (bare?.ttfb.p99 ?? Number.NaN) - (direct?.ttfb.p99 ?? Number.NaN)
  return {
    sluiceAddedTtfbP50VsBareMs: addedTtfbP50VsBare,
    sluiceAddedTtfbP99VsBareMs: addedTtfbP99VsBare,
    sluiceAddedTtfbP99VsDirectMs: sluiceAddedP99VsDirect,
    bareAddedTtfbP99VsDirectMs: bareAddedP99VsDirect,
    sluiceAddedTtfbP50VsDirectMs: (sluice?.ttfb.p50 ?? Number.NaN) - (direct?.ttfb.p50 ?? Number.NaN),
    bareAddedTtfbP50VsDirectMs: (bare?.ttfb.p50 ?? Number.NaN) - (direct?.ttfb.p50 ?? Number.NaN),
    sluiceTotalP50OverBare: ratio(sluice?.total.p50, bare?.total.p50),
    sluiceTotalP99OverBare: ratio(sluice?.total.p99, bare?.total.p99),
    sluiceTotalP50OverDirect: ratio(sluice?.total.p50, direct?.total.p50),
    // Only with the opt-in `effect` target (NaN otherwise).
    sluiceAddedTtfbP50VsEffectMs: (sluice?.ttfb.p50 ?? Number.NaN) - (effect?.ttfb.p50 ?? Number.NaN),
    effectAddedTtfbP50VsBareMs: (effect?.ttfb.p50 ?? Number.NaN) - (bare?.ttfb.p50 ?? Number.NaN),
    ttfbBarMs: TTFB_BAR_MS,
    ttfbBarMet: Number.isFinite(addedTtfbP50VsBare) ? addedTtfbP50VsBare < TTFB_BAR_MS : null,
    // The issue's alternative, "within 2 ms of what the bare proxy adds to the direct p99", is the
    // same difference (the direct p99 cancels out) held to 2 ms, which this bar already admits.
    ttfbP99BarMet: Number.isFinite(addedTtfbP99VsBare) ? addedTtfbP99VsBare <= TTFB_P99_BAR_MS : null
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

/** Starts `name` in front of `upstream` (nothing to start for direct). */
const startTarget = (name: TargetName, upstream: string, configDir: string): Promise<Target> => {
  switch (name) {
    case "direct":
      return Promise.resolve({ name, label: LABELS.direct, origin: upstream, child: undefined })
    case "bare":
      return startBare(upstream)
    case "effect":
      return startEffect(upstream)
    case "sluice":
      return startSluice(upstream, configDir)
  }
}

const rssCell = (mb: number | undefined): string => (mb === undefined ? "-" : mb.toFixed(0))
const barVerdict = (value: number | undefined, bar: number): string =>
  value === undefined ? "n/a" : value <= bar ? "PASS" : "FAIL"

interface ProxyRuns {
  readonly nsRuns: ReadonlyArray<NonStreamingRun>
  readonly sRuns: ReadonlyArray<{ readonly concurrency: number; readonly runs: ReadonlyArray<StreamingRun> }>
  /** Resident memory (MB) of each process, by target name and `simulator`: idle before any load, and after the run. */
  readonly idleRssMb: Record<string, number | undefined>
  readonly afterRssMb: Record<string, number | undefined>
}

/** The requests and streams scenarios, all targets in front of one instant simulator; prints their tables. */
const proxyScenarios = async (configDir: string): Promise<ProxyRuns> => {
  const t0 = performance.now()
  const sim = await startSimulator()
  const targets = await Promise.all(settings.targets.map((name) => startTarget(name, sim.origin, configDir)))
  const proxies = targets.filter((t) => t.child !== undefined)
  log(
    `ready in ${((performance.now() - t0) / 1000).toFixed(1)} s: ` +
      [`simulator ${sim.origin}`, ...proxies.map((t) => `${t.name} ${t.origin}`)].join(", ")
  )
  const processes = [
    { name: "simulator", child: sim.child },
    ...proxies.flatMap((t) => (t.child === undefined ? [] : [{ name: t.name as string, child: t.child }]))
  ]
  await sleep(SETTLE_MS)
  const idleRssMb = rssOf(processes)
  const sluiceIdle = idleRssMb["sluice"]
  log(
    `idle RSS (MB, ${SETTLE_MS / 1000} s after ready, before any load): ` +
      processes.map(({ name }) => `${name} ${rssCell(idleRssMb[name])}`).join(", ") +
      (sluiceIdle === undefined
        ? ""
        : ` [${barVerdict(sluiceIdle, IDLE_RSS_BAR_MB)}: sluice bar ≤ ${IDLE_RSS_BAR_MB} MB]`)
  )
  log()

  const nsRuns: Array<NonStreamingRun> = []
  if (settings.scenarios.includes("requests")) {
    for (const target of targets) {
      process.stdout.write(`non-streaming → ${target.label} ... `)
      const run = await nonStreaming(target, sim.child)
      nsRuns.push(run)
      log(
        `${run.rps.toFixed(0)} req/s, p50 ${fmt(run.latency.p50)} ms${run.errors.count > 0 ? `, ${run.errors.count} ERRORS` : ""}`
      )
    }
  }
  const sRuns: Array<{ concurrency: number; runs: Array<StreamingRun> }> = []
  if (settings.scenarios.includes("streams")) {
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
  }
  const afterRssMb = rssOf(processes)
  await Promise.all(processes.map(({ child }) => stop(child)))

  const label = (name: TargetName): string => LABELS[name]
  if (nsRuns.length > 0) {
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
  }

  for (const { concurrency, runs } of sRuns) {
    const c = { concurrency, ...streamingComparison(runs) }
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
    const p99Verdict = c.ttfbP99BarMet === null ? "n/a" : c.ttfbP99BarMet ? "PASS" : "FAIL"
    log(
      `  sluice vs bare:   added TTFB p50 ${signed(c.sluiceAddedTtfbP50VsBareMs)} ms ` +
        `[${verdict}: bar < ${TTFB_BAR_MS} ms], p99 ${signed(c.sluiceAddedTtfbP99VsBareMs)} ms ` +
        `[${p99Verdict}: bar ≤ ${TTFB_P99_BAR_MS} ms]; ` +
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
  log()
  log(`RSS after the run (MB): ` + processes.map(({ name }) => `${name} ${rssCell(afterRssMb[name])}`).join(", "))
  return { nsRuns, sRuns, idleRssMb, afterRssMb }
}

/**
 * streams1000: memory with many streams open at once. Each target starts afresh in front of a slow
 * simulator (so its idle memory is that of a process that has served nothing), one at a time, and is
 * stopped after its run; prints the table.
 */
const concurrentScenario = async (configDir: string): Promise<Array<ConcurrentRun>> => {
  const count = settings.concurrentStreams
  checkOpenFiles("the load generator", "self", count + 100)
  log()
  log(
    `streams1000: ${count} concurrent streams per target, sent over ${settings.concurrentRampMs} ms; simulator: ` +
      `first word after ${SLOW_STREAM.ttftMs} ms, then ${SLOW_STREAM.tokensPerSecond} words/s, ` +
      `${SLOW_STREAM.completionTokens} words (~${(SLOW_STREAM_MS / 1000).toFixed(0)} s a stream)`
  )
  const sim = await startSimulator(SLOW_STREAM)
  checkOpenFiles("the simulator", sim.child.pid, count + 100)
  const runs: Array<ConcurrentRun> = []
  try {
    for (const name of settings.targets) {
      process.stdout.write(`${count} streams → ${LABELS[name]} ... `)
      const target = await startTarget(name, sim.origin, configDir)
      try {
        const run = await concurrentRun(target, sim.child)
        runs.push(run)
        log(
          `${run.ok} ok, ${run.maxOpen} open at once` +
            (run.peakRssMb === undefined
              ? ""
              : `, RSS idle ${rssCell(run.idleRssMb)} → peak ${rssCell(run.peakRssMb)} MB`) +
            (run.errors.count > 0 ? `, ${run.errors.count} ERRORS` : "")
        )
      } finally {
        if (target.child !== undefined) await stop(target.child)
      }
    }
  } finally {
    await stop(sim.child)
  }
  log()
  log(`CONCURRENT STREAMS — ${count} open at once; resident memory of the target process in MB (KB = 1000 bytes)`)
  log(
    table(
      [
        "target",
        "ok",
        "errors",
        "max open",
        "idle RSS",
        `idle ${settings.settledIdleSeconds} s`,
        "peak RSS",
        "per stream KB",
        "RSS 1 s after",
        "total p50 ms",
        "total max ms",
        "cpu proxy",
        "sim peak RSS"
      ],
      runs.map((r) => [
        LABELS[r.target],
        String(r.ok),
        errorCell(r.errors, noErrors()),
        String(r.maxOpen) + (r.maxOpen < count ? " !!" : ""),
        rssCell(r.idleRssMb),
        rssCell(r.settledIdleRssMb),
        rssCell(r.peakRssMb),
        r.perStreamKb === undefined ? "-" : r.perStreamKb.toFixed(0),
        rssCell(r.afterRssMb),
        fmt(r.total.p50, 0),
        fmt(r.total.max, 0),
        pct(r.cpu.targetPct),
        rssCell(r.simulatorPeakRssMb)
      ])
    )
  )
  const sluice = byName(runs, "sluice")
  const bare = byName(runs, "bare")
  if (sluice !== undefined) {
    log()
    log(
      `  sluice: idle ${rssCell(sluice.idleRssMb)} MB [${barVerdict(sluice.idleRssMb, IDLE_RSS_BAR_MB)}: bar ≤ ${IDLE_RSS_BAR_MB} MB], ` +
        `${settings.settledIdleSeconds} s after ready ${rssCell(sluice.settledIdleRssMb)} MB ` +
        `[${barVerdict(sluice.settledIdleRssMb, IDLE_RSS_BAR_MB)}], ` +
        `peak ${rssCell(sluice.peakRssMb)} MB [${barVerdict(sluice.peakRssMb, STREAMS_PEAK_RSS_BAR_MB)}: bar ≤ ${STREAMS_PEAK_RSS_BAR_MB} MB], ` +
        `${fmt(sluice.perStreamKb, 0)} KB a stream` +
        (bare === undefined
          ? ""
          : ` (bare proxy: idle ${rssCell(bare.idleRssMb)} MB, peak ${rssCell(bare.peakRssMb)} MB, ${fmt(bare.perStreamKb, 0)} KB a stream)`)
    )
  }
  return runs
}

const main = async (): Promise<number> => {
  const startedAt = new Date()
  const configDir = mkdtempSync(join(tmpdir(), "sluice-bench-"))
  tempDirs.push(configDir)
  const has = (name: ScenarioName) => settings.scenarios.includes(name)
  try {
    log(
      `Sluice bench — node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model ?? "?"}); ` +
        `targets: ${settings.targets.join(", ")}; scenarios: ${settings.scenarios.join(", ")}`
    )
    log(
      [
        has("requests")
          ? `non-streaming: ${settings.connections} connections, ${settings.warmupSeconds} s warm-up + ${settings.seconds} s per target`
          : undefined,
        has("streams")
          ? `streaming: ${settings.streamRequests} requests at concurrency ${settings.streamConcurrency.join(" and ")}`
          : undefined,
        has("requests") || has("streams") ? `simulator: 0 ms latency, ${settings.completionTokens} tokens` : undefined,
        has("streams1000") ? `${settings.concurrentStreams} concurrent slow streams` : undefined,
        `hard limit ${settings.timeoutSeconds.toFixed(0)} s`
      ]
        .filter((part) => part !== undefined)
        .join("; ")
    )
    if (settings.sluiceNodeArgs.length > 0) log(`sluice runs with node ${settings.sluiceNodeArgs.join(" ")}`)
    if (settings.simulatorArgs.length > 0) log(`simulator runs with ${settings.simulatorArgs.join(" ")}`)
    if (settings.effectNodeArgs.length > 0) log(`effect floor runs with node ${settings.effectNodeArgs.join(" ")}`)
    log()

    const t0 = performance.now()
    const proxyRuns =
      has("requests") || has("streams")
        ? await proxyScenarios(configDir)
        : { nsRuns: [], sRuns: [], idleRssMb: {}, afterRssMb: {} }
    const { nsRuns, sRuns } = proxyRuns
    const cRuns = has("streams1000") ? await concurrentScenario(configDir) : []

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
    for (const r of cRuns) {
      allErrors.push(...describeErrors(`${settings.concurrentStreams} concurrent streams ${r.target}`, r.errors))
      if (r.maxOpen < settings.concurrentStreams) {
        allErrors.push(
          `  ${settings.concurrentStreams} concurrent streams ${r.target}: only ${r.maxOpen} were open at once — the peak is not that of ${settings.concurrentStreams} streams`
        )
      }
    }
    const errorTotal =
      nsRuns.reduce((n, r) => n + r.errors.count + r.warmupErrors.count, 0) +
      sRuns.reduce((n, s) => n + s.runs.reduce((m, r) => m + r.errors.count + r.warmupErrors.count, 0), 0) +
      cRuns.reduce((n, r) => n + r.errors.count, 0)
    const skippedTotal = sRuns.reduce((n, s) => n + s.runs.reduce((m, r) => m + r.skipped, 0), 0)
    const notConcurrent = cRuns.filter((r) => r.maxOpen < settings.concurrentStreams).length

    // Summary
    const ns = nonStreamingComparison(nsRuns)
    const streamComparisons = sRuns.map(({ concurrency, runs }) => ({ concurrency, ...streamingComparison(runs) }))
    const sluiceConcurrent = byName(cRuns, "sluice")
    const bareConcurrent = byName(cRuns, "bare")
    const idleSluice = proxyRuns.idleRssMb["sluice"] ?? sluiceConcurrent?.idleRssMb
    const parts = [
      ...(nsRuns.length === 0
        ? []
        : [
            `non-stream sluice/bare rps ×${fmt(ns.sluiceRpsOverBare)} (sluice ${byName(nsRuns, "sluice")?.rps.toFixed(0) ?? "-"} vs bare ${byName(nsRuns, "bare")?.rps.toFixed(0) ?? "-"} vs direct ${byName(nsRuns, "direct")?.rps.toFixed(0) ?? "-"} req/s), ` +
              `added p50 ${signed(ns.sluiceAddedP50VsBareMs)} ms, p99 ${signed(ns.sluiceAddedP99VsBareMs)} ms`
          ]),
      ...streamComparisons.map(
        (c) =>
          `stream c=${c.concurrency} added TTFB p50 ${signed(c.sluiceAddedTtfbP50VsBareMs)} ms ` +
          `(${c.ttfbBarMet === null ? "n/a" : c.ttfbBarMet ? "PASS" : "FAIL"} <${TTFB_BAR_MS} ms), ` +
          `p99 ${signed(c.sluiceAddedTtfbP99VsBareMs)} ms (${c.ttfbP99BarMet === null ? "n/a" : c.ttfbP99BarMet ? "PASS" : "FAIL"} ≤${TTFB_P99_BAR_MS} ms), ` +
          `total p50 ×${fmt(c.sluiceTotalP50OverBare)}`
      ),
      ...(idleSluice === undefined
        ? []
        : [
            `idle RSS sluice ${rssCell(idleSluice)} MB (${barVerdict(idleSluice, IDLE_RSS_BAR_MB)} ≤${IDLE_RSS_BAR_MB}) vs bare ${rssCell(proxyRuns.idleRssMb["bare"] ?? bareConcurrent?.idleRssMb)} MB`
          ]),
      ...(sluiceConcurrent === undefined
        ? []
        : [
            `${settings.concurrentStreams} streams peak RSS sluice ${rssCell(sluiceConcurrent.peakRssMb)} MB ` +
              `(${barVerdict(sluiceConcurrent.peakRssMb, STREAMS_PEAK_RSS_BAR_MB)} ≤${STREAMS_PEAK_RSS_BAR_MB}), ${fmt(sluiceConcurrent.perStreamKb, 0)} KB a stream` +
              (bareConcurrent === undefined
                ? ""
                : ` vs bare ${rssCell(bareConcurrent.peakRssMb)} MB, ${fmt(bareConcurrent.perStreamKb, 0)} KB a stream`)
          ]),
      `errors ${errorTotal}`
    ]
    const summaryLine = `SUMMARY: ${parts.join("; ")}`
    log()
    if (errorTotal > 0 || skippedTotal > 0 || notConcurrent > 0) {
      const bar = "!".repeat(100)
      log(bar)
      log(
        `!!! ${errorTotal} REQUEST(S) FAILED${skippedTotal > 0 ? `, ${skippedTotal} NOT SENT (time cap)` : ""}` +
          `${notConcurrent > 0 ? `, ${notConcurrent} CONCURRENT RUN(S) WITH FEWER STREAMS OPEN AT ONCE` : ""} — ` +
          `the figures above are NOT trustworthy`
      )
      for (const line of allErrors) log(line)
      log(bar)
      log()
    }
    log(summaryLine)

    // JSON
    const memoryJson = (mb: Record<string, number | undefined>) =>
      Object.fromEntries(Object.entries(mb).map(([k, v]) => [k, v === undefined ? null : round(v, 1)]))
    const results = {
      startedAt: startedAt.toISOString(),
      durationSeconds: round((performance.now() - t0) / 1000, 1),
      environment: { node: process.version, cpus: cpus().length, cpuModel: cpus()[0]?.model ?? null },
      settings,
      memory: { idleRssMb: memoryJson(proxyRuns.idleRssMb), afterRunRssMb: memoryJson(proxyRuns.afterRssMb) },
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
      concurrentStreams:
        cRuns.length === 0
          ? null
          : {
              streams: settings.concurrentStreams,
              rampMs: settings.concurrentRampMs,
              simulator: SLOW_STREAM,
              bars: { idleRssMb: IDLE_RSS_BAR_MB, peakRssMb: STREAMS_PEAK_RSS_BAR_MB },
              targets: Object.fromEntries(
                cRuns.map((r) => [
                  r.target,
                  {
                    ok: r.ok,
                    errors: r.errors,
                    maxOpen: r.maxOpen,
                    elapsedMs: round(r.elapsedMs, 1),
                    totalMs: summaryJson(r.total),
                    idleRssMb: r.idleRssMb === undefined ? null : round(r.idleRssMb, 1),
                    settledIdleRssMb: r.settledIdleRssMb === undefined ? null : round(r.settledIdleRssMb, 1),
                    peakRssMb: r.peakRssMb === undefined ? null : round(r.peakRssMb, 1),
                    afterRssMb: r.afterRssMb === undefined ? null : round(r.afterRssMb, 1),
                    perStreamKb: r.perStreamKb === undefined ? null : round(r.perStreamKb, 1),
                    simulatorPeakRssMb: r.simulatorPeakRssMb === undefined ? null : round(r.simulatorPeakRssMb, 1),
                    cpu: cpuJson(r.cpu)
                  }
                ])
              )
            },
      errors: errorTotal,
      skipped: skippedTotal,
      summary: summaryLine
    }
    mkdirSync(RESULTS_DIR, { recursive: true })
    const file = join(RESULTS_DIR, "latest.json")
    writeFileSync(file, await formatJson(file, JSON.stringify(results, null, 2) + "\n"))
    log(`results: ${file}`)
    return errorTotal > 0 || skippedTotal > 0 || notConcurrent > 0 ? 1 : 0
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
