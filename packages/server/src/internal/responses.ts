/**
 * OpenAI's Responses API served over chat completions: a Responses request as a chat request, a chat
 * completion as a `response` object, and chat chunks as Responses stream events. Stateless: nothing is
 * stored, so `previous_response_id` and `store: true` have no translation (only an upstream that
 * serves the Responses API itself can take them, see `Responses`).
 */
import type { Wire } from "@sluice/core"
import { Gemini } from "@sluice/providers"
import { Refused } from "./messages.js"
import { readChunk } from "./chunks.js"

type Json = Record<string, unknown>

const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : 0)

/** An input message's content as chat content: a string, or text and image parts. */
const contentOf = (content: unknown, at: string): string | Array<Json> | Refused => {
  if (typeof content === "string") return content
  if (!Array.isArray(content)) return new Refused("content must be a string or a list of parts", at)
  const parts: Array<Json> = []
  for (const [i, part] of (content as ReadonlyArray<unknown>).entries()) {
    if (!isObject(part)) return new Refused("a content part must be an object", `${at}[${i}]`)
    switch (part["type"]) {
      case "input_text":
      case "output_text":
        parts.push({ type: "text", text: part["text"] })
        break
      case "input_image": {
        if (typeof part["image_url"] !== "string") {
          return new Refused("input_image parts need an image_url (file ids are not supported)", `${at}[${i}]`)
        }
        const detail = typeof part["detail"] === "string" ? { detail: part["detail"] } : {}
        parts.push({ type: "image_url", image_url: { url: part["image_url"], ...detail } })
        break
      }
      default:
        return new Refused(`content parts of type '${String(part["type"])}' are not supported`, `${at}[${i}]`)
    }
  }
  return parts.every((p) => p["type"] === "text") ? parts.map((p) => String(p["text"] ?? "")).join("") : parts
}

/** The input items as chat messages: messages, function calls (grouped per turn) and their outputs. */
const messagesOf = (input: unknown): Array<Json> | Refused => {
  if (typeof input === "string") return [{ role: "user", content: input }]
  if (!Array.isArray(input)) return new Refused("input must be a string or a list of items", "input")
  const messages: Array<Json> = []
  for (const [i, item] of (input as ReadonlyArray<unknown>).entries()) {
    const at = `input[${i}]`
    if (!isObject(item)) return new Refused("an input item must be an object", at)
    const type = item["type"] ?? "message"
    if (type === "message") {
      const content = contentOf(item["content"], `${at}.content`)
      if (content instanceof Refused) return content
      messages.push({ role: item["role"], content })
    } else if (type === "function_call") {
      // A Gemini thought signature comes back folded into the call id (see `fromChat`).
      const { id, signature } = Gemini.unfoldId(item["call_id"])
      const call = {
        id,
        type: "function",
        function: { name: item["name"], arguments: item["arguments"] },
        ...(signature === undefined ? {} : Gemini.signatureFields(signature))
      }
      const last = messages[messages.length - 1]
      if (last !== undefined && last["role"] === "assistant") {
        last["tool_calls"] = [...((last["tool_calls"] as Array<Json> | undefined) ?? []), call]
      } else messages.push({ role: "assistant", content: null, tool_calls: [call] })
    } else if (type === "function_call_output") {
      const output = item["output"]
      messages.push({
        role: "tool",
        tool_call_id: Gemini.unfoldId(item["call_id"]).id,
        content: typeof output === "string" ? output : JSON.stringify(output)
      })
    } else if (type === "reasoning") {
      // The model's earlier reasoning: no chat counterpart to send it back as.
      continue
    } else {
      return new Refused(
        `input items of type '${String(type)}' are not supported (this gateway keeps no state, and no upstream of ` +
          "this pool serves the Responses API itself)",
        at
      )
    }
  }
  return messages
}

/** What an upstream that keeps responses is, for the refusals that need one. */
const KEEPS = "(the gateway itself keeps none; an upstream serving the Responses API declares capability 'responses')"

/**
 * A Responses request as a chat request: `instructions` as a system message; input items as
 * messages; function tools, `tool_choice`, `parallel_tool_calls`; `text.format` as
 * `response_format`; `max_output_tokens` as `max_tokens`. `previous_response_id`, `store: true`,
 * built-in tools and item references are refused: nothing is stored here.
 */
