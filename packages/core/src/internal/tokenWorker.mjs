/**
 * The worker thread behind TokenCounter's off-thread counting (see `internal/tokenWorkerPool.ts`).
 *
 * Plain JavaScript on purpose: worker threads load their script with Node's own loader, outside tsx
 * and vitest transforms. It loads `tiktoken` itself and keeps one encoder per encoding for its life;
 * the WASM memory goes with the thread when the pool terminates it.
 *
 * Protocol (structured-clone messages):
 *   in:  { id: number, encoding: "o200k_base" | "cl100k_base", texts: string[] }
 *   out: { type: "ready" } once tiktoken is loaded;
 *        { id, counts: number[] } (one count per text, same order) or { id, error: string }
 */
import { parentPort } from "node:worker_threads"
import { get_encoding } from "tiktoken"

if (parentPort === null) throw new Error("tokenWorker.mjs runs as a worker thread only")
const port = parentPort

/** @type {Map<string, import("tiktoken").Tiktoken>} */
const encoders = new Map()

/** @param {"o200k_base" | "cl100k_base"} name */
const encoder = (name) => {
  let enc = encoders.get(name)
  if (enc === undefined) {
    enc = get_encoding(name)
    encoders.set(name, enc)
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
