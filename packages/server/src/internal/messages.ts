/**
 * Anthropic's Messages API served over the OpenAI-shaped pipeline: a Messages request as an OpenAI
 * chat request, an OpenAI completion as a Messages answer, and OpenAI chunks as Messages stream
 * events. Plain functions and one small stream translator; what has no OpenAI counterpart is a
 * {@link Refused} naming it.
 */
import type { Wire } from "@sluice/core"
import { Anthropic, Gemini } from "@sluice/providers"
import { readChunk } from "./chunks.js"

type Json = Record<string, unknown>

const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

/** A Messages request the pipeline cannot serve as asked; `param` is where. */
export class Refused {
  readonly _tag = "Refused"
  constructor(
    readonly message: string,
    readonly param: string
  ) {}
}

/** The text of a string or of the text blocks of a block list. */
const textOf = (content: unknown): string => {
  if (typeof content === "string") return content
  if (!Array.isArray(content)) return ""
  return content
    .map((b) => (isObject(b) && b["type"] === "text" && typeof b["text"] === "string" ? b["text"] : ""))
    .filter((t) => t !== "")
    .join("\n")
}

/** An Anthropic image block as an OpenAI `image_url` part. */
const imagePart = (block: Json, at: string): Json | Refused => {
  const source = isObject(block["source"]) ? block["source"] : {}
  if (source["type"] === "base64") {
    return {
      type: "image_url",
      image_url: { url: `data:${String(source["media_type"])};base64,${String(source["data"])}` }
    }
  }
  if (source["type"] === "url") return { type: "image_url", image_url: { url: source["url"] } }
  return new Refused(`image sources of type '${String(source["type"])}' are not supported`, `${at}.source`)
}

/** One Messages turn as OpenAI messages (tool results become `tool` messages, ahead of the rest). */
const turnOf = (message: Json, at: string): Array<Json> | Refused => {
  const role = message["role"]
  if (role !== "user" && role !== "assistant") return new Refused("role must be 'user' or 'assistant'", `${at}.role`)
  const content = message["content"]
  if (typeof content === "string") return [{ role, content }]
  if (!Array.isArray(content)) return new Refused("content must be a string or a list of blocks", `${at}.content`)
  const out: Array<Json> = []
  const parts: Array<Json> = []
  const calls: Array<Json> = []
  for (const [i, block] of (content as ReadonlyArray<unknown>).entries()) {
    const where = `${at}.content[${i}]`
    if (!isObject(block)) return new Refused("a content block must be an object", where)
    switch (block["type"]) {
      case "text":
        parts.push({ type: "text", text: block["text"] })
        break
      case "image": {
        if (role !== "user") return new Refused("images are only accepted in user turns", where)
        const part = imagePart(block, where)
        if (part instanceof Refused) return part
        parts.push(part)
        break
      }
      case "tool_use": {
        // A Gemini thought signature comes back folded into the id (see `fromOpenAI`).
        const { id, signature } = Gemini.unfoldId(block["id"])
        calls.push({
          id,
          type: "function",
          function: { name: block["name"], arguments: JSON.stringify(block["input"] ?? {}) },
          ...(signature === undefined ? {} : Gemini.signatureFields(signature))
        })
        break
      }
      case "tool_result": {
        const text = textOf(block["content"])
        out.push({
          role: "tool",
          tool_call_id: Gemini.unfoldId(block["tool_use_id"]).id,
          content: block["is_error"] === true ? `Error: ${text}` : text
        })
        break
      }
      case "thinking":
      case "redacted_thinking":
        // Earlier reasoning of the model: no OpenAI counterpart to send it back as.
        break
      default:
        return new Refused(`content blocks of type '${String(block["type"])}' are not supported`, where)
    }
  }
  if (role === "assistant") {
    const text = parts.map((p) => String(p["text"] ?? "")).join("")
    if (text !== "" || calls.length > 0) {
      out.push({ role, content: text === "" ? null : text, ...(calls.length > 0 ? { tool_calls: calls } : {}) })
    }
  } else if (parts.length > 0) {
    const plain = parts.every((p) => p["type"] === "text")
    out.push({ role, content: plain ? parts.map((p) => p["text"]).join("\n") : parts })
  }
  return out
}