export const toChat = (body: Json): Wire.ChatCompletionRequest | Refused => {
  if (typeof body["model"] !== "string" || body["model"] === "") return new Refused("model is required", "model")
  if (body["previous_response_id"] !== undefined && body["previous_response_id"] !== null) {
    return new Refused(
      `previous_response_id needs an upstream that keeps responses, and no upstream of this pool does ${KEEPS}; ` +
        "send the whole conversation in input",
      "previous_response_id"
    )
  }
  if (body["store"] === true) {
    return new Refused(
      `store: true needs an upstream that keeps responses, and no upstream of this pool does ${KEEPS}; send store: false`,
      "store"
    )
  }
  const messages = messagesOf(body["input"])
  if (messages instanceof Refused) return messages
  if (typeof body["instructions"] === "string" && body["instructions"] !== "") {
    messages.unshift({ role: "system", content: body["instructions"] })
  }
  if (messages.length === 0) return new Refused("input must hold at least one item", "input")
  const request: Json = { model: body["model"], messages }
  if (body["stream"] === true) {
    request["stream"] = true
    request["stream_options"] = { include_usage: true }
  }
  for (const key of ["temperature", "top_p", "parallel_tool_calls", "user"]) {
    if (body[key] !== undefined && body[key] !== null) request[key] = body[key]
  }
  if (typeof body["max_output_tokens"] === "number") request["max_tokens"] = body["max_output_tokens"]
  if (Array.isArray(body["tools"]) && body["tools"].length > 0) {
    const tools: Array<Json> = []
    for (const [i, tool] of (body["tools"] as ReadonlyArray<unknown>).entries()) {
      if (!isObject(tool) || tool["type"] !== "function") {
        return new Refused(
          "only function tools are supported here (built-in tools need an upstream that serves the Responses API itself)",
          `tools[${i}]`
        )
      }
      const fn: Json = { name: tool["name"] }
      if (typeof tool["description"] === "string") fn["description"] = tool["description"]
      if (isObject(tool["parameters"])) fn["parameters"] = tool["parameters"]
      if (typeof tool["strict"] === "boolean") fn["strict"] = tool["strict"]
      tools.push({ type: "function", function: fn })
    }
    request["tools"] = tools
  }
  const choice = body["tool_choice"]
  if (typeof choice === "string") request["tool_choice"] = choice
  else if (isObject(choice) && choice["type"] === "function") {
    request["tool_choice"] = { type: "function", function: { name: choice["name"] } }
  }
  const format = isObject(body["text"]) && isObject(body["text"]["format"]) ? body["text"]["format"] : undefined
  if (format?.["type"] === "json_object") request["response_format"] = { type: "json_object" }
  if (format?.["type"] === "json_schema") {
    request["response_format"] = {
      type: "json_schema",
      json_schema: {
        name: format["name"] ?? "response",
        schema: format["schema"],
        ...(typeof format["strict"] === "boolean" ? { strict: format["strict"] } : {})
      }
    }
  }
  return request as Wire.ChatCompletionRequest
}

/** Chat usage as Responses usage. */
export const usageOf = (usage: unknown): Json => {
  const u = isObject(usage) ? usage : {}
  const prompt = isObject(u["prompt_tokens_details"]) ? u["prompt_tokens_details"] : {}
  const completion = isObject(u["completion_tokens_details"]) ? u["completion_tokens_details"] : {}
  return {
    input_tokens: num(u["prompt_tokens"]),
    input_tokens_details: { cached_tokens: num(prompt["cached_tokens"]) },
    output_tokens: num(u["completion_tokens"]),
    output_tokens_details: { reasoning_tokens: num(completion["reasoning_tokens"]) },
    total_tokens: num(u["total_tokens"]) || num(u["prompt_tokens"]) + num(u["completion_tokens"])
  }
}

/** A finished message item. */
const messageItem = (id: string, text: string): Json => ({
  type: "message",
  id,
  status: "completed",
  role: "assistant",
  content: [{ type: "output_text", text, annotations: [], logprobs: [] }]
})

