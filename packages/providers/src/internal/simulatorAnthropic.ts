/**
 * The simulated upstream's Anthropic dialect: what `POST /v1/messages` checks, answers and streams,
 * in the Messages API's own shapes, as plain functions the request handler calls.
 */
import { errorType } from "./anthropicErrors.js"
import type { Answer, Body, Dialect, Frames } from "./simulatorDialect.js"
import { isObject } from "./simulatorDialect.js"
import { halves } from "./simulatorContent.js"

/** Anthropic's error envelope. */
export const errorBody = (status: number, message: string): string =>
  JSON.stringify({ type: "error", error: { type: errorType(status), message } })

/**
 * The simulator's OpenAI-style rate-limit headers as Anthropic's: `anthropic-ratelimit-{requests,
 * tokens}-{limit,remaining,reset}`, reset as an RFC 3339 time. `retry-after` is kept.
 */
export const rateLimitHeaders = (
  headers: Readonly<Record<string, string>>,
  now: number,
  resetMs: { readonly requests: number; readonly tokens: number }
): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const kind of ["requests", "tokens"] as const) {
    const limit = headers[`x-ratelimit-limit-${kind}`]
    if (limit === undefined) continue
    out[`anthropic-ratelimit-${kind}-limit`] = limit
    out[`anthropic-ratelimit-${kind}-remaining`] = headers[`x-ratelimit-remaining-${kind}`] ?? "0"
    out[`anthropic-ratelimit-${kind}-reset`] = new Date(now + resetMs[kind]).toISOString()
  }
  if (headers["retry-after"] !== undefined) out["retry-after"] = headers["retry-after"]
  return out
}

const MEDIA_TYPES = new Set(["image/jpeg", "image/png", "image/gif", "image/webp"])

/** What is wrong with an image block at `at` (a base64 or URL source), as the Messages API says it. */
const imageProblem = (block: Body, at: string): string | undefined => {
  const source = block["source"]
  if (!isObject(source)) return `${at}.image.source: Field required`
  if (source["type"] === "base64") {
    if (!MEDIA_TYPES.has(source["media_type"] as string)) {
      return `${at}.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'`
    }
    const data = source["data"]
    if (typeof data !== "string" || !/^[A-Za-z0-9+/]+={0,2}$/.test(data)) {
      return `${at}.image.source.base64.data: The image data is not valid base64 (send the bytes, not a data: URL)`
    }
    return undefined
  }
  if (source["type"] === "url") {
    return typeof source["url"] === "string" && /^https?:\/\//.test(source["url"])
      ? undefined
      : `${at}.image.source.url.url: Input should be an http(s) URL`
  }
  return `${at}.image.source: Input tag '${String(source["type"])}' found using 'type' does not match any of the expected tags: 'base64', 'url'`
}

/** What is wrong with a Messages request, in Anthropic's words; undefined when it is well-formed. */
export const problem = (body: Body): string | undefined => {
  if (typeof body["model"] !== "string") return "model: Field required"
  const max = body["max_tokens"]
  if (max === undefined) return "max_tokens: Field required"
  if (typeof max !== "number" || !Number.isInteger(max) || max < 1)
    return "max_tokens: Input should be a valid integer >= 1"
  const messages = body["messages"]
  if (!Array.isArray(messages) || messages.length === 0) return "messages: at least one message is required"
  const toolUses = new Set<unknown>()
  for (const [i, message] of (messages as ReadonlyArray<unknown>).entries()) {
    if (!isObject(message)) return `messages.${i}: Input should be an object`
    const role = message["role"]
    if (role !== "user" && role !== "assistant") {
      return `messages.${i}.role: Input should be 'user' or 'assistant' (system prompts go in the top-level system field)`
    }
    const content = message["content"]
    if (typeof content === "string") continue
    if (!Array.isArray(content)) return `messages.${i}.content: Input should be a string or a list of content blocks`
    for (const [j, block] of (content as ReadonlyArray<unknown>).entries()) {
      if (!isObject(block)) return `messages.${i}.content.${j}: Input should be an object`
      if (block["type"] === "text" && block["text"] === "")
        return `messages.${i}.content.${j}: text content blocks must be non-empty`
      if (block["type"] === "image") {
        const wrong = imageProblem(block, `messages.${i}.content.${j}`)
        if (wrong !== undefined) return wrong
      }
      if (block["type"] === "tool_use") toolUses.add(block["id"])
      if (block["type"] === "tool_result" && !toolUses.has(block["tool_use_id"])) {
        return `messages.${i}.content.${j}: unexpected tool_use_id found in tool_result blocks: ${String(block["tool_use_id"])}. Each tool_result block must have a corresponding tool_use block in the previous message.`
      }
    }
  }
  return undefined
}

/** The messages and system prompt as OpenAI-shaped messages, for the prompt token estimate. */
export const promptMessages = (body: Body): ReadonlyArray<unknown> => {
  const messages = body["messages"] as ReadonlyArray<unknown>
  const system = body["system"]
  if (typeof system === "string") return [{ content: system }, ...messages]
  if (Array.isArray(system)) return [{ content: system }, ...messages]
  return messages
}

