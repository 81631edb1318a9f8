/**
 * The OpenAI-compatible provider: OpenAI, Groq, Mistral, Together, vLLM, Ollama's `/v1`, LM Studio
 * and the simulated upstream. Requests go out as the client sent them (unknown fields included) with
 * only `model` replaced; streamed chunks come back untouched as the JSON text of each SSE event, so
 * nothing is re-encoded. Usage is read from the response, or from the final chunk when streaming.
 *
 * Upstream calls go over undici directly (one keep-alive `Agent`, a connection pool per origin): this
 * is the request hot path, so there is no stream or promise machinery between the socket and the
 * router — one `Effect.async` per call, an undici dispatch handler, and an SSE reader that hands the
 * router every event of one socket read in one chunk.
 *
 * Every failure is built by one function, which scrubs the upstream's credentials (its API key,
 * secret-looking configured headers) out of whatever the upstream sent back.
 */
import { Errors, Provider, Tracing, Wire } from "@sluice/core"
import type { StreamEvent, Topology } from "@sluice/core"
import { Effect, Option, Redacted, Scope } from "effect"
import type { Tracer } from "effect"
import type { IncomingHttpHeaders } from "node:http"
import { StringDecoder } from "node:string_decoder"
import type { Dispatcher } from "undici"
import { Agent } from "undici"
import { scrub, scrubValue } from "./internal/scrub.js"

type Upstream = Topology.Upstream

const errorMessage = (body: unknown, fallback: string): string => {
  if (typeof body === "object" && body !== null) {
    const error = (body as { error?: unknown }).error
    if (typeof error === "object" && error !== null && typeof (error as { message?: unknown }).message === "string") {
      return (error as { message: string }).message
    }
    if (typeof error === "string") return error
    const message = (body as { message?: unknown }).message
    if (typeof message === "string") return message
  }
  return fallback
}

/** Response headers as single strings (undici gives repeated headers as arrays). */
type Headers = Readonly<Record<string, string>>

const flatHeaders = (headers: IncomingHttpHeaders): Headers => {
  for (const key in headers) {
    if (typeof headers[key] !== "string") {
      const out: Record<string, string> = {}
      for (const k in headers) {
        const v = headers[k]
        if (v !== undefined) out[k] = typeof v === "string" ? v : v.join(", ")
      }
      return out
    }
  }
  return headers as Headers
}

/**
 * A failure built from what an upstream sent in a 2xx answer (an in-band error, an unreadable
 * answer), its credentials scrubbed from the message and the body; `fromStatus` scrubs an error
 * answer's text before anything is read from it. Some servers repeat the `Authorization` header they
 * received in their errors; no key ever leaves the gateway.
 */
const failure = (
  upstream: Upstream,
  fields: { readonly kind: "protocol"; readonly message: string; readonly retryable: true; readonly body?: unknown }
): Errors.UpstreamError =>
  Errors.Failure.protocol(
    upstream.id,
    scrub(upstream, fields.message),
    fields.body !== undefined ? scrubValue(upstream, fields.body) : undefined
  )

/** A call that never got an answer (refused, reset, timed out at the socket). */
const unreachable = (upstream: Upstream, error: unknown): Errors.UpstreamError =>
  Errors.Failure.connection(
    upstream.id,
    `could not reach ${upstream.baseUrl}: ${error instanceof Error ? error.message : String(error)}`
  )

/** An answer that started but could not be read to its end. */
const unreadable = (error: unknown): string =>
  `could not read the answer: ${error instanceof Error ? error.message : String(error)}`

