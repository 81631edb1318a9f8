/**
 * The upstream transport every provider shares: POSTs over one undici keep-alive `Agent`, answers
 * read whole or as an event stream that the socket's reads feed, and failures built in one place with
 * the upstream's credentials scrubbed. What differs per provider — the auth headers, the path, how one
 * streamed payload becomes OpenAI chunks — is passed in ({@link Target}, {@link StreamDecoder}).
 *
 * This is the request hot path: one `Effect.async` per call, an undici dispatch handler, and a
 * stream reader that hands the router every event of one socket read in one batch.
 */
import { Errors, Provider, Tracing } from "@sluice/core"
import type { StreamEvent, Topology } from "@sluice/core"
import { Effect, Option, Redacted, Scope } from "effect"
import type { Tracer } from "effect"
import type { IncomingHttpHeaders } from "node:http"
import { StringDecoder } from "node:string_decoder"
import { createRequire } from "node:module"
import type { Dispatcher } from "undici"
import { scrub, scrubValue } from "./scrub.js"

/**
 * undici's `Agent`, loaded from its own module: the package's index also loads fetch, WebSocket,
 * caches, mocks and interceptors (110 modules, ~7 MB resident) that the transport never uses. The
 * path is undici's layout since 6.0; `TransportAgent.test.ts` checks it is the class the index exports.
 */
export const Agent = createRequire(import.meta.url)("undici/lib/dispatcher/agent.js") as typeof import("undici").Agent

type Upstream = Topology.Upstream

/** The message of an error body in OpenAI's, Anthropic's or Gemini's envelope, else `fallback`. */
export const errorMessage = (body: unknown, fallback: string): string => {
  if (typeof body === "object" && body !== null) {
    const error = (body as { error?: unknown }).error
    if (typeof error === "object" && error !== null && typeof (error as { message?: unknown }).message === "string") {
      const type = (error as { type?: unknown }).type
      const message = (error as { message: string }).message
      // Anthropic's envelope (`"type":"error"`) names the class of failure (`overloaded_error`): worth keeping.
      return (body as { type?: unknown }).type === "error" && typeof type === "string" ? `${type}: ${message}` : message
    }
    if (typeof error === "string") return error
    const message = (body as { message?: unknown }).message
    if (typeof message === "string") return message
  }
  return fallback
}

/** Response headers as single strings (undici gives repeated headers as arrays). */
export type Headers = Readonly<Record<string, string>>

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
 * answer), its credentials scrubbed from the message and the body; {@link fromStatus} scrubs an error
 * answer's text before anything is read from it. Some servers repeat the credentials they received
 * in their errors; no key ever leaves the gateway.
 */
export const protocolFailure = (upstream: Upstream, message: string, body?: unknown): Errors.UpstreamError =>
  Errors.Failure.protocol(
    upstream.id,
    scrub(upstream, message),
    body !== undefined ? scrubValue(upstream, body) : undefined
  )

/** An in-band error event of a stream (OpenAI's `{"error":...}`, Anthropic's `error` event). */
export const streamError = (upstream: Upstream, body: unknown, data: string): Errors.UpstreamError =>
  protocolFailure(upstream, `stream error: ${errorMessage(body, scrub(upstream, data).slice(0, 200))}`, body)

/** A stream payload that is not a JSON object: nothing after it in the stream can be trusted. */
export const malformedEvent = (upstream: Upstream, data: string): Errors.UpstreamError =>
  protocolFailure(upstream, `malformed stream event (not a JSON object): ${scrub(upstream, data).slice(0, 200)}`)

/** A call that never got an answer (refused, reset, timed out at the socket). */
const unreachable = (upstream: Upstream, error: unknown): Errors.UpstreamError =>
  Errors.Failure.connection(
    upstream.id,
    `could not reach ${upstream.baseUrl}: ${error instanceof Error ? error.message : String(error)}`
  )

/** An answer that started but could not be read to its end. */
const unreadable = (error: unknown): string =>
  `could not read the answer: ${error instanceof Error ? error.message : String(error)}`

/**
 * The delay a Google API error asks for in its body (`error.details[]` of type `RetryInfo`,
 * `"retryDelay": "37s"`; Gemini answers a 429 `RESOURCE_EXHAUSTED` with it and no `Retry-After`), in
 * milliseconds. The body may be the error or a one-element array of it (as streaming endpoints send).
 */
