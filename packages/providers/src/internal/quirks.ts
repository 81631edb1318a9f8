/**
 * How OpenAI-compatible services that refuse part of an OpenAI request as sent want it instead: one
 * pure function per service, applied to the request before it goes out (see
 * `OpenAICompatible.Options.adapt`). Each returns undefined when the request needs no change, so that
 * the client's own bytes can still be relayed.
 */
import { createHash } from "node:crypto"
import { Unsupported } from "./unsupported.js"

type Json = Record<string, unknown>

const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

/** The id Mistral accepts for a tool call: 9 letters or digits, as it writes its own. */
const MISTRAL_ID = /^[a-zA-Z0-9]{9}$/

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

/**
 * `id` as Mistral accepts it: its own ids as they are, any other (`call_…` from OpenAI, `toolu_…`
 * from Anthropic) as 9 base62 characters of its SHA-256, the same every time, so that a call and
 * the result answering it still match.
 */
export const mistralToolCallId = (id: unknown): unknown => {
  if (typeof id !== "string" || MISTRAL_ID.test(id)) return id
  const digest = createHash("sha256").update(id).digest()
  let out = ""
  for (let i = 0; i < 9; i++) out += BASE62[digest[i]! % 62]
  return out
}

/**
 * The fields of Mistral's chat request, as its OpenAPI document lists them: the schema is closed
 * (`additionalProperties: false`), so any other field is a 422 (`extra_forbidden`).
 */
const MISTRAL_FIELDS = new Set([
  "model",
  "temperature",
  "top_p",
  "max_tokens",
  "stream",
  "stop",
  "random_seed",
  "metadata",
  "messages",
  "response_format",
  "tools",
  "tool_choice",
  "presence_penalty",
  "frequency_penalty",
  "n",
  "prediction",
  "parallel_tool_calls",
  "reasoning_effort",
  "prompt_mode",
  "guardrails",
  "prompt_cache_key",
  "service_tier",
  "safe_prompt"
])

/** The fields of each message role in Mistral's (closed) schemas. */
const MISTRAL_MESSAGE_FIELDS: Readonly<Record<string, ReadonlySet<string>>> = {
  system: new Set(["role", "content"]),
  user: new Set(["role", "content"]),
  assistant: new Set(["role", "content", "tool_calls", "prefix"]),
  tool: new Set(["role", "content", "tool_call_id", "name"])
}

/** The fields of a tool call in Mistral's schema. */
const TOOL_CALL_KEYS = new Set(["id", "type", "function", "index"])

/** OpenAI's `developer` role is Mistral's `system`. */
const mistralRole = (role: unknown): unknown => (role === "developer" ? "system" : role)

/** A tool call as Mistral takes it: its own fields only, an id in its alphabet. */
const mistralCall = (call: unknown): unknown => {
  if (!isObject(call)) return call
  const out: Json = {}
  for (const key of TOOL_CALL_KEYS) if (call[key] !== undefined) out[key] = call[key]
  out["id"] = mistralToolCallId(call["id"])
  return out
}

/** A message as Mistral takes it: its role's fields only (a user's `name`, an answer's `refusal` out). */
const mistralMessage = (message: unknown): unknown => {
  if (!isObject(message)) return message
  const role = mistralRole(message["role"])
  const fields = MISTRAL_MESSAGE_FIELDS[role as string]
  if (fields === undefined) return message
  const out: Json = {}
  for (const key of fields) if (message[key] !== undefined) out[key] = message[key]
  out["role"] = role
  if (role === "tool") out["tool_call_id"] = mistralToolCallId(message["tool_call_id"])
  if (Array.isArray(message["tool_calls"])) {
    out["tool_calls"] = (message["tool_calls"] as ReadonlyArray<unknown>).map(mistralCall)
  }
  return out
}

/** Whether a message would reach Mistral unchanged. */
const mistralReady = (message: unknown): boolean => {
  if (!isObject(message)) return true
  const fields = MISTRAL_MESSAGE_FIELDS[message["role"] as string]
  if (fields === undefined) return message["role"] !== "developer"
  if (Object.keys(message).some((key) => !fields.has(key))) return false
  if (message["role"] === "tool" && mistralToolCallId(message["tool_call_id"]) !== message["tool_call_id"]) {
    return false
  }
  const calls = message["tool_calls"]
  return (
    !Array.isArray(calls) ||
    (calls as ReadonlyArray<unknown>).every(
      (call) =>
        !isObject(call) ||
        (mistralToolCallId(call["id"]) === call["id"] && Object.keys(call).every((k) => TOOL_CALL_KEYS.has(k)))
    )
  )
}

/**
 * A chat request as Mistral's API takes it: `max_completion_tokens` as `max_tokens`, `seed` as
 * `random_seed`; the fields its closed schema does not list left out (`stream_options`, `user`,
 * `logprobs`…: any other is a 422), in the request and in each message (a replayed answer's
 * `refusal` and `annotations`, a user's `name`; `developer` as `system`); tool call ids other than
 * Mistral's own 9 letters or digits — as after a failover from another provider — rewritten
 * consistently in calls and results, since Mistral answers 400 to them.
 */
