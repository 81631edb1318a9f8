/**
 * Instructions per request, counted by `valgrind --tool=callgrind` in the gateway: a measure that does
 * not move when the machine is busy, for comparing two versions of the request path on a noisy machine
 * (the throughput of `npm run bench` moves with every other process). It counts instructions, not
 * time: a cache miss and an instruction cost the same here. Run both versions, compare the counts.
 *
 * The gateway runs under callgrind (some 50 times slower), the simulator and the client natively. After
 * `BENCH_INSTR_WARMUP` requests the counters are zeroed (`callgrind_control --zero`), then
 * `BENCH_INSTR_REQUESTS` are sent, `BENCH_INSTR_CONCURRENCY` at a time, and the counters dumped.
 *
 *   npm run build && node --import tsx bench/instructions.ts            # whole answers
 *   BENCH_INSTR_STREAM=1 node --import tsx bench/instructions.ts        # streams
 *   BENCH_INSTR_TARGET=bare node --import tsx bench/instructions.ts     # the bare proxy, for the ratio
 *   BENCH_INSTR_OBS=on|off ...         # access log and audit file on, or both off (default: the embedded config)
 *   BENCH_INSTR_DUMP=out.callgrind ... # keep the main thread's measured dump, for `callgrind_annotate`
 *
 * Prints the instructions per request of all the gateway's threads, and of its main thread (the
 * event loop) alone.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { Pool } from "undici"
import { freePort, start, stopAll, waitReady } from "./lib/children.js"

const ROOT = fileURLToPath(new URL("..", import.meta.url))
const SLUICE_BIN = join(ROOT, "packages/server/bin/sluice.js")
// Under callgrind the JIT tiers functions up far later in requests than at full speed: after 300
// requests the count was still mostly compilation (2.0–2.4 M a whole answer against 1.2–1.3 M after
// 1,500), and it moved with when each function happened to be optimized.
const warmup = Number(process.env["BENCH_INSTR_WARMUP"] ?? 1500)
const requests = Number(process.env["BENCH_INSTR_REQUESTS"] ?? 2000)
const concurrency = Number(process.env["BENCH_INSTR_CONCURRENCY"] ?? 10)
const stream = process.env["BENCH_INSTR_STREAM"] !== undefined
/** `sluice` (the gateway) or `bare` (`bench/proxy.ts`, the floor the throughput bar is measured against). */
const target = process.env["BENCH_INSTR_TARGET"] === "bare" ? "bare" : "sluice"
const nodeArgs = (process.env["BENCH_SLUICE_NODE_ARGS"] ?? "").split(" ").filter((a) => a !== "")
/**
 * The gateway's observability, as `bench/observability.ts` sets it: `on` (JSON access log at info,
 * audit log to a file), `off` (warnings only, no access line, no audit sink), or unset (the
 * embedded defaults).
 */
const observability = process.env["BENCH_INSTR_OBS"]
if (observability !== undefined && observability !== "on" && observability !== "off")
  throw new Error(`BENCH_INSTR_OBS=${observability}: on or off`)

const body = JSON.stringify({
  model: "bench-model",
  messages: [{ role: "user", content: "Hello there, how are you today?" }],
  ...(stream ? { stream: true } : {})
})

