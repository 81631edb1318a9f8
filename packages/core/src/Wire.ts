/**
 * OpenAI wire format: the request schemas Sluice validates at the edge and the response shapes it
 * reads. Requests are decoded with excess properties preserved, so fields Sluice does not know reach
 * OpenAI-compatible upstreams untouched.
 */
import { Schema } from "effect"
import { jsonText } from "./internal/deepJson.js"

const NonEmptyString = Schema.String.pipe(Schema.minLength(1))

/** A content part of a chat message (text, image, audio, file...). Only `type` is checked. */
export const ContentPart = Schema.Struct({ type: Schema.String }).annotations({ identifier: "ContentPart" })

/** A chat message. `role` is required; content may be a string, an array of parts, or null. */
export const ChatMessage = Schema.Struct({
  role: Schema.Literal("system", "developer", "user", "assistant", "tool", "function"),
  content: Schema.optional(Schema.NullOr(Schema.Union(Schema.String, Schema.Array(ContentPart)))),
  name: Schema.optional(Schema.String)
}).annotations({ identifier: "ChatMessage" })

/** The type of a decoded chat message; extra fields (tool_calls, tool_call_id...) are kept. */
export interface ChatMessage extends Schema.Schema.Type<typeof ChatMessage> {
  readonly [key: string]: unknown
}

const Tool = Schema.Struct({
  type: Schema.String,
  function: Schema.optional(Schema.Struct({ name: NonEmptyString }))
})

const ResponseFormat = Schema.Struct({
  type: Schema.Literal("text", "json_object", "json_schema")
})

/**
 * `POST /v1/chat/completions` body. The fields the pipeline reads are validated; every other field
 * is preserved as sent.
 */
export const ChatCompletionRequest = Schema.Struct({
  model: NonEmptyString,
  messages: Schema.Array(ChatMessage).pipe(Schema.minItems(1)),
  stream: Schema.optional(Schema.NullOr(Schema.Boolean)),
  stream_options: Schema.optional(Schema.NullOr(Schema.Struct({ include_usage: Schema.optional(Schema.Boolean) }))),
  max_tokens: Schema.optional(Schema.NullOr(Schema.Number.pipe(Schema.int(), Schema.positive()))),
  max_completion_tokens: Schema.optional(Schema.NullOr(Schema.Number.pipe(Schema.int(), Schema.positive()))),
  tools: Schema.optional(Schema.Array(Tool)),
  response_format: Schema.optional(ResponseFormat),
  user: Schema.optional(Schema.String)
}).annotations({ identifier: "ChatCompletionRequest" })

/** A decoded chat completion request; unknown fields are kept as sent. */
export interface ChatCompletionRequest extends Schema.Schema.Type<typeof ChatCompletionRequest> {
  readonly [key: string]: unknown
}

/** `POST /v1/embeddings` body. */
export const EmbeddingsRequest = Schema.Struct({
  model: NonEmptyString,
  input: Schema.Union(
    Schema.String,
    Schema.Array(Schema.String),
    Schema.Array(Schema.Number),
    Schema.Array(Schema.Array(Schema.Number))
  ),
  encoding_format: Schema.optional(Schema.Literal("float", "base64")),
  dimensions: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.positive())),
  user: Schema.optional(Schema.String)
}).annotations({ identifier: "EmbeddingsRequest" })

/** A decoded embeddings request; unknown fields are kept as sent. */
export interface EmbeddingsRequest extends Schema.Schema.Type<typeof EmbeddingsRequest> {
  readonly [key: string]: unknown
}

/** Token usage as OpenAI reports it. */
export interface Usage {
  readonly prompt_tokens: number
  readonly completion_tokens?: number
  readonly total_tokens: number
  readonly [key: string]: unknown
}

/**
 * Usage of any OpenAI endpoint in the chat shape: chat's and legacy completions' own fields, or the
 * Responses API's `input_tokens` / `output_tokens`. Undefined when it names no input count.
 */
export const toChatUsage = (usage: Readonly<Record<string, unknown>>): Usage | undefined => {
  const input = usage["prompt_tokens"] ?? usage["input_tokens"]
  const output = usage["completion_tokens"] ?? usage["output_tokens"]
  if (typeof input !== "number") return undefined
  const completion = typeof output === "number" ? output : 0
  return { prompt_tokens: input, completion_tokens: completion, total_tokens: input + completion }
}

/** A non-streaming chat completion, as the upstream returned it (after translation). */
export interface ChatCompletion {
  readonly id: string
  readonly object: "chat.completion"
  readonly created: number
  readonly model: string
  readonly choices: ReadonlyArray<{
    readonly index: number
    readonly message: { readonly role: string; readonly content: string | null; readonly [key: string]: unknown }
    readonly finish_reason: string | null
    readonly [key: string]: unknown
  }>
  readonly usage?: Usage | null
  readonly [key: string]: unknown
}

/** One streamed `chat.completion.chunk`. */
export interface ChatCompletionChunk {
  readonly id: string
  readonly object: "chat.completion.chunk"
  readonly created: number
  readonly model: string
  readonly choices: ReadonlyArray<{
    readonly index: number
    readonly delta: { readonly role?: string; readonly content?: string | null; readonly [key: string]: unknown }
    readonly finish_reason: string | null
    readonly [key: string]: unknown
  }>
  readonly usage?: Usage | null
  readonly [key: string]: unknown
}

/** An embeddings response. `embedding` is a float array, or a base64 string when requested so. */
export interface EmbeddingsResponse {
  readonly object: "list"
  readonly data: ReadonlyArray<{
    readonly object: "embedding"
    readonly index: number
    readonly embedding: ReadonlyArray<number> | string
  }>
  readonly model: string
  readonly usage?: Usage
  readonly [key: string]: unknown
}

/** One entry of `GET /v1/models`. */
export interface Model {
  readonly id: string
  readonly object: "model"
  readonly created: number
  readonly owned_by: string
}

/** The `max_tokens` a request asks for (`max_completion_tokens` wins), if any. */
export const requestedMaxTokens = (request: ChatCompletionRequest): number | undefined =>
  request.max_completion_tokens ?? request.max_tokens ?? undefined

/**
 * The JSON text of a request or answer, as `JSON.stringify` writes it, at any depth: an in-process
 * caller's deeply nested value is serialized without overflowing the stack (the gateway refuses
 * bodies nested deeper than 64 levels before they get here).
 */
export const stringify = (value: unknown): string => {
  try {
    return JSON.stringify(value) ?? ""
  } catch (error) {
    if (error instanceof RangeError) return jsonText(value)
    throw error
  }
}