/** Turns a non-2xx answer into an `UpstreamError` carrying the upstream's message and Retry-After. */
const fromStatus = (upstream: Upstream, status: number, headers: Headers, answer: string): Errors.UpstreamError => {
  // Scrubbed before it is cut: a cut through a key would leave a part of it that no scrub recognises.
  const text = scrub(upstream, answer)
  let body: unknown = undefined
  try {
    body = text === "" ? undefined : JSON.parse(text)
  } catch {
    body = undefined
  }
  const now = Date.now()
  return Errors.Failure.http(
    upstream.id,
    status,
    // Scrubbed again once parsed: a key quoted inside a quoted text is escaped twice in the raw answer.
    scrub(upstream, `HTTP ${status}: ${errorMessage(body, text.slice(0, 200) || "no body")}`),
    {
      retryAfterMs: Provider.retryAfterMs(headers, now),
      body: body === undefined ? undefined : scrubValue(upstream, body),
      rateLimits: Provider.parseRateLimitHeaders(headers, now)
    }
  )
}

/**
 * The body to send: the client's own bytes when the call changes nothing in them (the model is the
 * one asked for, and nothing else is set), else the request serialized with the upstream's model
 * and `extra` fields.
 */
const payloadOf = <R extends { readonly model: string }>(
  call: Provider.Call<R>,
  extra: Readonly<Record<string, unknown>> | undefined
): string =>
  call.body !== undefined && extra === undefined && call.model === call.request.model
    ? call.body
    : Wire.stringify({ ...call.request, model: call.model, ...extra })

/** Where one upstream is, precomputed once per upstream: undici wants origin and path apart. */
interface Target {
  readonly origin: string
  readonly basePath: string
  /** The base URL without credentials, for spans. */
  readonly spanBase: string
  readonly headers: Readonly<Record<string, string>>
}

const targetOf = (upstream: Upstream): Target => {
  const url = new URL(upstream.baseUrl)
  const basePath = url.pathname.endsWith("/") ? url.pathname.slice(0, -1) : url.pathname
  const headers: Record<string, string> = { ...upstream.headers, "content-type": "application/json" }
  if (Option.isSome(upstream.apiKey)) headers["authorization"] = `Bearer ${Redacted.value(upstream.apiKey.value)}`
  return { origin: url.origin, basePath: basePath + url.search, spanBase: url.origin + basePath, headers }
}

const DONE: unique symbol = Symbol("done")

/**
 * Splits SSE text into event payloads. Keeps partial input between calls; `[DONE]` yields the
 * `DONE` marker. Comments and non-data fields are ignored; CRLF and CR line ends are accepted.
 */
const makeSseParser = () => {
  let buffer = ""
  return (text: string, out: Array<string | typeof DONE>): void => {
    buffer = buffer.length === 0 ? text : buffer + text
    if (text.includes("\r")) {
      // A CR at the very end may be the first half of a CRLF: keep it for the next read.
      const held = buffer.endsWith("\r") ? 1 : 0
      const body = buffer.slice(0, buffer.length - held).replace(/\r\n?/g, "\n")
      buffer = held === 1 ? body + "\r" : body
    }
    let start = 0
    for (;;) {
      const end = buffer.indexOf("\n\n", start)
      if (end === -1) break
      const block = buffer.slice(start, end)
      start = end + 2
      let data: string | undefined
      if (block.startsWith("data: ") && !block.includes("\n")) {
        data = block.slice(6)
      } else {
        for (const line of block.split("\n")) {
          if (line.startsWith("data:")) {
            const value = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5)
            data = data === undefined ? value : data + "\n" + value
          }
        }
      }
      // An event without data is not dispatched (as the SSE spec says): nothing to check.
      if (data === undefined || data === "") continue
      out.push(data === "[DONE]" ? DONE : data)
    }
    if (start > 0) buffer = buffer.slice(start)
  }
}

/**
 * One SSE payload as a stream event, or a failure: the upstream's in-band error, or a payload that is
 * not a JSON object (a mangled event, after which nothing in the stream can be trusted). Every payload
 * is parsed, once; usage is read from that parse.
 */
