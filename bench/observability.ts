/**
 * `npm run bench:observability`: what the gateway's observability costs — the same closed loop of
 * non-streaming requests through two gateways on one instant simulator, one with the access log
 * (JSON, at info), the audit log (file sink) and a `/metrics` scrape every second, the other with
 * all of them off (warnings only, no access line, no audit sink, nobody scraping). Rounds alternate
 * between the two so that a machine whose load drifts weighs on both alike. Prints each round, the
 * totals, and `SUMMARY: observability on/off throughput ×…`. See bench/README.md.
 *
 * Environment (all optional):
 *   BENCH_SECONDS=2            measured seconds per round and gateway
 *   BENCH_WARMUP_SECONDS=0.5   warm-up seconds per round and gateway
 *   BENCH_CONNECTIONS=50       concurrent connections
 *   BENCH_OBS_ROUNDS=10        rounds (each measures both gateways)
 *   BENCH_OBS_IDLE_SECONDS=15  seconds both gateways idle after start, before the first round
 *   BENCH_OBS_FIRST_WARMUP_SECONDS=5
 *                              seconds of unmeasured load on each gateway after the idle, before the first round
 *   BENCH_OBS_SCRAPE_MS=1000   how often /metrics is scraped while the observed gateway is measured
 *   BENCH_OBS_NODE_ARGS=...    extra node flags for both gateways (e.g. --cpu-prof --cpu-prof-dir=<dir>)
 *   BENCH_OBS_PARTS=access,audit,scrape
 *                              what the observed gateway has on (the others as the unobserved one has
 *                              them): to measure each part's share
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { request } from "undici"
import type { Child } from "./lib/children.js"
import { cpuMs, freePort, killAllNow, start, stopAll, waitReady } from "./lib/children.js"
import { closedLoopSettings, positive } from "./lib/env.js"
import { closedLoop, pool } from "./lib/load.js"
import { fmt, summarize, table } from "./lib/stats.js"

const ROOT = fileURLToPath(new URL("..", import.meta.url))
const SLUICE_BIN = join(ROOT, "packages/server/bin/sluice.js")
const MODEL = "bench-model"

/** The parts `BENCH_OBS_PARTS` names (a comma-separated list of `access`, `audit` and `scrape`). */
function partsOf(text: string): ReadonlySet<"access" | "audit" | "scrape"> {
  const names = text
    .split(",")
    .map((n) => n.trim())
    .filter((n) => n !== "")
  const unknown = names.filter((n) => n !== "access" && n !== "audit" && n !== "scrape")
  if (unknown.length > 0 || names.length === 0)
    throw new Error(`BENCH_OBS_PARTS names access, audit and scrape (some of them), not "${text}"`)
  return new Set(names as Array<"access" | "audit" | "scrape">)
}

const settings = {
  /**
   * Many short rounds rather than a few long ones: the machine's speed drifts over seconds, and
   * alternating often spreads the drift over both gateways. On a noisy day, null runs (both
   * gateways with the same config) of 3 rounds of 5 s gave ×0.83–×1.10 (22 runs, median ×0.98); of
   * 10 rounds of 2 s, ×0.950–×1.105 (9 runs, median ×1.00): none as low, too few to say more.
   */
  ...closedLoopSettings({ seconds: 2, warmupSeconds: 0.5 }),
  rounds: Math.round(positive("BENCH_OBS_ROUNDS", 10)),
  scrapeMs: positive("BENCH_OBS_SCRAPE_MS", 1000),
  /**
   * Seconds both gateways idle after start, before the first round. A Node process first loaded
   * after some seconds of idling ran some of Node's own stream code slower for the whole run (an
   * object literal in `process.nextTick` left to V8's runtime, ~1 µs a request) than one loaded at
   * once; without this idle only the gateway measured second in the first round had idled.
   */
  idleSeconds: positive("BENCH_OBS_IDLE_SECONDS", 15),
  /**
   * Seconds of load each gateway takes, unmeasured, before the first round. With only the rounds'
   * own warm-up, the gateway measured first in the first round (always the unobserved one) was
   * measured while the gateways, the simulator and the load generator were still warming up: in runs
   * where the two had the same config it used ~20% more CPU a request in that round than the other,
   * and the run's ratio came out ×1.00–×1.20 (median ×1.07 of five) instead of ×1.00.
   */
  firstWarmupSeconds: positive("BENCH_OBS_FIRST_WARMUP_SECONDS", 5),
  /** Extra `node` flags for both gateways (`--cpu-prof --cpu-prof-dir=…` compares their profiles). */
  nodeArgs: (process.env["BENCH_OBS_NODE_ARGS"] ?? "").split(/\s+/).filter((a) => a !== ""),
  /** What the observed gateway has on. */
  parts: partsOf(process.env["BENCH_OBS_PARTS"] ?? "access,audit,scrape")
}