export const retryDelayMs = (body: unknown): number | undefined => {
  const envelope: unknown = Array.isArray(body) ? body[0] : body
  const error = typeof envelope === "object" && envelope !== null ? (envelope as { error?: unknown }).error : undefined
  const details = typeof error === "object" && error !== null ? (error as { details?: unknown }).details : undefined
  if (!Array.isArray(details)) return undefined
  for (const detail of details) {
    const delay =
      typeof detail === "object" && detail !== null ? (detail as { retryDelay?: unknown }).retryDelay : undefined
    const seconds = typeof delay === "string" ? /^(\d+(?:\.\d+)?)s$/.exec(delay) : null
    if (seconds !== null) return Math.ceil(Number(seconds[1]) * 1000)
  }
  return undefined
}

/**
 * Turns a non-2xx answer into an `UpstreamError` carrying the upstream's message and Retry-After
 * (the header's, else a Google `RetryInfo` delay in the body, see {@link retryDelayMs}).
 * `retryable` overrides the status's verdict where the provider's error body knows better.
 */
export const fromStatus = (
  upstream: Upstream,
  status: number,
  headers: Headers,
  answer: string,
  retryable?: (body: unknown) => boolean
): Errors.UpstreamError => {
  // Scrubbed before it is cut: a cut through a key would leave a part of it that no scrub recognises.
  const text = scrub(upstream, answer)
  let body: unknown = undefined
  try {
    body = text === "" ? undefined : JSON.parse(text)
  } catch {
    body = undefined
  }
  const now = Date.now()
  const error = Errors.Failure.http(
    upstream.id,
    status,
    // Scrubbed again once parsed: a key quoted inside a quoted text is escaped twice in the raw answer.
    scrub(upstream, `HTTP ${status}: ${errorMessage(body, text.slice(0, 200) || "no body")}`),
    {
      retryAfterMs: Provider.retryAfterMs(headers, now) ?? retryDelayMs(body),
      body: body === undefined ? undefined : scrubValue(upstream, body),
      rateLimits: Provider.parseRateLimitHeaders(headers, now)
    }
  )
  if (retryable === undefined || error.retryable || !retryable(body)) return error
  return new Errors.UpstreamError({ ...error, retryable: true }, { disableValidation: true })
}

/**
 * A 2xx answer that is not JSON. The parser quotes the text around where it failed, so its message is
 * taken from parsing the scrubbed text again: a quote cut through a key would keep a part of it.
 */
export const notJson = (upstream: Upstream, text: string, error: unknown): Errors.UpstreamError => {
  let reason = error
  try {
    JSON.parse(scrub(upstream, text))
  } catch (again) {
    reason = again
  }
  return protocolFailure(upstream, unreadable(reason))
}

/** Where one upstream is, precomputed once per upstream: undici wants origin and path apart. */
export interface Target {
  readonly origin: string
  readonly basePath: string
  /** The base URL's query (`?api-version=...`), added after each request's own path and query. */
  readonly search: string
  /** The base URL without credentials, for spans. */
  readonly spanBase: string
  readonly headers: Readonly<Record<string, string>>
}

/** How a provider authenticates: the headers that carry the upstream's API key. */
export type Auth = (apiKey: string) => Readonly<Record<string, string>>

/** `Authorization: Bearer <key>`, as OpenAI and every OpenAI-compatible server take it. */
export const bearer: Auth = (apiKey) => ({ authorization: `Bearer ${apiKey}` })

/** The {@link Target} of an upstream: its URL split for undici, its headers with `auth`'s. */
export const targetOf = (
  upstream: Upstream,
  auth: Auth,
  defaults: Readonly<Record<string, string>> = {},
  rebase: (basePath: string) => string = (basePath) => basePath
): Target => {
  const url = new URL(upstream.baseUrl)
  const basePath = rebase(url.pathname.endsWith("/") ? url.pathname.slice(0, -1) : url.pathname)
  const headers: Record<string, string> = { ...defaults, ...upstream.headers, "content-type": "application/json" }
  if (Option.isSome(upstream.apiKey)) Object.assign(headers, auth(Redacted.value(upstream.apiKey.value)))
  return { origin: url.origin, basePath, search: url.search, spanBase: url.origin + basePath, headers }
}

/** `path` (which may have a query of its own) with the base URL's `search` added. */
const withQuery = (path: string, search: string): string =>
  path.includes("?") ? `${path}&${search.slice(1)}` : path + search

/** What a {@link StreamDecoder} returns when the stream is complete. */
export const END: unique symbol = Symbol("end")