const toEvent = (upstream: Upstream, data: string): StreamEvent.StreamEvent | Errors.UpstreamError => {
  let chunk: unknown
  try {
    chunk = JSON.parse(data)
  } catch {
    chunk = undefined
  }
  if (typeof chunk !== "object" || chunk === null || Array.isArray(chunk)) {
    return failure(upstream, {
      kind: "protocol",
      message: `malformed stream event (not a JSON object): ${scrub(upstream, data).slice(0, 200)}`,
      retryable: true
    })
  }
  const { choices, error, usage } = chunk as Partial<Wire.ChatCompletionChunk> & { readonly error?: unknown }
  if (error !== undefined && error !== null) {
    return failure(upstream, {
      kind: "protocol",
      message: `stream error: ${errorMessage(chunk, scrub(upstream, data).slice(0, 200))}`,
      retryable: true,
      body: chunk
    })
  }
  if (typeof usage !== "object" || usage === null) return { data }
  return { data, usage, usageOnly: Array.isArray(choices) && choices.length === 0 }
}

/**
 * A 2xx answer that is not JSON. The parser quotes the text around where it failed, so its message is
 * taken from parsing the scrubbed text again: a quote cut through a key would keep a part of it.
 */
const notJson = (upstream: Upstream, text: string, error: unknown): Errors.UpstreamError => {
  let reason = error
  try {
    JSON.parse(scrub(upstream, text))
  } catch (again) {
    reason = again
  }
  return failure(upstream, { kind: "protocol", message: unreadable(reason), retryable: true })
}

/** A whole answer: its JSON when 2xx and OpenAI-shaped (with its bytes and rate limits), an `UpstreamError` otherwise. */
const decodeAnswer = <A>(
  upstream: Upstream,
  answer: Answer,
  isValid: (value: unknown) => boolean
): Effect.Effect<Provider.Answer<A>, Errors.UpstreamError> => {
  if (answer.status < 200 || answer.status >= 300) {
    return Effect.fail(fromStatus(upstream, answer.status, answer.headers, answer.text))
  }
  let value: unknown
  try {
    value = JSON.parse(answer.text)
  } catch (error) {
    return Effect.fail(notJson(upstream, answer.text, error))
  }
  if (!isValid(value)) {
    return Effect.fail(Errors.Failure.protocol(upstream.id, "the answer is not an OpenAI-shaped response"))
  }
  return Effect.succeed({
    value: value as A,
    // Nothing was translated: the client gets the upstream's bytes.
    text: answer.text,
    rateLimits: Provider.parseRateLimitHeaders(answer.headers, Date.now())
  })
}

const isCompletion = (v: unknown): boolean =>
  typeof v === "object" && v !== null && Array.isArray((v as { choices?: unknown }).choices)

const isEmbeddings = (v: unknown): boolean =>
  typeof v === "object" && v !== null && Array.isArray((v as { data?: unknown }).data)

/** A whole answer, read to its end. */
interface Answer {
  readonly _tag: "Answer"
  readonly status: number
  readonly headers: Headers
  readonly text: string
}

/** A 2xx event stream whose headers have arrived; the socket's reads feed `events`. */
interface Opened {
  readonly _tag: "Opened"
  readonly headers: Headers
  readonly events: StreamEvent.Source
}

/** What an exchange resumes once it has settled: nothing. */
const settled = (): void => {}

type Resume = (effect: Effect.Effect<unknown, Errors.UpstreamError>) => void

/** What a whole answer becomes, decided as it ends (no further Effect step per call). */
type Whole = (answer: Answer) => Effect.Effect<unknown, Errors.UpstreamError>

/** How long the rest of an answer may take to drain after `[DONE]` before its connection is closed. */
const DRAIN_MS = 10_000

/** Events buffered before the reader stops reading the socket until the router catches up. */
const HIGH_WATER_EVENTS = 256

/**
 * One upstream exchange as an undici dispatch handler. It answers `resume` once: with the whole
 * answer (non-streaming, and any non-2xx or non-SSE answer to a stream request), or — for a 2xx event
 * stream — as soon as the headers arrive, with a stream that the socket's reads feed.
 */
