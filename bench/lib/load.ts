/**
 * The load generator: closed-loop workers over one undici Pool per target (keep-alive, pipelining 1).
 * Every response is checked: status 200 and a chat completion body, or for streams an SSE body that
 * ends with `data: [DONE]`. Failures are counted by kind, never silently dropped.
 */
import { setMaxListeners } from "node:events"
import { setTimeout as sleep } from "node:timers/promises"
import { Pool } from "undici"

export const PATH = "/v1/chat/completions"
const HEADERS = { "content-type": "application/json", accept: "application/json, text/event-stream" }
const DATA = Buffer.from("data:")

export const requestBody = (model: string, stream: boolean): string =>
  JSON.stringify({
    model,
    messages: [{ role: "user", content: "Say hello to the benchmark." }],
    ...(stream ? { stream: true } : {})
  })

/** A keep-alive pool of `connections` to `origin`. */
export const pool = (origin: string, connections: number): Pool =>
  new Pool(origin, {
    connections,
    pipelining: 1,
    keepAliveTimeout: 30_000,
    headersTimeout: 10_000,
    bodyTimeout: 10_000
  })

export interface Errors {
  count: number
  readonly kinds: Record<string, number>
  /** The first failure of each kind (up to five kinds), for the report. */
  readonly examples: Array<string>
}

export const noErrors = (): Errors => ({ count: 0, kinds: {}, examples: [] })

const fail = (errors: Errors, kind: string, detail: string): void => {
  errors.count++
  const seen = errors.kinds[kind] ?? 0
  errors.kinds[kind] = seen + 1
  // One example per kind of failure, at most five kinds.
  if (seen === 0 && errors.examples.length < 5) errors.examples.push(`${kind}: ${detail.slice(0, 300)}`)
}

const errorKind = (error: unknown): string =>
  error instanceof Error ? ((error as NodeJS.ErrnoException).code ?? error.name) : "error"

export interface ClosedLoopResult {
  readonly ok: number
  readonly errors: Errors
  readonly elapsedMs: number
  /** Latencies of successful requests, ms (request sent → body fully read). */
  readonly latencies: Array<number>
}