/**
 * The tool the answer calls, or undefined when it answers with text: the named one of `tool_choice`
 * `{type: "tool"}`, else the first — unless `tool_choice` is `none`, or the last message carries tool
 * results and the model is not forced to call a tool (then it answers them with text).
 */
export const toolToCall = (body: Body): string | undefined => {
  const tools = body["tools"]
  if (!Array.isArray(tools) || tools.length === 0) return undefined
  const choice = isObject(body["tool_choice"]) ? body["tool_choice"] : { type: "auto" }
  if (choice["type"] === "none") return undefined
  if (choice["type"] === "tool" && typeof choice["name"] === "string") return choice["name"]
  if (choice["type"] !== "any" && answersToolResults(body)) return undefined
  const first: unknown = tools[0]
  return isObject(first) && typeof first["name"] === "string" ? first["name"] : "tool"
}

const answersToolResults = (body: Body): boolean => {
  const messages = body["messages"] as ReadonlyArray<unknown>
  const last = messages[messages.length - 1]
  return (
    isObject(last) &&
    Array.isArray(last["content"]) &&
    (last["content"] as ReadonlyArray<unknown>).some((b) => isObject(b) && b["type"] === "tool_result")
  )
}

const STOP = { stop: "end_turn", length: "max_tokens", tool: "tool_use" } as const

const usage = (a: Answer) => ({ input_tokens: a.inputTokens, output_tokens: a.outputTokens })

/** The whole message. */
export const message = (a: Answer): string =>
  JSON.stringify({
    id: a.id,
    type: "message",
    role: "assistant",
    model: a.model,
    content:
      a.tool !== undefined
        ? [{ type: "tool_use", id: a.toolId, name: a.tool, input: a.toolInput }]
        : [{ type: "text", text: a.completion.content }],
    stop_reason: STOP[a.finish],
    stop_sequence: null,
    usage: usage(a)
  })

const event = (type: string, data: Record<string, unknown>): string =>
  `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`

/**
 * The stream of an answer as the Messages API sends it: `message_start`, one content block (text
 * deltas one word each, or a `tool_use` whose input arrives as `input_json_delta`s split in two),
 * `message_delta` with the stop reason and usage, `message_stop`. A `ping` follows the first block's start.
 */
export const frames = (a: Answer): Frames => {
  const frames: Array<string> = [
    event("message_start", {
      message: {
        id: a.id,
        type: "message",
        role: "assistant",
        model: a.model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: a.inputTokens, output_tokens: 1 }
      }
    })
  ]
  const steps: Array<number> = [0]
  let content: number
  if (a.tool !== undefined) {
    frames.push(
      event("content_block_start", {
        index: 0,
        content_block: { type: "tool_use", id: a.toolId, name: a.tool, input: {} }
      }),
      event("ping", {}),
      ...halves(JSON.stringify(a.toolInput)).map((part) =>
        event("content_block_delta", { index: 0, delta: { type: "input_json_delta", partial_json: part } })
      )
    )
    steps.push(0, 0, 0, 1)
    content = 2
  } else {
    frames.push(
      event("content_block_start", { index: 0, content_block: { type: "text", text: "" } }),
      event("ping", {})
    )
    steps.push(0, 0)
    const pieces = a.completion.pieces
    for (let i = 0; i < pieces.length; i++) {
      frames.push(event("content_block_delta", { index: 0, delta: { type: "text_delta", text: pieces[i] } }))
      steps.push(i)
    }
    content = pieces.length
  }
  const last = steps[steps.length - 1]!
  frames.push(
    event("content_block_stop", { index: 0 }),
    event("message_delta", {
      delta: { stop_reason: STOP[a.finish], stop_sequence: null },
      usage: { output_tokens: a.outputTokens }
    }),
    event("message_stop", {})
  )
  steps.push(last, last, last)
  return { frames, steps, head: 3, content }
}

/** An event cut short, as a proxy that mangles one would send it: not valid JSON. */
export const MALFORMED = `event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_del\n\n`

/** The input schema of `tool`: its call's input is built to match, forced or not. */
const toolSchema = (body: Body, tool: string): unknown => {
  const tools = Array.isArray(body["tools"]) ? (body["tools"] as ReadonlyArray<unknown>) : []
  const found = tools.find((t) => isObject(t) && t["name"] === tool)
  return isObject(found) ? found["input_schema"] : undefined
}

/** Anthropic's Messages API: `POST /v1/messages`; no embeddings. */
export const dialect: Dialect = {
  route: (path) => (path === "/v1/messages" ? { _tag: "chat" } : undefined),
  problem,
  promptMessages,
  maxTokens: (body) => body["max_tokens"],
  streams: (body) => body["stream"] === true,
  tool: toolToCall,
  json: () => false,
  toolSchema,
  message,
  frames,
  malformed: MALFORMED,
  streamType: "text/event-stream; charset=utf-8",
  errorBody,
  rateLimitHeaders
}
