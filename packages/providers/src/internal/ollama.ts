/**
 * OpenAI requests → Ollama's native API (`/api/chat`, `/api/embed`) and its answers back: a whole
 * chat answer, NDJSON stream lines as chunks, embeddings.
 */
import type { Errors, StreamEvent, Topology } from "@sluice/core"
import { Wire } from "@sluice/core"
import { parseArguments, Unsupported } from "./anthropicRequest.js"
import type { StreamDecoder } from "./transport.js"
import { END, malformedEvent, streamError } from "./transport.js"

type Json = Record<string, unknown>

const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

const count = (u: unknown): number => (typeof u === "number" && Number.isFinite(u) ? u : 0)

const DATA_URL = /^data:[^;,]+;base64,(.*)$/s

/** A message's text and images (base64, as Ollama takes them). */
const contentOf = (content: unknown): { text: string; images: Array<string> } | Unsupported => {
  if (typeof content === "string") return { text: content, images: [] }
  if (!Array.isArray(content)) return { text: "", images: [] }
  let text = ""
  const images: Array<string> = []
  for (const part of content) {
    if (!isObject(part)) continue
    if (part["type"] === "text" && typeof part["text"] === "string") text += part["text"]
    else if (part["type"] === "image_url") {
      const image = part["image_url"]
      const url = typeof image === "string" ? image : isObject(image) ? image["url"] : undefined
      const data = typeof url === "string" ? DATA_URL.exec(url) : null
      if (data === null) return new Unsupported("image URL", "Ollama takes images as base64 data URLs only")
      images.push(data[1]!)
    } else return new Unsupported(String(part["type"]), `content parts of type '${String(part["type"])}'`)
  }
  return { text, images }
}

/**
 * The `/api/chat` body for an OpenAI chat request: messages with images as base64 `images` and tool
 * calls with object arguments; tools as OpenAI writes them; `response_format` as `format` (`json`
 * or the schema); sampling, `max_tokens` (`num_predict`), `stop` and `seed` in `options`, with the
 * request's own Ollama `options` (`num_ctx`...) on top. `tool_choice` other than `auto` / `none`
 * and `n > 1` are {@link Unsupported}.
 */
export const toOllama = (request: Wire.ChatCompletionRequest, model: string, stream: boolean): Json | Unsupported => {
  const n = request["n"]
  if (typeof n === "number" && n > 1) return new Unsupported("n", `Ollama returns one choice per request (n = ${n})`)
  const choice = request["tool_choice"]
  if (choice !== undefined && choice !== "auto" && choice !== "none") {
    return new Unsupported("tool_choice", "Ollama cannot be made to call a tool")
  }
  const names = new Map<unknown, unknown>()
  const messages: Array<Json> = []
  for (const message of request.messages as ReadonlyArray<Wire.ChatMessage>) {
    const content = contentOf(message.content)
    if (content instanceof Unsupported) return content
    const role = message.role === "developer" ? "system" : message.role === "function" ? "tool" : message.role
    const out: Json = { role, content: content.text }
    if (content.images.length > 0) out["images"] = content.images
    const calls = message["tool_calls"]
    if (Array.isArray(calls)) {
      out["tool_calls"] = calls.filter(isObject).map((call) => {
        const fn = isObject(call["function"]) ? call["function"] : {}
        names.set(call["id"], fn["name"])
        return { function: { name: fn["name"], arguments: parseArguments(fn["arguments"]) } }
      })
    }
    if (role === "tool") {
      const name = message.role === "tool" ? names.get(message["tool_call_id"]) : message.name
      if (name !== undefined) out["tool_name"] = name
    }
    messages.push(out)
  }
  const body: Json = { model, messages, stream }
  if (choice !== "none" && request.tools !== undefined && request.tools.length > 0) body["tools"] = request.tools
  const format = request.response_format as Json | undefined
  if (format?.["type"] === "json_object") body["format"] = "json"
  if (format?.["type"] === "json_schema") {
    const spec = isObject(format["json_schema"]) ? format["json_schema"] : {}
    body["format"] = isObject(spec["schema"]) ? spec["schema"] : "json"
  }
  const options: Json = {}
  if (typeof request["temperature"] === "number") options["temperature"] = request["temperature"]
  if (typeof request["top_p"] === "number") options["top_p"] = request["top_p"]
  if (typeof request["seed"] === "number") options["seed"] = request["seed"]
  const max = Wire.requestedMaxTokens(request)
  if (max !== undefined) options["num_predict"] = max
  const stop = request["stop"]
  if (typeof stop === "string") options["stop"] = [stop]
  else if (Array.isArray(stop) && stop.length > 0) options["stop"] = stop
  if (isObject(request["options"])) Object.assign(options, request["options"])
  if (Object.keys(options).length > 0) body["options"] = options
  if (request["keep_alive"] !== undefined) body["keep_alive"] = request["keep_alive"]
  return body
}

/** Usage from `prompt_eval_count` / `eval_count`. */
export const usageOf = (answer: Json): Wire.Usage => {
  const prompt = count(answer["prompt_eval_count"])
  const completion = count(answer["eval_count"])
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
}

