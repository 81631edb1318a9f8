/**
 * The simulated upstream's request handler and run-time state, on plain `node:http`. Everything that
 * does not depend on the request is built once; the no-delay paths answer synchronously.
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http"
import type { Options, RecordedRequest } from "../Simulator.js"
import * as Anthropic from "./simulatorAnthropic.js"
import * as Gemini from "./simulatorGemini.js"
import * as Ollama from "./simulatorOllama.js"
import * as OpenAIEndpoints from "./simulatorOpenAIEndpoints.js"
import type { Dialect, Route } from "./simulatorDialect.js"
import type { Completion } from "./simulatorContent.js"
import {
  completionOf,
  Completions,
  dice,
  embed,
  estimatePromptTokens,
  estimateTextTokens,
  halves,
  instanceOf,
  isSpecific,
  toBase64
} from "./simulatorContent.js"
import { formatDuration, SlidingWindow } from "./simulatorRateLimit.js"

/** Options with every default filled in. */
export type Resolved = { readonly [K in keyof Options]-?: Exclude<Options[K], undefined> }

/** The defaults of {@link Options}, except `seed` (random unless given). */
export const defaults: Omit<Resolved, "seed"> = {
  dialect: "openai",
  name: "sim",
  models: ["sim-model"],
  latencyMs: 0,
  ttftMs: 0,
  tokensPerSecond: 0,
  completionTokens: 16,
  rpm: 0,
  tpm: 0,
  failureRate: 0,
  failureStatus: 500,
  resetRate: 0,
  stallRate: 0,
  midStreamCutRate: 0,
  malformedEventRate: 0,
  malformedEventAfter: 2
}

/** The dialects other than OpenAI's (which is the simulator's own code path). */
const DIALECTS: Readonly<Record<string, Dialect | undefined>> = {
  anthropic: Anthropic.dialect,
  gemini: Gemini.dialect,
  ollama: Ollama.dialect
}

/** The OpenAI dialect's endpoints written as dialects of their own, by path. */
const OPENAI_ENDPOINTS: ReadonlyMap<string, Dialect> = new Map([
  ["/v1/completions", OpenAIEndpoints.completions],
  ["/v1/responses", OpenAIEndpoints.responses]
])

const WINDOW_MS = 60_000
const RECORDED = 100
const JSON_TYPE = "application/json"
const HEALTH_BODY = `{"status":"ok"}`
const DONE = "data: [DONE]\n\n"

const errorBody = (message: string, type: string, param: string | null, code: string | null): string =>
  JSON.stringify({ error: { message, type, param, code } })

const FAILURE_BODY = errorBody("simulated upstream failure", "server_error", null, null)

interface Recorded {
  readonly method: string
  readonly path: string
  readonly headers: IncomingHttpHeaders
  readonly body: unknown
  readonly receivedAt: number
}

type Headers = Record<string, string>
type Body = Readonly<Record<string, unknown>>

const isObject = (u: unknown): u is Body => typeof u === "object" && u !== null && !Array.isArray(u)

const sendJson = (res: ServerResponse, status: number, body: string, headers?: Headers): void => {
  res.statusCode = status
  res.setHeader("content-type", JSON_TYPE)
  res.setHeader("content-length", Buffer.byteLength(body))
  if (headers !== undefined) for (const key in headers) res.setHeader(key, headers[key]!)
  res.end(body)
}

const invalid = (res: ServerResponse, message: string, param: string | null, code: string | null): void =>
  sendJson(res, 400, errorBody(message, "invalid_request_error", param, code))

/** The number of completion tokens: the configured count, capped by `max_completion_tokens` / `max_tokens`. */
const completionCount = (configured: number, body: Body): { readonly n: number; readonly capped: boolean } => {
  const max = body["max_completion_tokens"] ?? body["max_tokens"]
  if (typeof max === "number" && max >= 0 && max < configured) return { n: Math.floor(max), capped: true }
  return { n: configured, capped: false }
}

/**
 * The tool the completion calls, or undefined when it answers with content: the one `tool_choice`
 * names, else the first — unless `tool_choice` is `none`, or the last message is a tool result and no
 * call is required (then it answers the result with text, as a model ending an agent's loop does).
 */