export const mistral = (request: Json): Json | undefined => {
  const messages = Array.isArray(request["messages"]) ? (request["messages"] as ReadonlyArray<unknown>) : []
  if (Object.keys(request).every((key) => MISTRAL_FIELDS.has(key)) && messages.every(mistralReady)) return undefined
  const out: Json = {}
  for (const key of MISTRAL_FIELDS) if (request[key] !== undefined) out[key] = request[key]
  if (out["max_tokens"] === undefined && request["max_completion_tokens"] !== undefined) {
    out["max_tokens"] = request["max_completion_tokens"]
  }
  if (out["random_seed"] === undefined && request["seed"] !== undefined) out["random_seed"] = request["seed"]
  if (Array.isArray(request["messages"])) out["messages"] = messages.map(mistralMessage)
  return out
}

/** The fields of Mistral's (closed) embeddings request. */
const MISTRAL_EMBEDDINGS_FIELDS = ["model", "input", "encoding_format", "output_dimension", "output_dtype"]

/** Mistral's embedding models that take `output_dimension` (`mistral-embed` is always 1,024 wide). */
const MISTRAL_SIZED = /^codestral-embed/

/**
 * An embeddings request as Mistral's API takes it for the upstream model `model`: `dimensions` as
 * `output_dimension`, the fields its closed schema does not list (`user`) left out. A size asked of a
 * model that has one size only (`mistral-embed`) is {@link Unsupported}: the router tries an
 * upstream that can, rather than hand the client vectors of another size.
 */
export const mistralEmbeddings = (request: Json, model: string): Json | Unsupported | undefined => {
  if (request["dimensions"] !== undefined && !MISTRAL_SIZED.test(model))
    return new Unsupported(
      "dimensions",
      `Mistral's ${model} has one size; only codestral-embed models take output_dimension`
    )
  if (Object.keys(request).every((key) => MISTRAL_EMBEDDINGS_FIELDS.includes(key))) return undefined
  const out: Json = {}
  for (const key of MISTRAL_EMBEDDINGS_FIELDS) if (request[key] !== undefined) out[key] = request[key]
  if (out["output_dimension"] === undefined && request["dimensions"] !== undefined) {
    out["output_dimension"] = request["dimensions"]
  }
  return out
}

/** Chat fields Cohere's Compatibility API documents as not supported. */
const COHERE_UNSUPPORTED = [
  "store",
  "metadata",
  "logit_bias",
  "top_logprobs",
  "n",
  "modalities",
  "prediction",
  "audio",
  "service_tier",
  "parallel_tool_calls"
]

/** The `reasoning_effort` values Cohere's Compatibility API takes (thinking off or on). */
const COHERE_EFFORTS = new Set(["none", "high"])

/**
 * A chat request as Cohere's Compatibility API takes it: `max_completion_tokens` as the
 * `max_tokens` it documents; the fields it documents as not supported left out (`n`, `logprobs`
 * and audio never come here: the preset lacks them), and a `reasoning_effort` other than `none` or
 * `high`, the only two it takes, left to the model's default.
 */
export const cohere = (request: Json): Json | undefined => {
  const effort = request["reasoning_effort"]
  const badEffort = effort !== undefined && !COHERE_EFFORTS.has(effort as string)
  if (request["max_completion_tokens"] === undefined && !badEffort && !COHERE_UNSUPPORTED.some((k) => k in request)) {
    return undefined
  }
  const out: Json = { ...request }
  if (out["max_completion_tokens"] !== undefined) {
    out["max_tokens"] ??= out["max_completion_tokens"]
    delete out["max_completion_tokens"]
  }
  for (const key of COHERE_UNSUPPORTED) delete out[key]
  if (badEffort) delete out["reasoning_effort"]
  return out
}

/** xAI's reasoning models (`grok-3-mini`, `grok-4…`, `grok-code…`), unless named non-reasoning. */
const XAI_REASONING = /^grok-(?:3-mini|4|code)/
/** Models xAI documents as refusing `reasoning_effort`: `grok-3` and the `grok-4` line (not `grok-3-mini`). */
const XAI_NO_EFFORT = /^grok-(?:3|4)(?:$|-(?!mini))/

/**
 * A chat request as xAI takes it for `model`: its reasoning models answer an error to
 * `presence_penalty` and `frequency_penalty`, and `grok-3` / `grok-4` to `reasoning_effort` — left
 * out, since they only tune sampling. `stop`, which reasoning models refuse too, is kept: leaving it
 * out would change the answer, so the upstream's error reaches the client instead.
 */
export const xai = (request: Json, model: string): Json | undefined => {
  const name = model.replace(/^xai\//, "")
  const drop: Array<string> = []
  if (XAI_REASONING.test(name) && !name.includes("non-reasoning")) drop.push("presence_penalty", "frequency_penalty")
  if (XAI_NO_EFFORT.test(name)) drop.push("reasoning_effort")
  if (!drop.some((key) => key in request)) return undefined
  const out: Json = { ...request }
  for (const key of drop) delete out[key]
  return out
}
