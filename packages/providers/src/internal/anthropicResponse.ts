/**
 * Anthropic Messages answers → OpenAI: a whole message as a `chat.completion`, and a stream's events
 * as `chat.completion.chunk`s (a decoder with the little state a stream needs: which content block
 * is which tool call).
 */
import type { Errors, StreamEvent, Topology, Wire } from "@sluice/core"
import type { StreamDecoder } from "./transport.js"
import { END, malformedEvent, streamError } from "./transport.js"
import { JSON_TOOL } from "./anthropicRequest.js"

type Json = Record<string, unknown>

const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

const count = (u: unknown): number => (typeof u === "number" && Number.isFinite(u) ? u : 0)

/** Anthropic's `stop_reason` as OpenAI's `finish_reason`. */
export const finishReason = (stop: unknown): string | null => {
  switch (stop) {
    case "end_turn":
    case "stop_sequence":
    case "pause_turn":
      return "stop"
    case "max_tokens":
    case "model_context_window_exceeded":
      return "length"
    case "tool_use":
      return "tool_calls"
    case "refusal":
      return "content_filter"
    default:
      return stop === null || stop === undefined ? null : "stop"
  }
}

/**
 * Anthropic usage as OpenAI's: `prompt_tokens` counts every input token, cached ones included (as
 * OpenAI's does); cache reads are `prompt_tokens_details.cached_tokens`, cache writes
 * `prompt_tokens_details.cache_creation_tokens`.
 */
export const usageOf = (usage: Json): Wire.Usage => {
  const read = count(usage["cache_read_input_tokens"])
  const written = count(usage["cache_creation_input_tokens"])
  const prompt = count(usage["input_tokens"]) + read + written
  const completion = count(usage["output_tokens"])
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: read, ...(written > 0 ? { cache_creation_tokens: written } : {}) }
  }
}

/** A whole Anthropic message as an OpenAI chat completion; undefined when it is not a message. */
export const fromAnthropic = (message: unknown, created: number): Wire.ChatCompletion | undefined => {
  if (!isObject(message) || !Array.isArray(message["content"])) return undefined
  let text = ""
  let json: string | undefined
  const calls: Array<Json> = []
  for (const block of message["content"] as ReadonlyArray<unknown>) {
    if (!isObject(block)) continue
    if (block["type"] === "text" && typeof block["text"] === "string") text += block["text"]
    else if (block["type"] === "tool_use") {
      const args = JSON.stringify(block["input"] ?? {})
      if (block["name"] === JSON_TOOL) json = args
      else calls.push({ id: block["id"], type: "function", function: { name: block["name"], arguments: args } })
    }
  }
  // Structured output came through the forced tool: it is the answer's content, and the turn is over.
  const content = json ?? (text === "" && calls.length > 0 ? null : text)
  const finish = json !== undefined && calls.length === 0 ? "stop" : finishReason(message["stop_reason"])
  return {
    id: String(message["id"] ?? ""),
    object: "chat.completion",
    created,
    model: String(message["model"] ?? ""),
    choices: [
      {
        index: 0,
        message: { role: "assistant", content, refusal: null, ...(calls.length > 0 ? { tool_calls: calls } : {}) },
        logprobs: null,
        finish_reason: finish
      }
    ],
    usage: isObject(message["usage"]) ? usageOf(message["usage"]) : null
  }
}

/** Builds the chunks of one stream: its id, model and creation time, fixed by `message_start`. */
class Chunks {
  id = ""
  model = ""
  constructor(readonly created: number) {}

  chunk(delta: Json, finish: string | null = null): string {
    return JSON.stringify({
      id: this.id,
      object: "chat.completion.chunk",
      created: this.created,
      model: this.model,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }]
    })
  }

  usage(usage: Wire.Usage): string {
    return JSON.stringify({
      id: this.id,
      object: "chat.completion.chunk",
      created: this.created,
      model: this.model,
      choices: [],
      usage
    })
  }
}

/**
 * A decoder of one Anthropic stream into OpenAI chunks: `message_start` → the role chunk; text deltas
 * → content; a `tool_use` block → a tool call (its `input_json_delta`s → argument deltas), numbered
 * in order of appearance; the forced JSON tool's deltas → content; `message_delta` → the finish chunk
 * and a usage-only chunk; `message_stop` → the end; `ping` and unknown events → nothing; `error` → a
 * retryable failure (`overloaded_error` included).
 */
export const streamDecoder = (upstream: Topology.Upstream, created: number): StreamDecoder => {
  const chunks = new Chunks(created)
  /** Content block index → what it carries: a tool call's index, "json" or "text". */
  const blocks = new Map<number, number | "json" | "text">()
  let tools = 0
  let json = false
  let input: Json = {}
  const decode = (
    payload: string,
    out: Array<StreamEvent.StreamEvent>
  ): typeof END | Errors.UpstreamError | undefined => {
    let event: unknown
    try {
      event = JSON.parse(payload)
    } catch {
      event = undefined
    }
    if (!isObject(event)) return malformedEvent(upstream, payload)
    switch (event["type"]) {
      case "message_start": {
        const message = isObject(event["message"]) ? event["message"] : {}
        chunks.id = String(message["id"] ?? "")
        chunks.model = String(message["model"] ?? "")
        if (isObject(message["usage"])) input = message["usage"]
        out.push({ data: chunks.chunk({ role: "assistant", content: "" }) })
        return undefined
      }
      case "content_block_start": {
        const index = count(event["index"])
        const block = isObject(event["content_block"]) ? event["content_block"] : {}
        if (block["type"] === "tool_use") {
          if (block["name"] === JSON_TOOL) {
            json = true
            blocks.set(index, "json")
            return undefined
          }
          const call = tools++
          blocks.set(index, call)
          out.push({
            data: chunks.chunk({
              tool_calls: [
                { index: call, id: block["id"], type: "function", function: { name: block["name"], arguments: "" } }
              ]
            })
          })
        } else {
          blocks.set(index, "text")
          if (typeof block["text"] === "string" && block["text"] !== "") {
            out.push({ data: chunks.chunk({ content: block["text"] }) })
          }
        }
        return undefined
      }
      case "content_block_delta": {
        const delta = isObject(event["delta"]) ? event["delta"] : {}
        const target = blocks.get(count(event["index"]))
        if (delta["type"] === "text_delta" && typeof delta["text"] === "string") {
          out.push({ data: chunks.chunk({ content: delta["text"] }) })
        } else if (delta["type"] === "input_json_delta" && typeof delta["partial_json"] === "string") {
          const part = delta["partial_json"]
          if (part === "") return undefined
          if (target === "json") out.push({ data: chunks.chunk({ content: part }) })
          else if (typeof target === "number") {
            out.push({ data: chunks.chunk({ tool_calls: [{ index: target, function: { arguments: part } }] }) })
          }
        }
        return undefined
      }
      case "message_delta": {
        const delta = isObject(event["delta"]) ? event["delta"] : {}
        const finish = json && tools === 0 ? "stop" : (finishReason(delta["stop_reason"]) ?? "stop")
        out.push({ data: chunks.chunk({}, finish) })
        // The final usage: later counts replace message_start's (input counts included, when sent).
        const usage = usageOf({ ...input, ...(isObject(event["usage"]) ? event["usage"] : {}) })
        out.push({ data: chunks.usage(usage), usage, usageOnly: true })
        return undefined
      }
      case "message_stop":
        return END
      case "error":
        return streamError(upstream, event, payload)
      default:
        // ping, content_block_stop, and event types added after this was written.
        return undefined
    }
  }
  return { framing: "sse", endMarker: "message_stop", decode }
}