const toolChoiceOf = (choice: unknown): { choice?: unknown; parallel?: boolean } => {
  if (!isObject(choice)) return {}
  const parallel = choice["disable_parallel_tool_use"] === true ? { parallel: false } : {}
  switch (choice["type"]) {
    case "any":
      return { choice: "required", ...parallel }
    case "none":
      return { choice: "none" }
    case "tool":
      return { choice: { type: "function", function: { name: choice["name"] } }, ...parallel }
    default:
      return { choice: "auto", ...parallel }
  }
}

/**
 * A Messages request as an OpenAI chat request: `system` as a system message, tool results as `tool`
 * messages, `tool_use` as tool calls, images as `image_url` parts, tools and `tool_choice`,
 * `stop_sequences`, `metadata.user_id` as `user`; a stream asks for usage. Thinking settings and
 * `top_k` have no OpenAI counterpart and are not sent.
 */
export const toOpenAI = (body: Json): Wire.ChatCompletionRequest | Refused => {
  if (typeof body["model"] !== "string" || body["model"] === "") return new Refused("model: Field required", "model")
  const max = body["max_tokens"]
  if (typeof max !== "number" || !Number.isInteger(max) || max < 1) {
    return new Refused("max_tokens: a positive integer is required", "max_tokens")
  }
  if (!Array.isArray(body["messages"]) || body["messages"].length === 0) {
    return new Refused("messages: at least one message is required", "messages")
  }
  const messages: Array<Json> = []
  const system = textOf(body["system"])
  if (system !== "") messages.push({ role: "system", content: system })
  for (const [i, message] of (body["messages"] as ReadonlyArray<unknown>).entries()) {
    if (!isObject(message)) return new Refused("a message must be an object", `messages[${i}]`)
    const turn = turnOf(message, `messages[${i}]`)
    if (turn instanceof Refused) return turn
    messages.push(...turn)
  }
  const request: Json = { model: body["model"], messages, max_tokens: max }
  if (body["stream"] === true) {
    request["stream"] = true
    request["stream_options"] = { include_usage: true }
  }
  if (typeof body["temperature"] === "number") request["temperature"] = body["temperature"]
  if (typeof body["top_p"] === "number") request["top_p"] = body["top_p"]
  if (Array.isArray(body["stop_sequences"]) && body["stop_sequences"].length > 0)
    request["stop"] = body["stop_sequences"]
  const metadata = body["metadata"]
  if (isObject(metadata) && typeof metadata["user_id"] === "string") request["user"] = metadata["user_id"]
  if (Array.isArray(body["tools"]) && body["tools"].length > 0) {
    const tools: Array<Json> = []
    for (const [i, tool] of (body["tools"] as ReadonlyArray<unknown>).entries()) {
      if (
        !isObject(tool) ||
        typeof tool["name"] !== "string" ||
        (tool["type"] !== undefined && tool["type"] !== "custom")
      ) {
        return new Refused("only custom tools (name, description, input_schema) are supported", `tools[${i}]`)
      }
      tools.push({
        type: "function",
        function: {
          name: tool["name"],
          ...(typeof tool["description"] === "string" ? { description: tool["description"] } : {}),
          parameters: isObject(tool["input_schema"]) ? tool["input_schema"] : { type: "object" }
        }
      })
    }
    request["tools"] = tools
    const { choice, parallel } = toolChoiceOf(body["tool_choice"])
    if (choice !== undefined) request["tool_choice"] = choice
    if (parallel !== undefined) request["parallel_tool_calls"] = parallel
  }
  return request as Wire.ChatCompletionRequest
}

/** OpenAI's `finish_reason` as Anthropic's `stop_reason`. */
export const stopReason = (finish: unknown): string => {
  switch (finish) {
    case "length":
      return "max_tokens"
    case "tool_calls":
    case "function_call":
      return "tool_use"
    case "content_filter":
      return "refusal"
    default:
      return "end_turn"
  }
}

/**
 * OpenAI usage as Anthropic's: `input_tokens` without the cached ones, which are
 * `cache_read_input_tokens` (and `cache_creation_input_tokens` where an upstream reported writes).
 */
export const usageOf = (usage: unknown): Json => {
  const u = isObject(usage) ? usage : {}
  const details = isObject(u["prompt_tokens_details"]) ? u["prompt_tokens_details"] : {}
  const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : 0)
  const read = num(details["cached_tokens"])
  const written = num(details["cache_creation_tokens"])
  return {
    input_tokens: Math.max(0, num(u["prompt_tokens"]) - read - written),
    output_tokens: num(u["completion_tokens"]),
    cache_read_input_tokens: read,
    cache_creation_input_tokens: written
  }
}