/** A finished function call item. */
const callItem = (id: string, callId: unknown, name: unknown, args: string): Json => ({
  type: "function_call",
  id,
  call_id: callId,
  name,
  arguments: args,
  status: "completed"
})

/** The `response` object's fields that echo the request. */
const echo = (body: Json): Json => ({
  instructions: body["instructions"] ?? null,
  max_output_tokens: body["max_output_tokens"] ?? null,
  metadata: isObject(body["metadata"]) ? body["metadata"] : {},
  parallel_tool_calls: body["parallel_tool_calls"] ?? true,
  previous_response_id: null,
  reasoning: { effort: null, summary: null },
  store: false,
  temperature: body["temperature"] ?? null,
  text: isObject(body["text"]) ? body["text"] : { format: { type: "text" } },
  tool_choice: body["tool_choice"] ?? "auto",
  tools: Array.isArray(body["tools"]) ? body["tools"] : [],
  top_p: body["top_p"] ?? null,
  truncation: "disabled",
  user: body["user"] ?? null
})

/** A `response` object. */
const response = (
  id: string,
  createdAt: number,
  body: Json,
  status: "in_progress" | "completed" | "incomplete",
  output: ReadonlyArray<Json>,
  usage: Json | null
): Json => {
  const text = output
    .flatMap((item) => (item["type"] === "message" ? (item["content"] as ReadonlyArray<Json>) : []))
    .map((part) => String(part["text"] ?? ""))
    .join("")
  return {
    id,
    object: "response",
    created_at: createdAt,
    status,
    error: null,
    incomplete_details: status === "incomplete" ? { reason: "max_output_tokens" } : null,
    model: body["model"],
    output,
    output_text: text,
    usage,
    ...echo(body)
  }
}

/**
 * A chat completion as a `response` object (`incomplete` when the completion was cut at its limit).
 * A tool call's Gemini thought signature is folded into its `call_id`, which clients send back with
 * the `function_call` they replay and its output: `toChat` unfolds it.
 */
export const fromChat = (completion: Wire.ChatCompletion, body: Json, id: string, createdAt: number): Json => {
  const choice = completion.choices[0]
  const output: Array<Json> = []
  const text = choice?.message.content
  if (typeof text === "string" && text !== "") output.push(messageItem(`msg_${id}`, text))
  const calls = choice?.message["tool_calls"]
  if (Array.isArray(calls)) {
    for (const [i, call] of (calls as ReadonlyArray<unknown>).entries()) {
      if (!isObject(call) || !isObject(call["function"])) continue
      const fn = call["function"]
      output.push(callItem(`fc_${id}_${i}`, Gemini.foldedId(call), fn["name"], String(fn["arguments"] ?? "")))
    }
  }
  const status = choice?.finish_reason === "length" ? "incomplete" : "completed"
  return response(`resp_${id}`, createdAt, body, status, output, usageOf(completion.usage))
}

/** The item being streamed: a message's text so far, or a function call's arguments so far. */
type Open =
  | { readonly kind: "message"; readonly id: string; text: string }
  | {
      readonly kind: "call"
      readonly id: string
      readonly index: number
      readonly callId: unknown
      readonly name: unknown
      args: string
    }

/**
 * Turns one stream's chat chunks into Responses events, numbered in sequence: `response.created` and
 * `response.in_progress` first; per message its item, content part, text deltas and their `done`s;
 * per function call its item and argument deltas; at the end `response.completed` with the whole
 * response (status `incomplete` when the completion was cut at its limit).
 */
export class ResponsesStream {
  private sequence = 0
  private readonly output: Array<Json> = []
  private open: Open | undefined
  private finish: unknown = undefined
  private usage: unknown = undefined

  constructor(
    private readonly id: string,
    private readonly createdAt: number,
    private readonly body: Json
  ) {}

  private event(type: string, data: Json): string {
    return `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: this.sequence++, ...data })}\n\n`
  }

  /** The opening events. */
  start(): string {
    const skeleton = response(`resp_${this.id}`, this.createdAt, this.body, "in_progress", [], null)
    return (
      this.event("response.created", { response: skeleton }) +
      this.event("response.in_progress", { response: skeleton })
    )
  }