class Exchange implements Dispatcher.DispatchHandler, StreamEvent.Source {
  private controller: Dispatcher.DispatchController | undefined
  private cancelled = false
  private settled = false
  private status = 0
  private headers: Headers = {}
  private chunks: Array<Buffer> = []
  // SSE mode
  private sse = false
  private readonly parse = makeSseParser()
  private decoder: StringDecoder | undefined
  private readonly items: Array<string | typeof DONE> = []
  private pending: Array<StreamEvent.StreamEvent> = []
  private failure: Errors.UpstreamError | undefined
  /** The stream is over for the reader: `[DONE]` seen, or failed. The socket may still drain. */
  private over = false
  /** The response has ended (or failed): the connection is back in the pool or gone. */
  private finished = false
  /** The reader waiting for events (see `StreamEvent.Source.onReady`). */
  private ready: (() => void) | undefined
  /** The deadline of an answer (or of a stream's acceptance) while it runs; after `[DONE]`, the drain's. */
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(
    private readonly upstream: Upstream,
    private readonly streaming: boolean,
    private readonly onSpanStatus: ((status: number) => void) | undefined,
    private resume: Resume,
    private readonly whole: Whole | undefined
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.cancelled) controller.abort(new Error("cancelled"))
  }

  onResponseStart(_controller: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    if (status < 200) return
    this.status = status
    this.headers = flatHeaders(headers)
    this.onSpanStatus?.(status)
    if (this.streaming && status >= 200 && status < 300) {
      const type = this.headers["content-type"] ?? ""
      if (type.includes("text/event-stream")) {
        this.sse = true
        this.decoder = new StringDecoder("utf8")
        this.settle(Effect.succeed({ _tag: "Opened", headers: this.headers, events: this }))
      }
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.sse) {
      this.chunks.push(chunk)
      return
    }
    // After [DONE] the rest of the body is read and dropped, so the connection stays reusable.
    if (this.over) return
    this.parse(this.decoder!.write(chunk), this.items)
    for (const item of this.items) {
      if (item === DONE) {
        this.over = true
        break
      }
      const event = toEvent(this.upstream, item)
      if (event instanceof Errors.UpstreamError) {
        this.fail(event)
        break
      }
      this.pending.push(event)
    }
    this.items.length = 0
    if (this.pending.length >= HIGH_WATER_EVENTS && !this.over) controller.pause()
    this.wake()
  }

  onResponseEnd(): void {
    this.finished = true
    this.stopTimer()
    if (this.sse) {
      if (!this.over) {
        this.fail(
          Errors.Failure.connection(this.upstream.id, "the stream ended without [DONE]: the upstream broke off")
        )
      }
      this.wake()
      return
    }
    const text =
      this.chunks.length === 1 ? this.chunks[0]!.toString("utf8") : Buffer.concat(this.chunks).toString("utf8")
    this.chunks = []
    const answer: Answer = { _tag: "Answer", status: this.status, headers: this.headers, text }
    this.settle(this.whole === undefined ? Effect.succeed(answer) : this.whole(answer))
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.finished = true
    this.stopTimer()
    if (this.sse) {
      if (!this.over) {
        this.fail(Errors.Failure.connection(this.upstream.id, `the upstream broke off mid-stream: ${error.message}`))
      }
      this.wake()
      return
    }
    this.settle(
      Effect.fail(
        this.status === 0
          ? unreachable(this.upstream, error)
          : Errors.Failure.protocol(this.upstream.id, unreadable(error))
      )
    )
  }

  /** Stops the exchange: before the answer, the request is aborted; mid-stream, the connection is closed. */
  readonly cancel = (): void => {
    this.stopTimer()
    if (this.finished) return
    if (this.sse && this.over && this.failure === undefined) {
      // [DONE] arrived: let the rest drain so the connection is reused (bounded, should the upstream
      // keep the answer open).
      this.controller?.resume()
      // Cleared when the answer ends: the timer must not keep the exchange for DRAIN_MS.
      this.timer = setTimeout(() => {
        this.timer = undefined
        if (!this.finished) this.controller?.abort(new Error("the answer did not end after [DONE]"))
      }, DRAIN_MS)
      this.timer.unref()
      return
    }
    this.cancelled = true
    this.controller?.abort(new Error("cancelled"))
  }

  /** Fails the exchange with a timeout and cancels it unless it has been answered within `ms`. */
  deadline(ms: number, message: string): void {
    this.timer = setTimeout(() => {
      this.timer = undefined
      if (this.settled) return
      this.settle(Effect.fail(Errors.Failure.timeout(this.upstream.id, message)))
      this.cancel()
    }, ms)
  }

  private stopTimer() {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
  }

  private settle(effect: Effect.Effect<unknown, Errors.UpstreamError>) {
    if (this.settled) return
    this.settled = true
    this.stopTimer()
    const resume = this.resume
    // The opening fiber is done with: a stream that lives on must not keep it (and its stack) alive.
    this.resume = settled
    resume(effect)
  }

  private fail(error: Errors.UpstreamError) {
    this.over = true
    this.failure = error
  }

  private wake() {
    const ready = this.ready
    if (ready === undefined || (this.pending.length === 0 && !this.over)) return
    this.ready = undefined
    ready()
  }

  /** What has arrived for the reader: events, the end (`None`) or the failure; undefined when nothing has. */
  poll(): ReadonlyArray<StreamEvent.StreamEvent> | Option.Option<Errors.UpstreamError> | undefined {
    if (this.pending.length > 0) {
      const events = this.pending
      this.pending = []
      if (this.controller?.paused === true) this.controller.resume()
      return events
    }
    if (this.failure !== undefined) return Option.some(this.failure)
    if (this.over) return Option.none()
    return undefined
  }

  onReady(ready: (() => void) | undefined): void {
    this.ready = ready
  }
}

