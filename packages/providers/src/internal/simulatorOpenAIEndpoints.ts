/**
 * The simulated upstream's other OpenAI endpoints, written as dialects of their own: the legacy
 * `POST /v1/completions` (a `text_completion`, streamed as SSE chunks ending in `[DONE]`, a
 * usage-only chunk before it) and `POST /v1/responses` (a `response` object, streamed as Responses
 * events: created, output item and content part added, text or arguments deltas, done events,
 * completed with usage). `previous_response_id` is echoed, not looked up: the simulator keeps nothing.
 */
import type { Answer, Body, Dialect, Frames } from "./simulatorDialect.js"
import { isObject } from "./simulatorDialect.js"

const errorBody = (status: number, message: string): string =>
  JSON.stringify({
    error: { message, type: status >= 500 ? "server_error" : "invalid_request_error", param: null, code: null }
  })

/** The rate-limit headers are OpenAI's own already. */
const rateLimitHeaders = (headers: Readonly<Record<string, string>>) => ({ ...headers })

const seconds = (a: Answer) => Math.floor(a.now / 1000)

/** Steps for frames whose first `head` open the stream and whose last follow the last content frame. */
const stepsOf = (frames: ReadonlyArray<string>, head: number, content: number): Array<number> =>
  frames.map((_, i) => Math.max(0, Math.min(i - head, content - 1)))

// ---- legacy completions

const prompts = (body: Body): ReadonlyArray<string> => {
  const prompt = body["prompt"]
  if (typeof prompt === "string") return [prompt]
  return Array.isArray(prompt) ? prompt.filter((p): p is string => typeof p === "string") : []
}

const completionsProblem = (body: Body): string | undefined => {
  if (typeof body["model"] !== "string" || body["model"] === "") return "you must provide a model parameter"
  const prompt = body["prompt"]
  if (typeof prompt !== "string" && !(Array.isArray(prompt) && prompt.every((p) => typeof p === "string")))
    return "'prompt' must be a string or an array of strings"
  return undefined
}

const finishOf = (a: Answer) => (a.finish === "length" ? "length" : "stop")

const completionUsage = (a: Answer) => ({
  prompt_tokens: a.inputTokens,
  completion_tokens: a.outputTokens,
  total_tokens: a.inputTokens + a.outputTokens
})

const completionChunk = (a: Answer, choices: ReadonlyArray<unknown>, usage?: unknown) =>
  `data: ${JSON.stringify({
    id: a.id,
    object: "text_completion",
    created: seconds(a),
    model: a.model,
    choices,
    ...(usage !== undefined ? { usage } : {})
  })}\n\n`

const completionsFrames = (a: Answer): Frames => {
  const frames = a.completion.pieces.map((text) =>
    completionChunk(a, [{ text, index: 0, logprobs: null, finish_reason: null }])
  )
  const content = frames.length
  frames.push(
    completionChunk(a, [{ text: "", index: 0, logprobs: null, finish_reason: finishOf(a) }]),
    completionChunk(a, [], completionUsage(a)),
    "data: [DONE]\n\n"
  )
  return { frames, steps: stepsOf(frames, 0, content), head: 0, content }
}

/** OpenAI's legacy completions endpoint. */
export const completions: Dialect = {
  route: (path) => (path === "/v1/completions" ? { _tag: "chat" } : undefined),
  problem: completionsProblem,
  promptMessages: (body) => prompts(body).map((content) => ({ content })),
  // The legacy endpoint's own default is 16 tokens.
  maxTokens: (body) => body["max_tokens"] ?? 16,
  streams: (body) => body["stream"] === true,
  tool: () => undefined,
  json: () => false,
  message: (a) =>
    JSON.stringify({
      id: a.id,
      object: "text_completion",
      created: seconds(a),
      model: a.model,
      choices: [{ text: a.completion.content, index: 0, logprobs: null, finish_reason: finishOf(a) }],
      usage: completionUsage(a)
    }),
  frames: completionsFrames,
  malformed: `data: {"id":"cmpl","object":"text_completion","choices":[{"text":"lor\n\n`,
  streamType: "text/event-stream; charset=utf-8",
  errorBody,
  rateLimitHeaders
}

// ---- Responses

/** The input as messages, enough for the token estimate (strings, or items with text parts). */
const inputMessages = (body: Body): ReadonlyArray<unknown> => {
  const input = body["input"]
  if (typeof input === "string") return [{ content: input }]
  return Array.isArray(input) ? input : []
}

const responsesProblem = (body: Body): string | undefined => {
  if (typeof body["model"] !== "string" || body["model"] === "") return "Missing required parameter: 'model'."
  const input = body["input"]
  if (typeof input !== "string" && !Array.isArray(input)) return "Missing required parameter: 'input'."
  return undefined
}