/**
 * An OpenAI chat completion as a Messages answer, named with the model the client asked for. A tool
 * call's Gemini thought signature is folded into its `tool_use` id, which every client sends back
 * (as the `tool_use` it replays and the `tool_result` answering it): `toOpenAI` unfolds it.
 */
export const fromOpenAI = (completion: Wire.ChatCompletion, model: string): Json => {
  const choice = completion.choices[0]
  const content: Array<Json> = []
  const text = choice?.message.content
  if (typeof text === "string" && text !== "") content.push({ type: "text", text })
  const calls = choice?.message["tool_calls"]
  if (Array.isArray(calls)) {
    for (const call of calls as ReadonlyArray<unknown>) {
      if (!isObject(call) || !isObject(call["function"])) continue
      content.push({
        type: "tool_use",
        id: Gemini.foldedId(call),
        name: call["function"]["name"],
        input: Anthropic.parseArguments(call["function"]["arguments"])
      })
    }
  }
  return {
    id: completion.id.startsWith("msg_") ? completion.id : `msg_${completion.id}`,
    type: "message",
    role: "assistant",
    model,
    content,
    stop_reason: stopReason(choice?.finish_reason),
    stop_sequence: null,
    usage: usageOf(completion.usage)
  }
}

const event = (type: string, data: Json): string => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`

/**
 * Turns one stream's OpenAI chunks into Messages events: `message_start` first, a content block per
 * run of text or per tool call (arguments as `input_json_delta`), and at the end the last block's
 * stop, `message_delta` with the stop reason and usage, and `message_stop`.
 */
export class StreamTranslator {
  private block = -1
  /** What the open block is: "text", a tool call's OpenAI index, or undefined when none is open. */
  private open: "text" | number | undefined
  private finish: unknown = undefined
  private usage: unknown = undefined

  constructor(
    private readonly id: string,
    private readonly model: string
  ) {}

  /** The opening event. */
  start(): string {
    return event("message_start", {
      message: {
        id: this.id,
        type: "message",
        role: "assistant",
        model: this.model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: 0, output_tokens: 0 }
      }
    })
  }

  /** The events of one OpenAI chunk (JSON text). */
  chunk(data: string): string {
    const chunk = readChunk(data)
    if (chunk === undefined) return ""
    if (chunk.usage !== undefined) this.usage = chunk.usage
    if (chunk.finish !== undefined) this.finish = chunk.finish
    const delta = chunk.delta
    let out = ""
    const text = delta["content"]
    if (typeof text === "string" && text !== "") {
      if (this.open !== "text") out += this.startBlock("text", { type: "text", text: "" })
      out += event("content_block_delta", { index: this.block, delta: { type: "text_delta", text } })
    }
    if (Array.isArray(delta["tool_calls"])) {
      for (const call of delta["tool_calls"] as ReadonlyArray<unknown>) {
        if (!isObject(call)) continue
        const index = typeof call["index"] === "number" ? call["index"] : 0
        const fn = isObject(call["function"]) ? call["function"] : {}
        if (this.open !== index) {
          out += this.startBlock(index, { type: "tool_use", id: Gemini.foldedId(call), name: fn["name"], input: {} })
        }
        if (typeof fn["arguments"] === "string" && fn["arguments"] !== "") {
          out += event("content_block_delta", {
            index: this.block,
            delta: { type: "input_json_delta", partial_json: fn["arguments"] }
          })
        }
      }
    }
    return out
  }

  /** The closing events of a complete stream. */
  end(): string {
    return (
      this.stopBlock() +
      event("message_delta", {
        delta: { stop_reason: stopReason(this.finish), stop_sequence: null },
        usage: usageOf(this.usage)
      }) +
      event("message_stop", {})
    )
  }

  private startBlock(open: "text" | number, block: Json): string {
    const stop = this.stopBlock()
    this.block++
    this.open = open
    return stop + event("content_block_start", { index: this.block, content_block: block })
  }

  private stopBlock(): string {
    if (this.open === undefined) return ""
    this.open = undefined
    return event("content_block_stop", { index: this.block })
  }
}

/** An Anthropic stream's in-band `error` event. */
export const errorEvent = (type: string, message: string): string => event("error", { error: { type, message } })