/**
 * The gateway's `server` block with observability on (the parts `BENCH_OBS_PARTS` names, the audit
 * log written to `auditPath`) or off.
 */
const serverBlock = (port: number, auditPath: string | undefined): string => {
  const observed = auditPath !== undefined
  const log = observed && settings.parts.has("access")
  const audit = observed && settings.parts.has("audit")
  return `server:
  host: 127.0.0.1
  port: ${port}
  log: ${log ? "{ level: info, format: json, access: true }" : "{ level: warning, access: false }"}
  audit: ${audit ? `{ sink: file, path: ${JSON.stringify(auditPath)}, maxBytes: 1000000000 }` : `{ sink: "off" }`}`
}

/** A gateway in front of `upstream`, observed or not. */
const startGateway = async (
  name: string,
  upstream: string,
  dir: string,
  auditPath: string | undefined
): Promise<{ readonly name: string; readonly origin: string; readonly child: Child }> => {
  const port = await freePort()
  const config = join(dir, `${name}.yaml`)
  writeFileSync(
    config,
    `# Generated by bench/observability.ts
${serverBlock(port, auditPath)}
upstreams:
  - { id: bench-upstream, provider: openai-compatible, baseUrl: "${upstream}/v1" }
pools:
  - { id: bench, models: ["${MODEL}"], upstreams: [bench-upstream] }
`
  )
  // Both gateways' standard output goes to a file (the observed one's access log, as a deployed
  // gateway's would; see `stdoutFile`), so that the two differ only in what they observe.
  const child = start(name, process.execPath, [...settings.nodeArgs, SLUICE_BIN, "serve", "--config", config], {
    cwd: ROOT,
    env: { PORT: String(port) },
    ...(process.env["BENCH_LOG_PIPE"] !== undefined ? {} : { stdoutFile: join(dir, `${name}.log`) })
  })
  const origin = `http://127.0.0.1:${port}`
  await waitReady(child, `${origin}/health`, 60_000)
  return { name, origin, child }
}

/** Scrapes `origin`'s `/metrics` every `everyMs` until stopped; returns how many scrapes answered 200. */
const scraper = (origin: string, everyMs: number) => {
  let ok = 0
  const timer = setInterval(() => {
    request(`${origin}/metrics`).then(
      async (res) => {
        await res.body.text()
        if (res.statusCode === 200) ok++
      },
      () => {}
    )
  }, everyMs)
  return { stop: () => (clearInterval(timer), ok) }
}

/** One measured closed loop against `origin`: requests per second, latencies, failures. */
const measure = async (origin: string, pid: number) => {
  const p = pool(origin, settings.connections)
  try {
    await closedLoop(p, settings.connections, settings.warmupSeconds * 1000, MODEL)
    const before = cpuMs(pid)
    const run = await closedLoop(p, settings.connections, settings.seconds * 1000, MODEL)
    const after = cpuMs(pid)
    // The gateway's own CPU time (all its threads) over the measured loop.
    return { ...run, cpuMs: before === undefined || after === undefined ? undefined : after - before }
  } finally {
    await p.destroy()
  }
}

/** CPU microseconds per request, or undefined off Linux. */
const cpuPerRequest = (t: { readonly ok: number; readonly cpuMs: number | undefined }): number | undefined =>
  t.cpuMs === undefined || t.ok === 0 ? undefined : (t.cpuMs * 1000) / t.ok

const cpuText = (us: number | undefined): string => (us === undefined ? "-" : us.toFixed(0))