/** The function to call: the first tool's, unless the input ends with a tool's output. */
const responsesTool = (body: Body): string | undefined => {
  const tools = body["tools"]
  if (!Array.isArray(tools) || tools.length === 0) return undefined
  const input = body["input"]
  const last: unknown = Array.isArray(input) ? input[input.length - 1] : undefined
  if (isObject(last) && last["type"] === "function_call_output") return undefined
  const first: unknown = tools[0]
  return isObject(first) && typeof first["name"] === "string" ? first["name"] : "tool"
}

/** The `parameters` schema of the function tool named `tool`: its call's arguments are built to match. */
const responsesToolSchema = (body: Body, tool: string): unknown => {
  const tools = Array.isArray(body["tools"]) ? (body["tools"] as ReadonlyArray<unknown>) : []
  const found = tools.find((t) => isObject(t) && t["name"] === tool)
  return isObject(found) ? found["parameters"] : undefined
}

const textFormat = (body: Body): Body | undefined => {
  const text = body["text"]
  return isObject(text) && isObject(text["format"]) ? text["format"] : undefined
}

const itemId = (a: Answer) => `msg_${a.id}`

/** The answer's output item, complete. */
const outputItem = (a: Answer): Record<string, unknown> =>
  a.tool !== undefined
    ? {
        type: "function_call",
        id: `fc_${a.id}`,
        call_id: a.toolId,
        name: a.tool,
        arguments: JSON.stringify(a.toolInput),
        status: "completed"
      }
    : {
        type: "message",
        id: itemId(a),
        status: "completed",
        role: "assistant",
        content: [{ type: "output_text", text: a.completion.content, annotations: [] }]
      }

const response = (a: Answer, status: "in_progress" | "completed") => ({
  id: `resp_${a.id}`,
  object: "response",
  created_at: seconds(a),
  status,
  model: a.model,
  output: status === "completed" ? [outputItem(a)] : [],
  usage:
    status === "completed"
      ? { input_tokens: a.inputTokens, output_tokens: a.outputTokens, total_tokens: a.inputTokens + a.outputTokens }
      : null
})

const responsesFrames = (a: Answer): Frames => {
  let sequence = 0
  const event = (type: string, fields: Record<string, unknown>) =>
    `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...fields })}\n\n`
  const item = outputItem(a)
  const at = { output_index: 0 }
  const frames = [event("response.created", { response: response(a, "in_progress") })]
  let content: number
  if (a.tool !== undefined) {
    frames.push(event("response.output_item.added", { ...at, item: { ...item, arguments: "", status: "in_progress" } }))
    frames.push(
      event("response.function_call_arguments.delta", { ...at, item_id: item["id"], delta: item["arguments"] })
    )
    frames.push(
      event("response.function_call_arguments.done", { ...at, item_id: item["id"], arguments: item["arguments"] })
    )
    content = 2
  } else {
    const part = { item_id: itemId(a), ...at, content_index: 0 }
    frames.push(
      event("response.output_item.added", { ...at, item: { ...item, status: "in_progress", content: [] } }),
      event("response.content_part.added", { ...part, part: { type: "output_text", text: "", annotations: [] } })
    )
    for (const delta of a.completion.pieces) frames.push(event("response.output_text.delta", { ...part, delta }))
    content = a.completion.pieces.length + 1
    frames.push(
      event("response.output_text.done", { ...part, text: a.completion.content }),
      event("response.content_part.done", {
        ...part,
        part: { type: "output_text", text: a.completion.content, annotations: [] }
      })
    )
  }
  frames.push(
    event("response.output_item.done", { ...at, item }),
    event("response.completed", { response: response(a, "completed") })
  )
  const head = a.tool !== undefined ? 2 : 3
  return { frames, steps: stepsOf(frames, head, content), head, content }
}

/** OpenAI's Responses API, stateless. */
export const responses: Dialect = {
  route: (path) => (path === "/v1/responses" ? { _tag: "chat" } : undefined),
  problem: responsesProblem,
  promptMessages: inputMessages,
  maxTokens: (body) => body["max_output_tokens"],
  streams: (body) => body["stream"] === true,
  tool: responsesTool,
  toolSchema: responsesToolSchema,
  json: (body) => {
    const type = textFormat(body)?.["type"]
    return type === "json_schema" || type === "json_object"
  },
  schema: (body) => textFormat(body)?.["schema"],
  message: (a) => JSON.stringify(response(a, "completed")),
  frames: responsesFrames,
  malformed: `event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"lor\n\n`,
  streamType: "text/event-stream; charset=utf-8",
  errorBody,
  rateLimitHeaders
}