  /** The events of one chat chunk (JSON text). */
  chunk(data: string): string {
    const chunk = readChunk(data)
    if (chunk === undefined) return ""
    if (chunk.usage !== undefined) this.usage = chunk.usage
    if (chunk.finish !== undefined) this.finish = chunk.finish
    const delta = chunk.delta
    let out = ""
    if (typeof delta["content"] === "string" && delta["content"] !== "") out += this.text(delta["content"])
    if (Array.isArray(delta["tool_calls"])) {
      for (const call of delta["tool_calls"] as ReadonlyArray<unknown>) if (isObject(call)) out += this.call(call)
    }
    return out
  }

  private text(text: string): string {
    let out = ""
    if (this.open?.kind !== "message") {
      out += this.close()
      const open: Open = { kind: "message", id: `msg_${this.id}_${this.output.length}`, text: "" }
      this.open = open
      const item = { type: "message", id: open.id, status: "in_progress", role: "assistant", content: [] }
      out += this.event("response.output_item.added", { output_index: this.output.length, item })
      out += this.event("response.content_part.added", {
        item_id: open.id,
        output_index: this.output.length,
        content_index: 0,
        part: { type: "output_text", text: "", annotations: [], logprobs: [] }
      })
    }
    const open = this.open as Extract<Open, { kind: "message" }>
    open.text += text
    return (
      out +
      this.event("response.output_text.delta", {
        item_id: open.id,
        output_index: this.output.length,
        content_index: 0,
        delta: text,
        logprobs: []
      })
    )
  }

  private call(call: Json): string {
    const index = typeof call["index"] === "number" ? call["index"] : 0
    const fn = isObject(call["function"]) ? call["function"] : {}
    let out = ""
    if (this.open?.kind !== "call" || this.open.index !== index) {
      out += this.close()
      const open: Open = {
        kind: "call",
        id: `fc_${this.id}_${this.output.length}`,
        index,
        callId: Gemini.foldedId(call),
        name: fn["name"],
        args: ""
      }
      this.open = open
      const item = {
        type: "function_call",
        id: open.id,
        call_id: open.callId,
        name: open.name,
        arguments: "",
        status: "in_progress"
      }
      out += this.event("response.output_item.added", { output_index: this.output.length, item })
    }
    const open = this.open as Extract<Open, { kind: "call" }>
    if (typeof fn["arguments"] === "string" && fn["arguments"] !== "") {
      open.args += fn["arguments"]
      out += this.event("response.function_call_arguments.delta", {
        item_id: open.id,
        output_index: this.output.length,
        delta: fn["arguments"]
      })
    }
    return out
  }

  /** The `done` events of the open item, which joins the output. */
  private close(): string {
    const open = this.open
    if (open === undefined) return ""
    this.open = undefined
    const index = this.output.length
    if (open.kind === "message") {
      const item = messageItem(open.id, open.text)
      this.output.push(item)
      return (
        this.event("response.output_text.done", {
          item_id: open.id,
          output_index: index,
          content_index: 0,
          text: open.text,
          logprobs: []
        }) +
        this.event("response.content_part.done", {
          item_id: open.id,
          output_index: index,
          content_index: 0,
          part: (item["content"] as ReadonlyArray<Json>)[0]
        }) +
        this.event("response.output_item.done", { output_index: index, item })
      )
    }
    const item = callItem(open.id, open.callId, open.name, open.args)
    this.output.push(item)
    return (
      this.event("response.function_call_arguments.done", {
        item_id: open.id,
        output_index: index,
        arguments: open.args
      }) + this.event("response.output_item.done", { output_index: index, item })
    )
  }

  /** The closing events of a complete stream. */
  end(): string {
    const closing = this.close()
    const status = this.finish === "length" ? "incomplete" : "completed"
    const whole = response(`resp_${this.id}`, this.createdAt, this.body, status, this.output, usageOf(this.usage))
    return (
      closing + this.event(status === "completed" ? "response.completed" : "response.incomplete", { response: whole })
    )
  }

  /** The `error` event that ends a stream that broke off. */
  error(code: string, message: string): string {
    return this.event("error", { code, message, param: null })
  }
}
