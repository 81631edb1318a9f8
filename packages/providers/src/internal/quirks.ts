/**
 * How OpenAI-compatible services that refuse part of an OpenAI request as sent want it instead: one
 * pure function per service, applied to the request before it goes out (see
 * `OpenAICompatible.Options.adapt`). Each returns undefined when the request needs no change, so that
 * the client's own bytes can still be relayed.
 */
import { createHash } from "node:crypto"

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
 * OpenAI request fields Mistral's chat API does not define: it refuses any field it does not know
 * with a 422 (`extra_forbidden`). `max_completion_tokens` and `seed` are renamed rather than dropped.
 */
const MISTRAL_UNKNOWN = [
  "stream_options",
  "user",
  "store",
  "metadata",
  "service_tier",
  "logit_bias",
  "logprobs",
  "top_logprobs",
  "reasoning_effort",
  "modalities",
  "audio",
  "verbosity",
  "web_search_options"
]

/** Fields of an assistant message an OpenAI answer carries and a client replays, which Mistral refuses. */
const REPLAYED = ["refusal", "annotations", "audio", "reasoning_content", "reasoning", "function_call"]

/** A message as Mistral takes it: answer-only fields left out, tool call ids in its alphabet. */
const mistralMessage = (message: unknown): unknown => {
  if (!isObject(message)) return message
  const out: Json = { ...message }
  for (const key of REPLAYED) delete out[key]
  if (out["role"] === "tool") out["tool_call_id"] = mistralToolCallId(out["tool_call_id"])
  if (Array.isArray(out["tool_calls"])) {
    out["tool_calls"] = (out["tool_calls"] as ReadonlyArray<unknown>).map((call) =>
      isObject(call)
        ? {
            id: mistralToolCallId(call["id"]),
            type: call["type"] ?? "function",
            function: call["function"],
            ...(call["index"] !== undefined ? { index: call["index"] } : {})
          }
        : call
    )
  }
  return out
}

/** The fields of a tool call Mistral takes. */
const TOOL_CALL_KEYS = new Set(["id", "type", "function", "index"])

/** Whether a message would reach Mistral unchanged. */
const mistralReady = (message: unknown): boolean => {
  if (!isObject(message)) return true
  if (REPLAYED.some((key) => key in message)) return false
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
 * `random_seed`; the OpenAI fields it does not define left out (it answers 422 to any); replayed
 * assistant messages without the answer-only fields (`refusal`, `annotations`, `reasoning_content`…);
 * tool call ids that are not Mistral's own (9 letters or digits) — as after a failover from another
 * provider — rewritten consistently in calls and results, since Mistral answers 400 to them.
 */
export const mistral = (request: Json): Json | undefined => {
  const messages = Array.isArray(request["messages"]) ? (request["messages"] as ReadonlyArray<unknown>) : []
  const renames = request["max_completion_tokens"] !== undefined || request["seed"] !== undefined
  if (!renames && !MISTRAL_UNKNOWN.some((key) => key in request) && messages.every(mistralReady)) return undefined
  const out: Json = { ...request }
  if (out["max_completion_tokens"] !== undefined) {
    out["max_tokens"] ??= out["max_completion_tokens"]
    delete out["max_completion_tokens"]
  }
  if (out["seed"] !== undefined) {
    out["random_seed"] ??= out["seed"]
    delete out["seed"]
  }
  for (const key of MISTRAL_UNKNOWN) delete out[key]
  if (Array.isArray(request["messages"])) out["messages"] = messages.map(mistralMessage)
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
