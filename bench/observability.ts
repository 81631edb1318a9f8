/**
 * `npm run bench:observability`: what the gateway's observability costs — the same closed loop of
 * non-streaming requests through gateways on one instant simulator, half of them with the access
 * log (JSON, at info), the audit log (file sink) and a `/metrics` scrape every second, the other
 * half with all of them off (warnings only, no access line, no audit sink, nobody scraping). Rounds
 * take the gateways in turn so that a machine whose load drifts weighs on all alike. Prints each
 * round, each gateway's totals, and `SUMMARY: observability on/off throughput ×…`. See bench/README.md.
 *
 * Environment (all optional):
 *   BENCH_SECONDS=2            measured seconds per round and gateway
 *   BENCH_WARMUP_SECONDS=0.5   warm-up seconds per round and gateway
 *   BENCH_CONNECTIONS=50       concurrent connections
 *   BENCH_OBS_GATEWAYS=3       gateways of each kind (observed and not), each its own process
 *   BENCH_OBS_ROUNDS=6         rounds (each measures every gateway)
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
  /**
   * Gateways of each kind. One process of a config ran faster than another of the same config for a
   * whole run, in nearly every round: in a null run, one ran 8% less CPU a request than the other on
   * its event loop, spread over most of its functions (V8 compiled and inlined them differently), and
   * was faster in 9 of 10 rounds. With one process of each kind, that drew the run's ratio; the
   * ratio of the sums over several of each draws it less.
   */
  gateways: Math.round(positive("BENCH_OBS_GATEWAYS", 3)),
  rounds: Math.round(positive("BENCH_OBS_ROUNDS", 6)),
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

/** A gateway process. */
interface Gateway {
  readonly name: string
  readonly origin: string
  readonly child: Child
  readonly totals: Totals
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

type Kind = "on" | "off"

/** A gateway's measured totals. */
interface Totals {
  ok: number
  ms: number
  errors: number
  latencies: Array<number>
  cpuMs: number | undefined
}

const totalsOf = (): Totals => ({ ok: 0, ms: 0, errors: 0, latencies: [], cpuMs: 0 })

const add = (total: Totals, run: Awaited<ReturnType<typeof measure>>): void => {
  total.ok += run.ok
  total.ms += run.elapsedMs
  total.errors += run.errors.count
  // Not `push(...)`: a long run has more latencies than a call takes arguments.
  for (const latency of run.latencies) total.latencies.push(latency)
  total.cpuMs = total.cpuMs === undefined || run.cpuMs === undefined ? undefined : total.cpuMs + run.cpuMs
}

/** Requests per second while measured. */
const rps = (t: Totals): number => (t.ok / t.ms) * 1000

/**
 * The order round `round` (from 1) measures the gateways in: pairs of one of each kind, the pairs
 * rotated from round to round, the unobserved one first in odd rounds and second in even ones.
 */
const orderOf = <G>(round: number, pairs: ReadonlyArray<{ readonly off: G; readonly on: G }>): Array<[Kind, G]> => {
  const order: Array<[Kind, G]> = []
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[(i + round - 1) % pairs.length]!
    const kinds: ReadonlyArray<Kind> = round % 2 === 1 ? ["off", "on"] : ["on", "off"]
    for (const kind of kinds) order.push([kind, pair[kind]])
  }
  return order
}