const main = async (): Promise<number> => {
  const dir = mkdtempSync(join(tmpdir(), "sluice-bench-obs-"))
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }))
  const auditPath = join(dir, "audit.jsonl")
  try {
    const simPort = await freePort()
    // prettier-ignore
    const sim = start("simulator", process.execPath, [
      SLUICE_BIN, "simulate", "--port", String(simPort), "--name", "bench-sim", "--models", MODEL, "--seed", "1",
      "--latency-ms", "0", "--ttft-ms", "0", "--tokens-per-second", "0", "--completion-tokens", "16"
    ], { cwd: ROOT })
    const upstream = `http://127.0.0.1:${simPort}`
    await waitReady(sim, `${upstream}/health`)
    const off = await startGateway("observability-off", upstream, dir, undefined)
    const on = await startGateway("observability-on", upstream, dir, auditPath)
    // Both idle alike before any load (see `idleSeconds`), then both are warmed (see `firstWarmupSeconds`).
    await new Promise((resolve) => setTimeout(resolve, settings.idleSeconds * 1000))
    for (const gateway of [off, on]) {
      const p = pool(gateway.origin, settings.connections)
      await closedLoop(p, settings.connections, settings.firstWarmupSeconds * 1000, MODEL).finally(() => p.destroy())
    }
    console.log(
      `observability bench: ${settings.rounds} rounds of ${settings.warmupSeconds} s warm-up + ${settings.seconds} s ` +
        `per gateway, ${settings.connections} connections; ` +
        (settings.parts.has("scrape")
          ? `/metrics scraped every ${settings.scrapeMs} ms on the observed one`
          : "/metrics not scraped")
    )
    const totals = {
      off: { ok: 0, ms: 0, errors: 0, latencies: [] as Array<number>, cpuMs: 0 as number | undefined },
      on: { ok: 0, ms: 0, errors: 0, latencies: [] as Array<number>, cpuMs: 0 as number | undefined }
    }
    const rows: Array<Array<string>> = []
    let scrapes = 0
    for (let round = 1; round <= settings.rounds; round++) {
      // Which goes first alternates too.
      for (const which of round % 2 === 1 ? (["off", "on"] as const) : (["on", "off"] as const)) {
        const gateway = which === "on" ? on : off
        const scraping =
          which === "on" && settings.parts.has("scrape") ? scraper(gateway.origin, settings.scrapeMs) : undefined
        const run = await measure(gateway.origin, gateway.child.pid)
        scrapes += scraping?.stop() ?? 0
        const total = totals[which]
        total.ok += run.ok
        total.ms += run.elapsedMs
        total.errors += run.errors.count
        // Not `push(...)`: a long run has more latencies than a call takes arguments.
        for (const latency of run.latencies) total.latencies.push(latency)
        total.cpuMs = total.cpuMs === undefined || run.cpuMs === undefined ? undefined : total.cpuMs + run.cpuMs
        const p = summarize(run.latencies)
        rows.push([
          String(round),
          which,
          ((run.ok / run.elapsedMs) * 1000).toFixed(0),
          fmt(p.p50),
          fmt(p.p99),
          cpuText(cpuPerRequest(run)),
          String(run.errors.count)
        ])
      }
    }
    console.log(table(["round", "observability", "req/s", "p50 ms", "p99 ms", "cpu µs/req", "errors"], rows))
    const rps = (t: { ok: number; ms: number }) => (t.ok / t.ms) * 1000
    const ratio = rps(totals.on) / rps(totals.off)
    const p50 = (t: { latencies: Array<number> }) => summarize(t.latencies).p50
    const audited = settings.parts.has("audit")
      ? readFileSync(auditPath, "utf8")
          .split("\n")
          .filter((l) => l !== "").length
      : undefined
    const errors = totals.on.errors + totals.off.errors
    console.log(
      `observed: ${[...settings.parts].join(", ")}; audit lines written: ${audited ?? "-"} (requests served with observability on, warm-ups included); /metrics scrapes: ${scrapes}`
    )
    const cpuOn = cpuPerRequest(totals.on)
    const cpuOff = cpuPerRequest(totals.off)
    const cpu =
      cpuOn === undefined || cpuOff === undefined
        ? ""
        : `, gateway CPU per request on ${cpuText(cpuOn)} µs vs off ${cpuText(cpuOff)} µs (×${fmt(cpuOn / cpuOff)})`
    console.log(
      `SUMMARY: observability on/off throughput ×${fmt(ratio)} (on ${rps(totals.on).toFixed(0)} vs off ${rps(totals.off).toFixed(0)} req/s), ` +
        `p50 on ${fmt(p50(totals.on))} ms vs off ${fmt(p50(totals.off))} ms${cpu}; errors ${errors}`
    )
    return errors > 0 || (audited !== undefined && audited < totals.on.ok) ? 1 : 0
  } finally {
    await stopAll()
  }
}

process.on("exit", () => killAllNow())
main().then(
  (code) => {
    process.exitCode = code
  },
  async (error: unknown) => {
    console.error(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    await stopAll(2_000)
    process.exit(1)
  }
)