/**
 * Makes the OpenAI-compatible provider. Its undici `Agent` (keep-alive connections per upstream
 * origin) is closed with the scope.
 */
export const make: Effect.Effect<Provider.Service, never, Scope.Scope> = Effect.gen(function* () {
  const agent = yield* Effect.acquireRelease(
    Effect.sync(() => new Agent({ keepAliveTimeout: 30_000, pipelining: 1 })),
    (agent) => Effect.promise(() => agent.destroy())
  )
  const targets = new WeakMap<Upstream, Target>()
  const target = (upstream: Upstream): Target => {
    let t = targets.get(upstream)
    if (t === undefined) {
      t = targetOf(upstream)
      targets.set(upstream, t)
    }
    return t
  }

  /**
   * One POST, traced as an `http.client POST` span (URL without credentials, method, status; never
   * the headers). Interrupting it aborts the request; for a stream, the connection is closed with the
   * scope the caller provides (or drained, when the stream reached `[DONE]`).
   */
  const post = <X = Answer | Opened>(
    upstream: Upstream,
    path: string,
    payload: string,
    streaming: boolean,
    whole?: (answer: Answer) => Effect.Effect<X, Errors.UpstreamError>,
    onExchange?: (exchange: Exchange) => void,
    traced?: boolean,
    openTimeoutMs?: number
  ): Effect.Effect<X, Errors.UpstreamError> => {
    const t = target(upstream)
    const exchange = (span: Tracer.Span | undefined) =>
      Effect.async<X, Errors.UpstreamError>((resume) => {
        const exchange = new Exchange(
          upstream,
          streaming,
          span === undefined ? undefined : (status) => span.attribute("http.response.status_code", status),
          resume as Resume,
          whole
        )
        onExchange?.(exchange)
        // A whole answer has `timeoutMs` to arrive, a stream the `openTimeoutMs` the router gives to be
        // accepted (see `Provider.Service.enforcesTimeout`); a stream's first event is timed by the router.
        if (!streaming) exchange.deadline(upstream.timeoutMs, `no response within ${upstream.timeoutMs} ms`)
        else if (openTimeoutMs !== undefined) {
          exchange.deadline(openTimeoutMs, `the stream was not accepted within ${openTimeoutMs} ms`)
        }
        agent.dispatch(
          {
            origin: t.origin,
            path: t.basePath + path,
            method: "POST",
            headers:
              span === undefined
                ? t.headers
                : { ...t.headers, traceparent: `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}` },
            body: payload
          },
          exchange
        )
        return Effect.sync(exchange.cancel)
      })
    // The caller has already found that spans go nowhere: no need to check again.
    if (traced === false) return exchange(undefined)
    return Effect.withFiberRuntime((fiber) =>
      Tracing.exported(fiber)
        ? Effect.useSpan(
            "http.client POST",
            {
              kind: "client",
              captureStackTrace: false,
              attributes: { "http.request.method": "POST", "url.full": t.spanBase + path }
            },
            exchange
          )
        : exchange(undefined)
    )
  }

  const json = <A>(
    upstream: Upstream,
    path: string,
    payload: string,
    isValid: (value: unknown) => boolean,
    traced: boolean | undefined
  ): Effect.Effect<Provider.Answer<A>, Errors.UpstreamError> =>
    // Only stream requests open a stream: a whole answer comes back, decoded as it ends.
    post(upstream, path, payload, false, (answer) => decodeAnswer<A>(upstream, answer, isValid), undefined, traced)

  const chat: Provider.Service["chat"] = (upstream, call) =>
    json<Wire.ChatCompletion>(
      upstream,
      "/chat/completions",
      payloadOf(call, call.request.stream === true ? { stream: false } : undefined),
      isCompletion,
      call.traced
    )

  const embeddings: Provider.Service["embeddings"] = (upstream, call) =>
    json<Wire.EmbeddingsResponse>(upstream, "/embeddings", payloadOf(call, undefined), isEmbeddings, call.traced)

  /** What a stream request's answer becomes: the opened stream, or the upstream's error. */
  const opened = (
    upstream: Upstream,
    answer: Answer | Opened
  ): Effect.Effect<Provider.Opened, Errors.UpstreamError> => {
    if (answer._tag === "Opened") {
      return Effect.succeed({
        events: answer.events,
        rateLimits: Provider.parseRateLimitHeaders(answer.headers, Date.now())
      })
    }
    if (answer.status < 200 || answer.status >= 300) {
      return Effect.fail(fromStatus(upstream, answer.status, answer.headers, answer.text))
    }
    const type = answer.headers["content-type"] ?? ""
    return Effect.fail(
      Errors.Failure.protocol(upstream.id, `expected an event stream, got content-type '${type || "none"}'`)
    )
  }

  const chatStream: Provider.Service["chatStream"] = (upstream, call) =>
    Effect.flatMap(Effect.scope, (scope) => {
      let exchange: Exchange | undefined
      // The connection belongs to the caller's scope: closed when it closes, unless the stream
      // reached [DONE], in which case the rest of the answer drains and the connection is reused.
      // Straight on the scope: `Effect.addFinalizer` would diff every fiber ref when it runs.
      const cancel = Scope.addFinalizer(
        scope,
        Effect.sync(() => exchange?.cancel())
      )
      const answer = post<Answer | Opened>(
        upstream,
        "/chat/completions",
        payloadOf(call, { stream: true }),
        true,
        undefined,
        (e) => {
          exchange = e
        },
        call.traced,
        call.openTimeoutMs
      )
      return Effect.zipRight(
        cancel,
        Effect.flatMap(answer, (a) => opened(upstream, a))
      )
    })

  return { chat, chatStream, embeddings, enforcesTimeout: () => true }
})