const main = async (): Promise<number> => {
  const dir = mkdtempSync(join(tmpdir(), "sluice-bench-obs-"))
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }))
  try {
    const simPort = await freePort()
    // prettier-ignore
    const sim = start("simulator", process.execPath, [
      SLUICE_BIN, "simulate", "--port", String(simPort), "--name", "bench-sim", "--models", MODEL, "--seed", "1",
      "--latency-ms", "0", "--ttft-ms", "0", "--tokens-per-second", "0", "--completion-tokens", "16"
    ], { cwd: ROOT })
    const upstream = `http://127.0.0.1:${simPort}`
    await waitReady(sim, `${upstream}/health`)
    const pairs: Array<{ off: Gateway; on: Gateway & { readonly auditPath: string } }> = []
    for (let i = 1; i <= settings.gateways; i++) {
      const auditPath = join(dir, `audit-${i}.jsonl`)
      const off = { ...(await startGateway(`observability-off-${i}`, upstream, dir, undefined)), totals: totalsOf() }
      const on = {
        ...(await startGateway(`observability-on-${i}`, upstream, dir, auditPath)),
        totals: totalsOf(),
        auditPath
      }
      pairs.push({ off, on })
    }
    // All idle alike before any load (see `idleSeconds`), then all are warmed (see `firstWarmupSeconds`).
    await new Promise((resolve) => setTimeout(resolve, settings.idleSeconds * 1000))
    for (const [, gateway] of orderOf(1, pairs)) {
      const p = pool(gateway.origin, settings.connections)
      await closedLoop(p, settings.connections, settings.firstWarmupSeconds * 1000, MODEL).finally(() => p.destroy())
    }
    console.log(
      `observability bench: ${settings.gateways} gateway(s) of each kind, ${settings.rounds} rounds of ` +
        `${settings.warmupSeconds} s warm-up + ${settings.seconds} s per gateway, ${settings.connections} connections; ` +
        (settings.parts.has("scrape")
          ? `/metrics scraped every ${settings.scrapeMs} ms on the observed ones`
          : "/metrics not scraped")
    )
    const rows: Array<Array<string>> = []
    let scrapes = 0
    for (let round = 1; round <= settings.rounds; round++) {
      for (const [kind, gateway] of orderOf(round, pairs)) {
        const scraping =
          kind === "on" && settings.parts.has("scrape") ? scraper(gateway.origin, settings.scrapeMs) : undefined
        const run = await measure(gateway.origin, gateway.child.pid)
        scrapes += scraping?.stop() ?? 0
        add(gateway.totals, run)
        const p = summarize(run.latencies)
        rows.push([
          String(round),
          gateway.name,
          ((run.ok / run.elapsedMs) * 1000).toFixed(0),
          fmt(p.p50),
          fmt(p.p99),
          cpuText(cpuPerRequest(run)),
          String(run.errors.count)
        ])
      }
    }
    console.log(table(["round", "gateway", "req/s", "p50 ms", "p99 ms", "cpu µs/req", "errors"], rows))
    // Each observed gateway's audit lines (warm-ups included), read once.
    const audited = pairs.map((pair) => (settings.parts.has("audit") ? auditLines(pair.on.auditPath) : undefined))
    console.log(
      table(
        ["gateway", "req/s", "p50 ms", "cpu µs/req", "audit lines"],
        pairs
          .flatMap((pair, i) => [[pair.off, undefined] as const, [pair.on, audited[i]] as const])
          .map(([g, lines]) => {
            return [
              g.name,
              rps(g.totals).toFixed(0),
              fmt(summarize(g.totals.latencies).p50),
              cpuText(cpuPerRequest(g.totals)),
              lines === undefined ? "-" : String(lines)
            ]
          })
      )
    )
    const offs = pairs.map((pair) => pair.off.totals)
    const ons = pairs.map((pair) => pair.on.totals)
    const merged = (totals: ReadonlyArray<Totals>) => {
      const all = totalsOf()
      for (const t of totals) {
        all.ok += t.ok
        all.ms += t.ms
        for (const latency of t.latencies) all.latencies.push(latency)
        all.cpuMs = all.cpuMs === undefined || t.cpuMs === undefined ? undefined : all.cpuMs + t.cpuMs
      }
      return all
    }
    const on = merged(ons)
    const off = merged(offs)
    const ratio = rps(on) / rps(off)
    // Every observed gateway's audit file has a line for every request it served (warm-ups included).
    const short = pairs.filter((pair, i) => (audited[i] ?? Infinity) < pair.on.totals.ok).map((pair) => pair.on.name)
    const errors = [...ons, ...offs].reduce((n, t) => n + t.errors, 0)
    console.log(
      `observed: ${[...settings.parts].join(", ")}; /metrics scrapes: ${scrapes}` +
        (short.length > 0 ? `; audit files short of the requests served: ${short.join(", ")}` : "")
    )
    const cpuOn = cpuPerRequest(on)
    const cpuOff = cpuPerRequest(off)
    const cpu =
      cpuOn === undefined || cpuOff === undefined
        ? ""
        : `, gateway CPU per request on ${cpuText(cpuOn)} µs vs off ${cpuText(cpuOff)} µs (×${fmt(cpuOn / cpuOff)})`
    console.log(
      `SUMMARY: observability on/off throughput ×${fmt(ratio)} (on ${rps(on).toFixed(0)} vs off ${rps(off).toFixed(0)} req/s), ` +
        `p50 on ${fmt(summarize(on.latencies).p50)} ms vs off ${fmt(summarize(off.latencies).p50)} ms${cpu}; errors ${errors}`
    )
    return errors > 0 || short.length > 0 ? 1 : 0
  } finally {
    await stopAll()
  }
}

/** The lines of an audit file. */
const auditLines = (path: string): number =>
  readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l !== "").length

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