const toolToCall = (body: Body): string | undefined => {
  const tools = body["tools"]
  if (!Array.isArray(tools) || tools.length === 0) return undefined
  const choice = body["tool_choice"]
  if (choice === "none") return undefined
  if (isObject(choice)) {
    const named = isObject(choice["function"]) ? choice["function"]["name"] : undefined
    if (typeof named === "string") return named
  }
  const messages = body["messages"] as ReadonlyArray<unknown>
  const last = messages[messages.length - 1]
  if (choice !== "required" && isObject(last) && (last["role"] === "tool" || last["role"] === "function")) {
    return undefined
  }
  const first: unknown = tools[0]
  if (isObject(first)) {
    for (const key of ["function", "custom"]) {
      const definition = first[key]
      if (isObject(definition) && typeof definition["name"] === "string") return definition["name"]
    }
  }
  return "tool"
}

/**
 * The arguments of a call to `tool`: a JSON object valid against the tool's `parameters` schema (its
 * required fields filled, as a model's call would), `{}` when the tool declares none.
 */
const toolArguments = (body: Body, tool: string, text: string): string => {
  const tools = Array.isArray(body["tools"]) ? (body["tools"] as ReadonlyArray<unknown>) : []
  const found = tools.find((t) => isObject(t) && isObject(t["function"]) && t["function"]["name"] === tool)
  const parameters = isObject(found) && isObject(found["function"]) ? found["function"]["parameters"] : undefined
  return JSON.stringify(instanceOf(parameters, text) ?? {})
}

/** The JSON schema of a `json_schema` response format, when it has one. */
const schemaOf = (body: Body): unknown => {
  const format = body["response_format"]
  return isObject(format) && isObject(format["json_schema"]) ? format["json_schema"]["schema"] : undefined
}

const wantsJson = (body: Body): boolean => {
  const format = body["response_format"]
  return isObject(format) && (format["type"] === "json_object" || format["type"] === "json_schema")
}

/** Turns an embeddings `input` into texts (token arrays joined by commas), or undefined when malformed. */
const embeddingInputs = (input: unknown): ReadonlyArray<{ text: string; tokens: number }> | undefined => {
  if (typeof input === "string") return [{ text: input, tokens: estimateTextTokens(input) }]
  if (!Array.isArray(input) || input.length === 0) return undefined
  if (input.every((x) => typeof x === "number")) return [{ text: input.join(","), tokens: input.length }]
  const out: Array<{ text: string; tokens: number }> = []
  for (const item of input as ReadonlyArray<unknown>) {
    if (typeof item === "string") out.push({ text: item, tokens: estimateTextTokens(item) })
    else if (Array.isArray(item) && item.every((x) => typeof x === "number"))
      out.push({ text: item.join(","), tokens: item.length })
    else return undefined
  }
  return out
}

const normalizeHeaders = (headers: IncomingHttpHeaders): Readonly<Record<string, string>> => {
  const out: Record<string, string> = {}
  for (const key in headers) {
    const value = headers[key]
    if (value !== undefined) out[key] = typeof value === "string" ? value : value.join(", ")
  }
  return out
}

/** The simulated upstream: options, dice, rate-limit windows, recordings and the request handler. */
export class SimulatorState {
  options: Resolved
  private random: () => number
  private completions: Completions
  private modelsBody = ""
  private readonly recorded: Array<Recorded> = []
  private counters = { requests: 0, rateLimited: 0, failures: 0 }
  private readonly requestWindow = new SlidingWindow(WINDOW_MS)
  private readonly tokenWindow = new SlidingWindow(WINDOW_MS)
  private readonly timers = new Set<NodeJS.Timeout>()
  private readonly created = Math.floor(Date.now() / 1000)
  private sequence = 0
  private closed = false

  constructor(options: Resolved) {
    this.options = options
    this.random = dice(options.seed)
    this.completions = new Completions(options.name)
    this.modelsBody = this.buildModels()
  }

