/**
 * The worker thread behind TokenCounter's off-thread counting (see `internal/tokenWorkerPool.ts`).
 *
 * Plain JavaScript on purpose: worker threads load their script with Node's own loader, outside tsx
 * and vitest transforms. It loads tiktoken's "lite" WASM at start (it holds no encoder tables), and
 * an encoding's tables on the first job that needs them — never the tables of an encoding no job
 * asks for. It keeps one encoder per encoding for its life; the WASM memory goes with the thread
 * when the pool terminates it.
 *
 * Protocol (structured-clone messages):
 *   in:  { id: number, encoding: "o200k_base" | "cl100k_base", texts: string[] }
 *   out: { type: "ready" } once tiktoken is loaded;
 *        { type: "loaded", encoding } when an encoding's encoder has been built (before its counts);
 *        { id, counts: number[] } (one count per text, same order) or { id, error: string }
 */
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { parentPort } from "node:worker_threads"

if (parentPort === null) throw new Error("tokenWorker.mjs runs as a worker thread only")
const port = parentPort
const require = createRequire(import.meta.url)
/** @type {typeof import("tiktoken/lite")} */
const { Tiktoken } = require("tiktoken/lite")

const ENCODINGS = new Set(["o200k_base", "cl100k_base"])

/** @type {Map<string, import("tiktoken/lite").Tiktoken>} */
const encoders = new Map()

/** @param {"o200k_base" | "cl100k_base"} name */
const encoder = (name) => {
  let enc = encoders.get(name)
  if (enc === undefined) {
    if (!ENCODINGS.has(name)) throw new Error(`unknown encoding '${name}'`)
    // Read as JSON, not required: no module cache keeps the tables' text alive once built.
    const tables = JSON.parse(readFileSync(require.resolve(`tiktoken/encoders/${name}.json`), "utf8"))
    enc = new Tiktoken(tables.bpe_ranks, tables.special_tokens, tables.pat_str)
    encoders.set(name, enc)
    port.postMessage({ type: "loaded", encoding: name })
  }
  return enc
}

port.on("message", (/** @type {{ id: number, encoding: "o200k_base" | "cl100k_base", texts: string[] }} */ job) => {
  try {
    const enc = encoder(job.encoding)
    const counts = job.texts.map((text) => (text.length === 0 ? 0 : enc.encode_ordinary(text).length))
    port.postMessage({ id: job.id, counts })
  } catch (error) {
    port.postMessage({ id: job.id, error: error instanceof Error ? error.message : String(error) })
  }
})

port.postMessage({ type: "ready" })