/** Sends `n` requests, `concurrency` at a time, reading each answer whole; fails on any non-200. */
const send = async (pool: Pool, n: number): Promise<void> => {
  let left = n
  const worker = async () => {
    while (left-- > 0) {
      const res = await pool.request({
        path: "/v1/chat/completions",
        method: "POST",
        headers: { "content-type": "application/json" },
        body
      })
      const text = await res.body.text()
      if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}: ${text.slice(0, 200)}`)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
}

/** The `server` settings of {@link observability}, indented under `server:`. */
const observabilityBlock = (dir: string): string =>
  observability === "on"
    ? `  log: { level: info, format: json, access: true }
  audit: { sink: file, path: ${JSON.stringify(join(dir, "audit.jsonl"))}, maxBytes: 1000000000 }`
    : observability === "off"
      ? `  log: { level: warning, access: false }
  audit: { sink: "off" }`
      : ""

const main = async () => {
  const dir = mkdtempSync(join(tmpdir(), "sluice-instr-"))
  try {
    const simPort = await freePort()
    // prettier-ignore
    const sim = start("simulator", process.execPath, [
      SLUICE_BIN, "simulate", "--port", String(simPort), "--models", "bench-model", "--seed", "1",
      "--latency-ms", "0", "--ttft-ms", "0", "--tokens-per-second", "0", "--completion-tokens", "16"
    ], { cwd: ROOT })
    await waitReady(sim, `http://127.0.0.1:${simPort}/health`)
    const port = await freePort()
    const config = join(dir, "sluice.yaml")
    writeFileSync(
      config,
      `server:
  host: 127.0.0.1
  port: ${port}
${observabilityBlock(dir)}
upstreams:
  - { id: sim, provider: openai-compatible, baseUrl: "http://127.0.0.1:${simPort}/v1" }
pools:
  - { id: bench, models: [bench-model], upstreams: [sim] }
`
    )
    const out = join(dir, "callgrind.out")
    const command =
      target === "bare"
        ? [process.execPath, "--import", "tsx", join(ROOT, "bench/proxy.ts")]
        : [process.execPath, ...nodeArgs, SLUICE_BIN, "serve", "--config", config]
    const gateway = start(
      `${target} (callgrind)`,
      "valgrind",
      // A dump per thread: the event loop's instructions apart from its helpers' (GC, libuv, workers).
      ["--tool=callgrind", "--separate-threads=yes", `--callgrind-out-file=${out}`, ...command],
      { cwd: ROOT, env: { BENCH_UPSTREAM: `http://127.0.0.1:${simPort}`, PORT: String(port) } }
    )
    const origin = `http://127.0.0.1:${port}`
    await waitReady(gateway, `${origin}/health`, 300_000)
    const pool = new Pool(origin, { connections: concurrency })
    await send(pool, warmup)
    execFileSync("callgrind_control", ["--zero", String(gateway.pid)], { stdio: "ignore" })
    await send(pool, requests)
    execFileSync("callgrind_control", ["--dump", String(gateway.pid)], { stdio: "ignore" })
    await pool.close()
    gateway.process.kill("SIGKILL")
    // `callgrind.out.<dump>-<thread>`: the dump made above is 1, thread 01 is the main thread.
    const dumps = readdirSync(dir)
      .map((f) => ({ f, m: /^callgrind\.out\.(\d+)-(\d+)$/.exec(f) }))
      .filter(({ m }) => m !== null && m[1] === "1")
    if (dumps.length === 0) throw new Error("no callgrind dump")
    const totalOf = (text: string): number => {
      const totals = /^(?:totals|summary):\s+(\d+)/m.exec(text)
      if (totals === null) throw new Error("no totals in the callgrind dump")
      return Number(totals[1])
    }
    let all = 0
    let main = 0
    const threads: Array<string> = []
    for (const { f, m } of dumps) {
      const text = readFileSync(join(dir, f), "utf8")
      all += totalOf(text)
      threads.push(`${Number(m![2])}: ${Math.round(totalOf(text) / requests).toLocaleString("en-US")}`)
      if (Number(m![2]) === 1) {
        main = totalOf(text)
        // The main thread's dump, for `callgrind_annotate` (where the instructions go, by native function).
        const keep = process.env["BENCH_INSTR_DUMP"]
        if (keep !== undefined) writeFileSync(keep, text)
      }
    }
    const perRequest = (n: number) => Math.round(n / requests).toLocaleString("en-US")
    console.log(
      `${target}${observability === undefined ? "" : ` (observability ${observability})`}, ${stream ? "streams" : "whole answers"}: ${requests} requests at concurrency ${concurrency}: ` +
        `${perRequest(all)} instructions per request (${perRequest(main)} on the main thread)`
    )
    // Thread 1 is the event loop; the others are V8's helpers (GC, compilers), libuv's pool and workers.
    console.log(`by thread: ${threads.sort((a, b) => parseInt(a) - parseInt(b)).join(", ")}`)
  } finally {
    await stopAll()
    rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