  /** Merges `patch` into the options; a new `seed` restarts the dice. */
  setOptions(patch: Partial<Options>): void {
    const previous = this.options
    const merged: Record<string, unknown> = { ...previous }
    for (const key in patch) {
      const value = (patch as Record<string, unknown>)[key]
      merged[key] = value === undefined && key !== "seed" ? (defaults as Record<string, unknown>)[key] : value
    }
    if (merged["seed"] === undefined) merged["seed"] = previous.seed
    this.options = merged as Resolved
    if (patch.seed !== undefined) this.random = dice(patch.seed)
    if (this.options.name !== previous.name) this.completions = new Completions(this.options.name)
    this.modelsBody = this.buildModels()
  }

  /** The last recorded requests, oldest first. */
  requests(): ReadonlyArray<RecordedRequest> {
    return this.recorded.map((r) => ({
      method: r.method,
      path: r.path,
      headers: normalizeHeaders(r.headers),
      body: r.body,
      receivedAt: r.receivedAt
    }))
  }

  /** Counters since start or the last {@link reset}. */
  stats(): { readonly requests: number; readonly rateLimited: number; readonly failures: number } {
    return { ...this.counters }
  }

  /** Clears recordings, counters and rate-limit windows. */
  reset(): void {
    this.recorded.length = 0
    this.counters = { requests: 0, rateLimited: 0, failures: 0 }
    this.requestWindow.clear()
    this.tokenWindow.clear()
  }

  /** Stops every pending timer; later timers and writes are dropped. */
  close(): void {
    this.closed = true
    for (const timer of this.timers) clearTimeout(timer)
    this.timers.clear()
  }