const toolCallsOf = (message: Json, first: number): Array<Json> =>
  (Array.isArray(message["tool_calls"]) ? (message["tool_calls"] as ReadonlyArray<unknown>) : [])
    .filter(isObject)
    .map((call, i) => {
      const fn = isObject(call["function"]) ? call["function"] : {}
      return {
        id: typeof call["id"] === "string" ? call["id"] : `call_${first + i}`,
        type: "function",
        function: {
          name: fn["name"],
          arguments: typeof fn["arguments"] === "string" ? fn["arguments"] : JSON.stringify(fn["arguments"] ?? {})
        }
      }
    })

const finishOf = (answer: Json, calledTools: boolean): string =>
  answer["done_reason"] === "length" ? "length" : calledTools ? "tool_calls" : "stop"

/** A whole `/api/chat` answer as an OpenAI chat completion; undefined when it is not one. */
export const fromOllama = (answer: unknown, created: number): Wire.ChatCompletion | undefined => {
  if (!isObject(answer) || !isObject(answer["message"])) return undefined
  const message = answer["message"]
  const calls = toolCallsOf(message, 0)
  const text = typeof message["content"] === "string" ? message["content"] : ""
  return {
    id: `ollama-${created}`,
    object: "chat.completion",
    created,
    model: String(answer["model"] ?? ""),
    choices: [
      {
        index: 0,
        message: {
          role: "assistant",
          content: text === "" && calls.length > 0 ? null : text,
          refusal: null,
          ...(calls.length > 0 ? { tool_calls: calls } : {})
        },
        logprobs: null,
        finish_reason: finishOf(answer, calls.length > 0)
      }
    ],
    usage: usageOf(answer)
  }
}

/**
 * A decoder of one `/api/chat` NDJSON stream into OpenAI chunks: the role chunk first, content
 * deltas, tool calls (Ollama sends each whole), and at the `done` line the finish chunk, a usage-only
 * chunk and the end. A line with an `error` is a failure.
 */
export const streamDecoder = (upstream: Topology.Upstream, created: number): StreamDecoder => {
  let started = false
  let calls = 0
  let model = ""
  const id = `ollama-${created}`
  const chunk = (delta: Json, finish: string | null = null) =>
    JSON.stringify({
      id,
      object: "chat.completion.chunk",
      created,
      model,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }]
    })
  const decode = (
    payload: string,
    out: Array<StreamEvent.StreamEvent>
  ): typeof END | Errors.UpstreamError | undefined => {
    let line: unknown
    try {
      line = JSON.parse(payload)
    } catch {
      line = undefined
    }
    if (!isObject(line)) return malformedEvent(upstream, payload)
    if (line["error"] !== undefined) return streamError(upstream, line, payload)
    if (typeof line["model"] === "string") model = line["model"]
    if (!started) {
      started = true
      out.push({ data: chunk({ role: "assistant", content: "" }) })
    }
    const message = isObject(line["message"]) ? line["message"] : {}
    if (typeof message["content"] === "string" && message["content"] !== "") {
      out.push({ data: chunk({ content: message["content"] }) })
    }
    const toolCalls = toolCallsOf(message, calls)
    if (toolCalls.length > 0) {
      out.push({ data: chunk({ tool_calls: toolCalls.map((call, i) => ({ index: calls + i, ...call })) }) })
      calls += toolCalls.length
    }
    if (line["done"] !== true) return undefined
    out.push({ data: chunk({}, finishOf(line, calls > 0)) })
    const usage = usageOf(line)
    out.push({
      data: JSON.stringify({ id, object: "chat.completion.chunk", created, model, choices: [], usage }),
      usage,
      usageOnly: true
    })
    return END
  }
  return { framing: "ndjson", endMarker: "a done line", decode }
}

/** The `/api/embed` body for an OpenAI embeddings request (texts only). */
export const toOllamaEmbeddings = (request: Wire.EmbeddingsRequest, model: string): Json | Unsupported => {
  const input = request.input
  if (typeof input !== "string" && !input.every((item): item is string => typeof item === "string")) {
    return new Unsupported("token input", "Ollama embeds texts, not token arrays")
  }
  return { model, input, ...(request.dimensions !== undefined ? { dimensions: request.dimensions } : {}) }
}

/** An `/api/embed` answer as an OpenAI embeddings response; undefined when it is not one. */
export const fromOllamaEmbeddings = (answer: unknown, model: string): Wire.EmbeddingsResponse | undefined => {
  if (!isObject(answer) || !Array.isArray(answer["embeddings"])) return undefined
  const tokens = count(answer["prompt_eval_count"])
  return {
    object: "list",
    data: (answer["embeddings"] as ReadonlyArray<unknown>).map((values, index) => ({
      object: "embedding",
      index,
      embedding: Array.isArray(values) ? (values as ReadonlyArray<number>) : []
    })),
    model,
    usage: { prompt_tokens: tokens, total_tokens: tokens }
  }
}