/**
 * How one provider's streamed payloads become OpenAI chunks. One per stream: a decoder may keep
 * state between payloads (which tool call a content block is, the message id).
 */
export interface StreamDecoder {
  /** How payloads are framed: server-sent events, or one JSON document per line (Ollama). */
  readonly framing: "sse" | "ndjson"
  /** What marks the end of a complete stream, for the message when it breaks off before it. */
  readonly endMarker: string
  /**
   * One payload (an SSE event's data, or one line): its chunks pushed to `out`; {@link END} once the
   * stream is complete, an `UpstreamError` when the payload is an error or unreadable.
   */
  readonly decode: (
    payload: string,
    out: Array<StreamEvent.StreamEvent>
  ) => typeof END | Errors.UpstreamError | undefined
}

/**
 * The decoder of an SSE stream of OpenAI's framing: one event per payload (`toEvent` checks it), up to
 * `data: [DONE]`. Stateless, so one may serve every stream of an upstream.
 */
export const doneDecoder = (
  toEvent: (data: string) => StreamEvent.StreamEvent | Errors.UpstreamError
): StreamDecoder => ({
  framing: "sse",
  endMarker: "[DONE]",
  decode: (payload, out) => {
    if (payload === "[DONE]") return END
    const event = toEvent(payload)
    if (event instanceof Errors.UpstreamError) return event
    out.push(event)
    return undefined
  }
})

/**
 * Splits SSE text into event payloads. Keeps partial input between calls. Comments, event names and
 * other fields are ignored (every provider repeats the event's type in its data); CRLF and CR line
 * ends are accepted.
 */
const makeSseParser = () => {
  let buffer = ""
  return (text: string, out: Array<string>): void => {
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
      out.push(data)
    }
    if (start > 0) buffer = buffer.slice(start)
  }
}

/** Splits newline-delimited JSON into lines, keeping a partial line between calls; blank lines are skipped. */
const makeLineParser = () => {
  let buffer = ""
  return (text: string, out: Array<string>): void => {
    buffer = buffer.length === 0 ? text : buffer + text
    let start = 0
    for (;;) {
      const end = buffer.indexOf("\n", start)
      if (end === -1) break
      const line = buffer.slice(start, end).trim()
      start = end + 1
      if (line !== "") out.push(line)
    }
    if (start > 0) buffer = buffer.slice(start)
  }
}

/** A whole answer, read to its end. */
export interface Answer {
  readonly _tag: "Answer"
  readonly status: number
  readonly headers: Headers
  readonly text: string
}

/** A 2xx event stream whose headers have arrived; the socket's reads feed `events`. */
export interface Opened {
  readonly _tag: "Opened"
  readonly headers: Headers
  readonly events: StreamEvent.Source
}

/** What an exchange resumes once it has settled: nothing. */
const settled = (): void => {}

type Resume = (effect: Effect.Effect<unknown, Errors.UpstreamError>) => void

/** What a whole answer becomes, decided as it ends (no further Effect step per call). */
type Whole = (answer: Answer) => Effect.Effect<unknown, Errors.UpstreamError>

/** How long the rest of an answer may take to drain after its end marker before its connection is closed. */
const DRAIN_MS = 10_000

/** Events buffered before the reader stops reading the socket until the router catches up. */
const HIGH_WATER_EVENTS = 256

const STREAM_TYPES = { sse: "text/event-stream", ndjson: "ndjson" } as const

/**
 * One upstream exchange as an undici dispatch handler. It answers `resume` once: with the whole
 * answer (non-streaming, and any non-2xx or non-stream answer to a stream request), or — for a 2xx
 * stream — as soon as the headers arrive, with a stream that the socket's reads feed.
 */