  /** The `node:http` request listener. */
  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? "/"
    const query = url.indexOf("?")
    const path = query === -1 ? url : url.slice(0, query)
    if (path === "/health") return sendJson(res, 200, HEALTH_BODY)
    const method = req.method ?? "GET"
    if (method !== "POST") return this.route(req, res, method, path, undefined, false)
    let raw = ""
    req.setEncoding("utf8")
    req.on("data", (chunk: string) => {
      raw += chunk
    })
    req.on("end", () => {
      let body: unknown = undefined
      let malformed = false
      if (raw !== "") {
        try {
          body = JSON.parse(raw)
        } catch {
          body = raw
          malformed = true
        }
      }
      this.route(req, res, method, path, body, malformed)
    })
  }

  private route(
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    path: string,
    body: unknown,
    malformed: boolean
  ): void {
    this.counters.requests++
    if (this.recorded.length >= RECORDED) this.recorded.shift()
    this.recorded.push({ method, path, headers: req.headers, body, receivedAt: Date.now() })
    try {
      const dialect = DIALECTS[this.options.dialect]
      if (dialect !== undefined) {
        const route =
          method === "POST" ? dialect.route(path, new URLSearchParams((req.url ?? "").slice(path.length))) : undefined
        if (route?._tag === "chat") return this.dialectChat(req, res, body, malformed, dialect, route)
        if (route?._tag === "embeddings") return this.dialectEmbeddings(req, res, body, malformed, dialect, route)
      } else {
        if (method === "POST" && path === "/v1/chat/completions") return this.chat(req, res, body, malformed)
        if (method === "POST" && path === "/v1/embeddings") return this.embeddings(req, res, body, malformed)
        const endpoint = method === "POST" ? OPENAI_ENDPOINTS.get(path) : undefined
        if (endpoint !== undefined) return this.dialectChat(req, res, body, malformed, endpoint, { _tag: "chat" })
      }
      if (method === "GET" && path === "/v1/models") return sendJson(res, 200, this.modelsBody)
      if (method === "GET" && path.startsWith("/v1/models/")) return this.model(res, path)
      this.sendError(res, 404, `Invalid URL (${method} ${path})`, "invalid_request_error", null)
    } catch (cause) {
      // A bug of the simulator: answer rather than crash the process hosting it.
      if (!res.headersSent) sendJson(res, 500, errorBody(`simulator bug: ${String(cause)}`, "server_error", null, null))
      else res.destroy()
    }
  }

  private roll(rate: number): boolean {
    return rate > 0 && this.random() < rate
  }

  /** Rolls the connection-level faults; true when the request must not be answered. */
  private connectionFault(req: IncomingMessage): boolean {
    const o = this.options
    if (this.roll(o.resetRate)) {
      this.counters.failures++
      req.socket.destroy()
      return true
    }
    if (this.roll(o.stallRate)) {
      this.counters.failures++
      return true
    }
    return false
  }

  /**
   * Admits a request of `tokens` tokens under the rpm / tpm limits. Returns the rate-limit headers
   * for the answer, or undefined after answering 429 itself.
   */
  private admit(res: ServerResponse, tokens: number): Headers | undefined {
    const o = this.options
    const rpm = o.rpm > 0 ? o.rpm : 0
    const tpm = o.tpm > 0 ? o.tpm : 0
    if (rpm === 0 && tpm === 0) return {}
    const now = Date.now()
    const requestWait = rpm > 0 ? this.requestWindow.waitMs(now, 1, rpm) : 0
    const tokenWait = tpm > 0 && requestWait === 0 ? this.tokenWindow.waitMs(now, tokens, tpm) : 0
    const admitted = requestWait === 0 && tokenWait === 0
    if (admitted) {
      if (rpm > 0) this.requestWindow.add(now, 1)
      if (tpm > 0) this.tokenWindow.add(now, tokens)
    }
    const headers: Headers = {}
    if (rpm > 0) {
      headers["x-ratelimit-limit-requests"] = String(rpm)
      headers["x-ratelimit-remaining-requests"] = String(Math.max(0, rpm - this.requestWindow.used(now)))
      headers["x-ratelimit-reset-requests"] = formatDuration(this.requestWindow.resetMs(now))
    }
    if (tpm > 0) {
      headers["x-ratelimit-limit-tokens"] = String(tpm)
      headers["x-ratelimit-remaining-tokens"] = String(Math.max(0, tpm - this.tokenWindow.used(now)))
      headers["x-ratelimit-reset-tokens"] = formatDuration(this.tokenWindow.resetMs(now))
    }
    const dialect = DIALECTS[o.dialect]
    const own =
      dialect === undefined
        ? undefined
        : dialect.rateLimitHeaders(headers, now, {
            requests: this.requestWindow.resetMs(now),
            tokens: this.tokenWindow.resetMs(now)
          })
    if (admitted) return own ?? headers
    this.counters.rateLimited++
    const kind = requestWait > 0 ? "requests" : "tokens"
    const wait = requestWait > 0 ? requestWait : tokenWait
    const limit = kind === "requests" ? rpm : tpm
    const used = kind === "requests" ? this.requestWindow.used(now) : this.tokenWindow.used(now)
    const requested = kind === "requests" ? 1 : tokens
    let message: string
    if (wait === Infinity) {
      message =
        `Request too large for tokens per min (TPM) on simulated upstream '${o.name}': Limit ${limit}, ` +
        `Requested ${requested}. Shorten the prompt or lower max_tokens.`
    } else {
      message =
        `Rate limit reached for ${kind} per min on simulated upstream '${o.name}': Limit ${limit}, Used ${used}, ` +
        `Requested ${requested}. Please try again in ${formatDuration(wait)}.`
      headers["retry-after"] = String(Math.ceil(wait / 1000))
      headers["retry-after-ms"] = String(Math.ceil(wait))
      if (own !== undefined) own["retry-after"] = headers["retry-after"]
    }
    this.sendError(res, 429, message, kind, "rate_limit_exceeded", own ?? headers)
    return undefined
  }

  /** An error answer in the dialect's envelope (OpenAI's `type` and `code` are used by the OpenAI one). */
  private sendError(
    res: ServerResponse,
    status: number,
    message: string,
    type: string,
    code: string | null,
    headers?: Headers
  ): void {
    const dialect = DIALECTS[this.options.dialect]
    const body = dialect !== undefined ? dialect.errorBody(status, message) : errorBody(message, type, null, code)
    sendJson(res, status, body, headers)
  }

  /** The injected failure of `failureRate`, in the dialect's envelope. */
  private injectedFailure(res: ServerResponse, headers: Headers): void {
    this.counters.failures++
    const status = this.options.failureStatus
    const dialect = DIALECTS[this.options.dialect]
    if (dialect !== undefined) {
      const message = status === 529 || status === 503 ? "Overloaded" : "simulated upstream failure"
      return sendJson(res, status, dialect.errorBody(status, message), headers)
    }
    sendJson(res, status, FAILURE_BODY, headers)
  }

  /** Runs `f` after `ms` real milliseconds, unless the simulator closed meanwhile. */
  private later(ms: number, f: () => void): void {
    if (this.closed) return
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      if (!this.closed) f()
    }, ms)
    this.timers.add(timer)
  }

  private chat(req: IncomingMessage, res: ServerResponse, body: unknown, malformed: boolean): void {
    if (this.connectionFault(req)) return
    if (malformed || !isObject(body)) {
      return invalid(
        res,
        "We could not parse the JSON body of your request. The request body must be a JSON object.",
        null,
        null
      )
    }
    const messages = body["messages"]
    if (messages === undefined) return invalid(res, "Missing required parameter: 'messages'.", "messages", null)
    if (!Array.isArray(messages)) {
      return invalid(res, "Invalid type for 'messages': expected an array of message objects.", "messages", null)
    }
    if (messages.length === 0) {
      return invalid(res, "Invalid 'messages': empty array. Expected an array with minimum length 1.", "messages", null)
    }
    const o = this.options
    const model = typeof body["model"] === "string" ? body["model"] : (o.models[0] ?? "sim-model")
    const promptTokens = estimatePromptTokens(messages)
    const { capped, n } = completionCount(o.completionTokens, body)
    const headers = this.admit(res, promptTokens + n)
    if (headers === undefined) return
    if (this.roll(o.failureRate)) return this.injectedFailure(res, headers)
    const tool = toolToCall(body)
    const json = tool === undefined && wantsJson(body)
    const finishReason = tool !== undefined ? "tool_calls" : capped ? "length" : "stop"
    const usage = `{"prompt_tokens":${promptTokens},"completion_tokens":${n},"total_tokens":${promptTokens + n}}`
    const id = `chatcmpl-${o.name}-${(++this.sequence).toString(36)}`
    const created = Math.floor(Date.now() / 1000)
    const callId = `call_${o.name}_${this.sequence.toString(36)}`
    const args = tool === undefined ? "{}" : toolArguments(body, tool, o.name)
    if (body["stream"] === true) {
      const streamOptions = body["stream_options"]
      const includeUsage = isObject(streamOptions) && streamOptions["include_usage"] === true
      const cut = this.roll(o.midStreamCutRate)
      const cutAfter = cut ? 2 + Math.floor(this.random() * 2) : 0
      if (cut) this.counters.failures++
      const malformed = this.roll(o.malformedEventRate)
      if (malformed) this.counters.failures++
      return this.stream(req, res, headers, {
        id,
        created,
        model,
        tool,
        args,
        callId,
        json,
        schema: schemaOf(body),
        n,
        finishReason,
        usage: includeUsage ? usage : undefined,
        cutAfter: cut ? cutAfter : undefined,
        malformedAfter: malformed ? o.malformedEventAfter : undefined
      })
    }
    const completion = json ? this.jsonCompletion(schemaOf(body), n) : this.completions.get(n, false)
    const content = tool !== undefined ? "null" : JSON.stringify(completion.content)
    const toolCalls =
      tool === undefined
        ? ""
        : `,"tool_calls":[{"id":"${callId}","type":"function","function":{"name":${JSON.stringify(tool)},"arguments":${JSON.stringify(args)}}}]`
    const answer =
      `{"id":${JSON.stringify(id)},"object":"chat.completion","created":${created},"model":${JSON.stringify(model)},` +
      `"choices":[{"index":0,"message":{"role":"assistant","content":${content},"refusal":null${toolCalls}},` +
      `"logprobs":null,"finish_reason":"${finishReason}"}],"usage":${usage}}`
    if (o.latencyMs > 0) this.later(o.latencyMs, () => sendJson(res, 200, answer, headers))
    else sendJson(res, 200, answer, headers)
  }

  private stream(
    req: IncomingMessage,
    res: ServerResponse,
    headers: Headers,
    c: {
      readonly id: string
      readonly created: number
      readonly model: string
      readonly tool: string | undefined
      /** The tool call's arguments (JSON), sent in two deltas. */
      readonly args: string
      readonly callId: string
      readonly json: boolean
      readonly schema: unknown
      readonly n: number
      readonly finishReason: string
      readonly usage: string | undefined
      readonly cutAfter: number | undefined
      readonly malformedAfter: number | undefined
    }
  ): void {
    const head =
      `data: {"id":${JSON.stringify(c.id)},"object":"chat.completion.chunk","created":${c.created},` +
      `"model":${JSON.stringify(c.model)},"choices":[{"index":0,"delta":`
    const usageNull = c.usage !== undefined ? `,"usage":null` : ""
    const tail = `,"logprobs":null,"finish_reason":null}]${usageNull}}\n\n`
    // frames[i] is sent at step steps[i]: ttftMs + step * (1000 / tokensPerSecond).
    const frames: Array<string> = []
    const steps: Array<number> = []
    let contentFrames: number
    if (c.tool !== undefined) {
      const [first, second] = halves(c.args)
      frames.push(
        head +
          `{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"${c.callId}","type":"function",` +
          `"function":{"name":${JSON.stringify(c.tool)},"arguments":""}}]}` +
          tail,
        head + `{"tool_calls":[{"index":0,"function":{"arguments":${JSON.stringify(first)}}}]}` + tail,
        head + `{"tool_calls":[{"index":0,"function":{"arguments":${JSON.stringify(second)}}}]}` + tail
      )
      steps.push(0, 0, 1)
      contentFrames = 2
    } else {
      const deltas = (c.json ? this.jsonCompletion(c.schema, c.n) : this.completions.get(c.n, false)).deltas
      frames.push(head + `{"role":"assistant","content":""}` + tail)
      steps.push(0)
      for (let i = 0; i < deltas.length; i++) {
        frames.push(head + deltas[i] + tail)
        steps.push(i)
      }
      contentFrames = deltas.length
    }
    const lastStep = steps[steps.length - 1]!
    let end: number
    if (c.cutAfter !== undefined) {
      end = 1 + Math.min(contentFrames, c.cutAfter)
    } else {
      frames.push(head + `{}` + `,"logprobs":null,"finish_reason":"${c.finishReason}"}]${usageNull}}\n\n`)
      steps.push(lastStep)
      if (c.usage !== undefined) {
        frames.push(
          `data: {"id":${JSON.stringify(c.id)},"object":"chat.completion.chunk","created":${c.created},` +
            `"model":${JSON.stringify(c.model)},"choices":[],"usage":${c.usage}}\n\n`
        )
        steps.push(lastStep)
      }
      frames.push(DONE)
      steps.push(lastStep)
      end = frames.length
    }
    if (c.malformedAfter !== undefined) {
      // A chunk cut short, as a proxy that mangles one event would send it: not valid JSON.
      const at = 1 + Math.min(contentFrames, c.malformedAfter)
      frames.splice(at, 0, head + `{"content":"lor\n\n`)
      steps.splice(at, 0, steps[at - 1]!)
      if (at <= end) end++
    }
    this.pump(req, res, headers, frames, steps, end, c.cutAfter !== undefined)
  }

  /**
   * Sends `frames[0..end)` as an event stream, frame i at `ttftMs + steps[i] * (1000 / tokensPerSecond)`;
   * then ends the answer, or — when `cut` — destroys the socket (a stream broken off).
   */
  private pump(
    req: IncomingMessage,
    res: ServerResponse,
    headers: Headers,
    frames: ReadonlyArray<string>,
    steps: ReadonlyArray<number>,
    end: number,
    cut: boolean,
    type = "text/event-stream; charset=utf-8"
  ): void {
    const o = this.options
    res.statusCode = 200
    res.setHeader("content-type", type)
    res.setHeader("cache-control", "no-cache")
    for (const key in headers) res.setHeader(key, headers[key]!)
    const interval = o.tokensPerSecond > 0 ? 1000 / o.tokensPerSecond : 0
    const ttft = o.ttftMs
    const start = Date.now()
    let next = 0
    const pump = (): void => {
      if (res.destroyed) return
      const elapsed = Date.now() - start
      let out = ""
      while (next < end && ttft + steps[next]! * interval <= elapsed) out += frames[next++]
      if (next >= end) {
        if (!cut) res.end(out)
        else res.write(out, () => req.socket.destroy())
        return
      }
      if (out !== "") res.write(out)
      this.later(ttft + steps[next]! * interval - elapsed, pump)
    }
    if (ttft > 0 || interval > 0) res.flushHeaders()
    pump()
  }

  /**
   * The answer to a request for JSON: a value valid against `schema` when it says more than "an
   * object" (its strings the completion's words), else the JSON-mode object; streamed in `n` pieces.
   */
  private jsonCompletion(schema: unknown, n: number): Completion {
    if (!isSpecific(schema)) return this.completions.get(n, true)
    return completionOf(JSON.stringify(instanceOf(schema, this.completions.get(Math.min(n, 4), false).content)), n)
  }

  /** A chat request of a provider's own dialect: the same decisions as {@link chat}, in its shapes. */
  private dialectChat(
    req: IncomingMessage,
    res: ServerResponse,
    body: unknown,
    malformed: boolean,
    dialect: Dialect,
    route: Extract<Route, { _tag: "chat" }>
  ): void {
    if (this.connectionFault(req)) return
    if (malformed || !isObject(body))
      return sendJson(res, 400, dialect.errorBody(400, "The request body is not valid JSON."))
    const problem = dialect.problem(body)
    if (problem !== undefined) return sendJson(res, 400, dialect.errorBody(400, problem))
    const o = this.options
    const inputTokens = estimatePromptTokens(dialect.promptMessages(body))
    const { capped, n } = completionCount(o.completionTokens, { max_tokens: dialect.maxTokens(body) })
    const headers = this.admit(res, inputTokens + n)
    if (headers === undefined) return
    if (this.roll(o.failureRate)) return this.injectedFailure(res, headers)
    const tool = dialect.tool(body)
    const sequence = (++this.sequence).toString(36)
    const answer = {
      id: `msg_${o.name}_${sequence}`,
      model: route.model ?? (typeof body["model"] === "string" ? body["model"] : (o.models[0] ?? "sim-model")),
      tool,
      toolId: `toolu_${o.name}_${sequence}`,
      completion:
        tool === undefined && dialect.json(body)
          ? this.jsonCompletion(dialect.schema?.(body), n)
          : this.completions.get(n, false),
      toolInput: tool === undefined ? {} : (instanceOf(dialect.toolSchema?.(body, tool), this.options.name) ?? {}),
      finish: tool !== undefined ? "tool" : capped ? "length" : "stop",
      inputTokens,
      outputTokens: n,
      now: Date.now()
    } as const
    if (!(route.stream ?? dialect.streams(body))) {
      const text = dialect.message(answer)
      if (o.latencyMs > 0) this.later(o.latencyMs, () => sendJson(res, 200, text, headers))
      else sendJson(res, 200, text, headers)
      return
    }
    const { content, frames, head, steps } = dialect.frames(answer)
    const cut = this.roll(o.midStreamCutRate)
    if (cut) this.counters.failures++
    let end = cut ? head + Math.min(content, 2 + Math.floor(this.random() * 2)) : frames.length
    if (this.roll(o.malformedEventRate)) {
      this.counters.failures++
      const at = head + Math.min(content, o.malformedEventAfter)
      frames.splice(at, 0, dialect.malformed)
      steps.splice(at, 0, steps[at - 1] ?? 0)
      if (at <= end) end++
    }
    this.pump(req, res, headers, frames, steps, end, cut, dialect.streamType)
  }

  /** An embeddings request of a provider's own dialect. */
  private dialectEmbeddings(
    req: IncomingMessage,
    res: ServerResponse,
    body: unknown,
    malformed: boolean,
    dialect: Dialect,
    route: Extract<Route, { _tag: "embeddings" }>
  ): void {
    if (this.connectionFault(req)) return
    if (dialect.embeddingsRequest === undefined || dialect.embeddings === undefined) {
      return sendJson(res, 404, dialect.errorBody(404, "embeddings are not served here"))
    }
    if (malformed || !isObject(body))
      return sendJson(res, 400, dialect.errorBody(400, "The request body is not valid JSON."))
    const request = dialect.embeddingsRequest(body)
    if (typeof request === "string") return sendJson(res, 400, dialect.errorBody(400, request))
    let tokens = 0
    for (const text of request.texts) tokens += estimateTextTokens(text)
    const headers = this.admit(res, tokens)
    if (headers === undefined) return
    if (this.roll(this.options.failureRate)) return this.injectedFailure(res, headers)
    const dimensions = request.dimensions ?? 8
    const model = route.model ?? (typeof body["model"] === "string" ? body["model"] : "sim-model")
    const answer = dialect.embeddings(
      model,
      request.texts.map((text) => Array.from(embed(text, dimensions))),
      tokens
    )
    if (this.options.latencyMs > 0) this.later(this.options.latencyMs, () => sendJson(res, 200, answer, headers))
    else sendJson(res, 200, answer, headers)
  }

  private embeddings(req: IncomingMessage, res: ServerResponse, body: unknown, malformed: boolean): void {
    if (this.connectionFault(req)) return
    if (malformed || !isObject(body)) {
      return invalid(
        res,
        "We could not parse the JSON body of your request. The request body must be a JSON object.",
        null,
        null
      )
    }
    if (body["input"] === undefined) return invalid(res, "Missing required parameter: 'input'.", "input", null)
    const inputs = embeddingInputs(body["input"])
    if (inputs === undefined) {
      return invalid(
        res,
        "Invalid 'input': expected a string, an array of strings, an array of tokens or an array of token arrays.",
        "input",
        null
      )
    }
    const o = this.options
    let tokens = 0
    for (const input of inputs) tokens += input.tokens
    const headers = this.admit(res, tokens)
    if (headers === undefined) return
    if (this.roll(o.failureRate)) return this.injectedFailure(res, headers)
    const requested = body["dimensions"]
    const dimensions =
      typeof requested === "number" && Number.isInteger(requested) && requested > 0 && requested <= 4096 ? requested : 8
    const base64 = body["encoding_format"] === "base64"
    const model = typeof body["model"] === "string" ? body["model"] : (o.models[0] ?? "sim-model")
    const answer = JSON.stringify({
      object: "list",
      data: inputs.map((input, index) => {
        const vector = embed(input.text, dimensions)
        return { object: "embedding", index, embedding: base64 ? toBase64(vector) : Array.from(vector) }
      }),
      model,
      usage: { prompt_tokens: tokens, total_tokens: tokens }
    })
    if (o.latencyMs > 0) this.later(o.latencyMs, () => sendJson(res, 200, answer, headers))
    else sendJson(res, 200, answer, headers)
  }

  private model(res: ServerResponse, path: string): void {
    let id: string
    try {
      id = decodeURIComponent(path.slice("/v1/models/".length))
    } catch {
      id = path.slice("/v1/models/".length)
    }
    if (!this.options.models.includes(id)) {
      return sendJson(
        res,
        404,
        errorBody(`The model '${id}' does not exist`, "invalid_request_error", "model", "model_not_found")
      )
    }
    sendJson(res, 200, JSON.stringify(this.modelObject(id)))
  }

  private modelObject(id: string): { id: string; object: "model"; created: number; owned_by: string } {
    return { id, object: "model", created: this.created, owned_by: this.options.name }
  }

  private buildModels(): string {
    return JSON.stringify({ object: "list", data: this.options.models.map((id) => this.modelObject(id)) })
  }
}