/** Non-streaming: `concurrency` workers send requests back to back for `durationMs`. */
export const closedLoop = async (
  target: Pool,
  concurrency: number,
  durationMs: number,
  model: string
): Promise<ClosedLoopResult> => {
  const body = requestBody(model, false)
  const latencies: Array<number> = []
  const errors = noErrors()
  let ok = 0
  const started = performance.now()
  const deadline = started + durationMs
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const t0 = performance.now()
      try {
        const res = await target.request({ path: PATH, method: "POST", headers: HEADERS, body })
        const text = await res.body.text()
        const t1 = performance.now()
        if (res.statusCode !== 200) fail(errors, `status ${res.statusCode}`, text)
        else if (!text.includes('"choices"') || !text.includes('"chat.completion"')) fail(errors, "bad body", text)
        else {
          ok++
          latencies.push(t1 - t0)
        }
      } catch (error) {
        fail(errors, errorKind(error), error instanceof Error ? error.message : String(error))
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return { ok, errors, elapsedMs: performance.now() - started, latencies }
}

export interface StreamResult {
  readonly ok: number
  readonly errors: Errors
  readonly elapsedMs: number
  /** Successful requests: request sent → first body chunk holding `data:`, ms. */
  readonly ttfb: Array<number>
  /** Successful requests: request sent → stream ended, ms. */
  readonly total: Array<number>
  /** Requests not sent because the time cap was reached. */
  readonly skipped: number
}

/**
 * Streaming: `count` requests shared by `concurrency` workers, each worker one request at a time.
 * Stops early (counting the rest as skipped) after `capMs` — but not before `atLeast` were sent (a
 * warm-up that runs for a time, however slow the target).
 */
export const streamRequests = async (
  target: Pool,
  concurrency: number,
  count: number,
  model: string,
  capMs: number,
  atLeast = 0
): Promise<StreamResult> => {
  const body = requestBody(model, true)
  const ttfb: Array<number> = []
  const total: Array<number> = []
  const errors = noErrors()
  let ok = 0
  let next = 0
  const started = performance.now()
  const deadline = started + capMs
  const worker = async (): Promise<void> => {
    while (next < count && (next < atLeast || performance.now() < deadline)) {
      next++
      const t0 = performance.now()
      let first = Number.NaN
      try {
        const res = await target.request({ path: PATH, method: "POST", headers: HEADERS, body })
        const chunks: Array<Buffer> = []
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          if (Number.isNaN(first) && chunk.includes(DATA)) first = performance.now()
          chunks.push(chunk)
        }
        const t1 = performance.now()
        if (checkStream(errors, res, chunks)) {
          ok++
          ttfb.push(first - t0)
          total.push(t1 - t0)
        }
      } catch (error) {
        fail(errors, errorKind(error), error instanceof Error ? error.message : String(error))
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
  return { ok, errors, elapsedMs: performance.now() - started, ttfb, total, skipped: count - next }
}

/** True for a complete stream (200, SSE, chunks, a final `data: [DONE]`); otherwise counts the failure. */
const checkStream = (
  errors: Errors,
  res: { readonly statusCode: number; readonly headers: Record<string, string | Array<string> | undefined> },
  chunks: ReadonlyArray<Buffer>
): boolean => {
  const text = Buffer.concat(chunks).toString("utf8")
  const type = String(res.headers["content-type"] ?? "")
  if (res.statusCode !== 200) fail(errors, `status ${res.statusCode}`, text)
  else if (!type.startsWith("text/event-stream")) fail(errors, "not SSE", `content-type ${type}: ${text}`)
  else if (!text.trimEnd().endsWith("data: [DONE]")) fail(errors, "no [DONE]", text)
  else if (!text.includes('"chat.completion.chunk"')) fail(errors, "bad chunks", text)
  else return true
  return false
}

export interface ConcurrentStreamsResult {
  readonly ok: number
  readonly errors: Errors
  readonly elapsedMs: number
  /** The most streams open at once: response headers received, body not yet ended. */
  readonly maxOpen: number
  /** Successful requests: request sent → stream ended, ms. */
  readonly total: Array<number>
}

/**
 * `count` streaming requests, all in flight together: request `i` is sent `i × rampMs / count` ms
 * after the first (so the target is not hit by `count` connects in one instant), each over its own
 * connection of `target` (which must allow `count` connections). Every stream is checked complete,
 * as in {@link streamRequests}. Requests not done after `capMs` are aborted and count as failures.
 */
export const concurrentStreams = async (
  target: Pool,
  count: number,
  model: string,
  rampMs: number,
  capMs: number
): Promise<ConcurrentStreamsResult> => {
  const body = requestBody(model, true)
  const total: Array<number> = []
  const errors = noErrors()
  const abort = new AbortController()
  // Every request listens to the one signal.
  setMaxListeners(count + 1, abort.signal)
  const cap = setTimeout(() => abort.abort(new Error(`not done after ${capMs} ms`)), capMs)
  let ok = 0
  let open = 0
  let maxOpen = 0
  const started = performance.now()
  const one = async (i: number): Promise<void> => {
    await sleep((i * rampMs) / count)
    const t0 = performance.now()
    let opened = false
    try {
      const res = await target.request({ path: PATH, method: "POST", headers: HEADERS, body, signal: abort.signal })
      opened = true
      maxOpen = Math.max(maxOpen, ++open)
      const chunks: Array<Buffer> = []
      for await (const chunk of res.body as AsyncIterable<Buffer>) chunks.push(chunk)
      if (checkStream(errors, res, chunks)) {
        ok++
        total.push(performance.now() - t0)
      }
    } catch (error) {
      fail(errors, errorKind(error), error instanceof Error ? error.message : String(error))
    } finally {
      if (opened) open--
    }
  }
  try {
    await Promise.all(Array.from({ length: count }, (_, i) => one(i)))
  } finally {
    clearTimeout(cap)
  }
  return { ok, errors, elapsedMs: performance.now() - started, maxOpen, total }
}