class Exchange implements Dispatcher.DispatchHandler, StreamEvent.Source {
  private controller: Dispatcher.DispatchController | undefined
  private cancelled = false
  private settled = false
  private status = 0
  private headers: Headers = {}
  private chunks: Array<Buffer> = []
  // Stream mode
  private streaming = false
  private parse: ((text: string, out: Array<string>) => void) | undefined
  private decoder: StringDecoder | undefined
  private readonly items: Array<string> = []
  private pending: Array<StreamEvent.StreamEvent> = []
  private failure: Errors.UpstreamError | undefined
  /** The stream is over for the reader: its end seen, or failed. The socket may still drain. */
  private over = false
  /** The response has ended (or failed): the connection is back in the pool or gone. */
  private finished = false
  /** The reader waiting for events (see `StreamEvent.Source.onReady`). */
  private ready: (() => void) | undefined
  /** The deadline of an answer (or of a stream's acceptance) while it runs; after the end marker, the drain's. */
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(
    private readonly upstream: Upstream,
    private readonly stream: StreamDecoder | undefined,
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
    const stream = this.stream
    if (stream !== undefined && status >= 200 && status < 300) {
      const type = this.headers["content-type"] ?? ""
      if (type.includes(STREAM_TYPES[stream.framing])) {
        this.streaming = true
        this.parse = stream.framing === "sse" ? makeSseParser() : makeLineParser()
        this.decoder = new StringDecoder("utf8")
        this.settle(Effect.succeed({ _tag: "Opened", headers: this.headers, events: this }))
      }
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.streaming) {
      this.chunks.push(chunk)
      return
    }
    // After the end the rest of the body is read and dropped, so the connection stays reusable.
    if (this.over) return
    this.parse!(this.decoder!.write(chunk), this.items)
    const decode = this.stream!.decode
    for (const item of this.items) {
      const result = decode(item, this.pending)
      if (result === undefined) continue
      if (result === END) this.over = true
      else this.fail(result)
      break
    }
    this.items.length = 0
    if (this.pending.length >= HIGH_WATER_EVENTS && !this.over) controller.pause()
    this.wake()
  }

  onResponseEnd(): void {
    this.finished = true
    this.stopTimer()
    if (this.streaming) {
      if (!this.over) {
        this.fail(
          Errors.Failure.connection(
            this.upstream.id,
            `the stream ended without ${this.stream!.endMarker}: the upstream broke off`
          )
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
    if (this.streaming) {
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
    if (this.streaming && this.over && this.failure === undefined) {
      // The end arrived: let the rest drain so the connection is reused (bounded, should the upstream
      // keep the answer open).
      this.controller?.resume()
      // Cleared when the answer ends: the timer must not keep the exchange for DRAIN_MS.
      this.timer = setTimeout(() => {
        this.timer = undefined
        if (!this.finished) this.controller?.abort(new Error("the answer did not end after its end marker"))
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

/** One POST to an upstream; see {@link Client.post}. */
export interface Post {
  readonly upstream: Upstream
  /** The path after the upstream's base URL, e.g. `/chat/completions`. */
  readonly path: string
  readonly payload: string
  /** Whether spans are exported; undefined checks. */
  readonly traced?: boolean | undefined
  /**
   * For a stream: the milliseconds the upstream has to accept it (see `Provider.Call.openTimeoutMs`);
   * absent, the router times the opening.
   */
  readonly openTimeoutMs?: number | undefined
}

/** POSTs to upstreams over one keep-alive agent. */
export interface Client {
  /**
   * A whole answer, turned into `X` by `whole` as it ends, within the upstream's `timeoutMs` (then a
   * retryable timeout, and the request is cancelled).
   */
  readonly whole: <X>(
    post: Post,
    whole: (answer: Answer) => Effect.Effect<X, Errors.UpstreamError>
  ) => Effect.Effect<X, Errors.UpstreamError>
  /**
   * A stream request: `Opened` once a 2xx stream of `decoder`'s framing starts, else the whole
   * answer. The connection belongs to the scope (closed when it closes, or drained when the stream
   * reached its end).
   */
  readonly stream: (
    post: Post,
    decoder: StreamDecoder
  ) => Effect.Effect<Answer | Opened, Errors.UpstreamError, Scope.Scope>
}

/** What {@link makeClient} needs to know about a provider. */
export interface ClientOptions {
  readonly auth: Auth
  /** Headers every request carries unless the upstream's configured `headers` set them (`anthropic-version`). */
  readonly headers?: Readonly<Record<string, string>>
  /** The base URL's path as the provider's paths need it (Ollama's native API sits beside its `/v1`). */
  readonly rebase?: (basePath: string) => string
}

/**
 * A client over an undici `Agent` (keep-alive connections per upstream origin), closed with the
 * scope. Each call is traced as an `http.client POST` span (URL without credentials, method, status;
 * never the headers) when spans are exported.
 */
export const makeClient = (options: ClientOptions): Effect.Effect<Client, never, Scope.Scope> =>
  Effect.gen(function* () {
    const agent = yield* Effect.acquireRelease(
      Effect.sync(() => new Agent({ keepAliveTimeout: 30_000, pipelining: 1 })),
      (agent) => Effect.promise(() => agent.destroy())
    )
    const targets = new WeakMap<Upstream, Target>()
    const target = (upstream: Upstream): Target => {
      let t = targets.get(upstream)
      if (t === undefined) {
        t = targetOf(upstream, options.auth, options.headers, options.rebase)
        targets.set(upstream, t)
      }
      return t
    }

    const post = <X>(
      request: Post,
      stream: StreamDecoder | undefined,
      whole: Whole | undefined,
      onExchange: ((exchange: Exchange) => void) | undefined
    ): Effect.Effect<X, Errors.UpstreamError> => {
      const { path, payload, upstream } = request
      const t = target(upstream)
      const exchange = (span: Tracer.Span | undefined) =>
        Effect.async<X, Errors.UpstreamError>((resume) => {
          const exchange = new Exchange(
            upstream,
            stream,
            span === undefined ? undefined : (status) => span.attribute("http.response.status_code", status),
            resume as Resume,
            whole
          )
          onExchange?.(exchange)
          // A whole answer has `timeoutMs` to arrive, a stream the `openTimeoutMs` the router gives to be
          // accepted (see `Provider.Service.enforcesTimeout`); a stream's first event is timed by the router.
          if (stream === undefined) exchange.deadline(upstream.timeoutMs, `no response within ${upstream.timeoutMs} ms`)
          else if (request.openTimeoutMs !== undefined) {
            exchange.deadline(request.openTimeoutMs, `the stream was not accepted within ${request.openTimeoutMs} ms`)
          }
          agent.dispatch(
            {
              origin: t.origin,
              path: t.search === "" ? t.basePath + path : withQuery(t.basePath + path, t.search),
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
      if (request.traced === false) return exchange(undefined)
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

    return {
      whole: (request, whole) => post(request, undefined, whole, undefined),
      stream: (request, decoder) =>
        Effect.flatMap(Effect.scope, (scope) => {
          let exchange: Exchange | undefined
          // Straight on the scope: `Effect.addFinalizer` would diff every fiber ref when it runs.
          const cancel = Scope.addFinalizer(
            scope,
            Effect.sync(() => exchange?.cancel())
          )
          return Effect.zipRight(
            cancel,
            post<Answer | Opened>(request, decoder, undefined, (e) => {
              exchange = e
            })
          )
        })
    }
  })

/**
 * A whole answer as `A`: the failure of a non-2xx status (`retryable` may overrule it), of a body
 * that is not JSON, or of one `translate` does not recognise as `what` (it answers undefined).
 * `relay` keeps the answer's text, for a provider that translated nothing.
 */
export const decodeWhole = <A>(
  upstream: Upstream,
  answer: Answer,
  translate: (value: unknown) => A | undefined,
  what: string,
  options: { readonly retryable?: (body: unknown) => boolean; readonly relay?: boolean } = {}
): Effect.Effect<Provider.Answer<A>, Errors.UpstreamError> => {
  if (answer.status < 200 || answer.status >= 300) {
    return Effect.fail(fromStatus(upstream, answer.status, answer.headers, answer.text, options.retryable))
  }
  let value: unknown
  try {
    value = JSON.parse(answer.text)
  } catch (error) {
    return Effect.fail(notJson(upstream, answer.text, error))
  }
  const translated = translate(value)
  if (translated === undefined) return Effect.fail(Errors.Failure.protocol(upstream.id, `the answer is not ${what}`))
  const rateLimits = Provider.parseRateLimitHeaders(answer.headers, Date.now())
  return Effect.succeed(
    options.relay === true ? { value: translated, text: answer.text, rateLimits } : { value: translated, rateLimits }
  )
}

/**
 * A stream request's answer as `Opened`, or the failure it is: its error status, or an answer that is
 * not a stream.
 */
export const opened = (
  upstream: Upstream,
  answer: Answer | Opened,
  retryable?: (body: unknown) => boolean
): Effect.Effect<Provider.Opened, Errors.UpstreamError> => {
  if (answer._tag === "Opened") {
    return Effect.succeed({
      events: answer.events,
      rateLimits: Provider.parseRateLimitHeaders(answer.headers, Date.now())
    })
  }
  if (answer.status < 200 || answer.status >= 300) {
    return Effect.fail(fromStatus(upstream, answer.status, answer.headers, answer.text, retryable))
  }
  const type = answer.headers["content-type"] ?? ""
  return Effect.fail(
    Errors.Failure.protocol(upstream.id, `expected an event stream, got content-type '${type || "none"}'`)
  )
}
