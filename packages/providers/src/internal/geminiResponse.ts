/**
 * Gemini answers → OpenAI: a `GenerateContentResponse` as a `chat.completion`, a stream of them as
 * chunks, and `batchEmbedContents` as an embeddings response.
 */
import type { Errors, StreamEvent, Topology, Wire } from "@sluice/core"
import type { StreamDecoder } from "./transport.js"
import { END, malformedEvent, streamError } from "./transport.js"
import { signatureFields } from "./geminiSignature.js"

type Json = Record<string, unknown>

const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

const count = (u: unknown): number => (typeof u === "number" && Number.isFinite(u) ? u : 0)

const BLOCKED = new Set(["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"])

/** Gemini's `finishReason` as OpenAI's `finish_reason` (`tool_calls` when the turn called functions). */
export const finishReason = (reason: unknown, calledTools: boolean): string | null => {
  if (reason === undefined || reason === null) return null
  if (reason === "MAX_TOKENS") return "length"
  if (typeof reason === "string" && BLOCKED.has(reason)) return "content_filter"
  return calledTools ? "tool_calls" : "stop"
}

/**
 * Gemini's `usageMetadata` as OpenAI usage: thinking tokens count as completion tokens (and as
 * `reasoning_tokens`), cached content as `prompt_tokens_details.cached_tokens`.
 */
export const usageOf = (usage: Json): Wire.Usage => {
  const prompt = count(usage["promptTokenCount"])
  const thoughts = count(usage["thoughtsTokenCount"])
  const completion = count(usage["candidatesTokenCount"]) + thoughts
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: count(usage["totalTokenCount"]) || prompt + completion,
    prompt_tokens_details: { cached_tokens: count(usage["cachedContentTokenCount"]) },
    ...(thoughts > 0 ? { completion_tokens_details: { reasoning_tokens: thoughts } } : {})
  }
}

/** A candidate's text and function-call parts (thoughts left out). */
const partsOf = (candidate: Json): { text: string; calls: Array<Json> } => {
  const content = isObject(candidate["content"]) ? candidate["content"] : {}
  let text = ""
  const calls: Array<Json> = []
  for (const part of Array.isArray(content["parts"]) ? (content["parts"] as ReadonlyArray<unknown>) : []) {
    if (!isObject(part) || part["thought"] === true) continue
    if (typeof part["text"] === "string") text += part["text"]
    if (isObject(part["functionCall"])) calls.push(part)
  }
  return { text, calls }
}

/**
 * A `functionCall` part as an OpenAI tool call; its `thoughtSignature` (Gemini 3) rides along as
 * `extra_content.google.thought_signature`, as Google's OpenAI-compatible API writes it, so that a
 * client replaying the call sends it back (see `toGemini`).
 */
const callOf = (part: Json, id: string): Json => {
  const call = part["functionCall"] as Json
  const signature = part["thoughtSignature"]
  return {
    id,
    type: "function",
    function: { name: call["name"], arguments: JSON.stringify(call["args"] ?? {}) },
    ...(typeof signature === "string" ? signatureFields(signature) : {})
  }
}

/**
 * A `GenerateContentResponse` as an OpenAI chat completion, one choice per candidate; a prompt
 * blocked before any candidate is one empty choice finishing with `content_filter`. Function calls
 * get ids `call_<n>` (Gemini has none). Undefined when it is not a response.
 */
export const fromGemini = (response: unknown, model: string, created: number): Wire.ChatCompletion | undefined => {
  if (!isObject(response)) return undefined
  const candidates = Array.isArray(response["candidates"]) ? (response["candidates"] as ReadonlyArray<unknown>) : []
  if (candidates.length === 0 && !isObject(response["promptFeedback"])) return undefined
  let calls = 0
  const choices = candidates.filter(isObject).map((candidate, i) => {
    const { calls: called, text } = partsOf(candidate)
    const toolCalls = called.map((call) => callOf(call, `call_${calls++}`))
    return {
      index: typeof candidate["index"] === "number" ? candidate["index"] : i,
      message: {
        role: "assistant",
        content: text === "" && toolCalls.length > 0 ? null : text,
        refusal: null,
        ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {})
      },
      logprobs: null,
      finish_reason: finishReason(candidate["finishReason"] ?? "STOP", toolCalls.length > 0)
    }
  })
  if (choices.length === 0) {
    choices.push({
      index: 0,
      message: { role: "assistant", content: null, refusal: null },
      logprobs: null,
      finish_reason: "content_filter"
    })
  }
  return {
    id: typeof response["responseId"] === "string" ? response["responseId"] : `gemini-${created}`,
    object: "chat.completion",
    created,
    model: typeof response["modelVersion"] === "string" ? response["modelVersion"] : model,
    choices,
    usage: isObject(response["usageMetadata"]) ? usageOf(response["usageMetadata"]) : null
  }
}

/**
 * A decoder of one `streamGenerateContent?alt=sse` stream into OpenAI chunks: the role chunk first,
 * text as content deltas, each function call as one tool-call delta (Gemini sends a call whole;
 * tool-call indices count within each candidate, as OpenAI's do within a choice), a finish chunk per
 * candidate, and once each of the `candidates` asked for (the request's `n`) has finished — in one
 * event or several — the usage-only chunk and the end (Gemini sends no end marker: the stream just
 * closes). A payload with an `error` is a failure.
 */
export const streamDecoder = (
  upstream: Topology.Upstream,
  model: string,
  created: number,
  candidates = 1
): StreamDecoder => {
  let id = `gemini-${created}`
  let name = model
  let started = false
  let calls = 0
  let expected = Math.max(1, candidates)
  let usage: Json = {}
  const called = new Map<number, number>()
  const finished = new Set<number>()
  const chunk = (index: number, delta: Json, finish: string | null = null) =>
    JSON.stringify({
      id,
      object: "chat.completion.chunk",
      created,
      model: name,
      choices: [{ index, delta, logprobs: null, finish_reason: finish }]
    })
  /** One candidate's part of an event: its text, its calls and, when it finished, its finish chunk. */
  const candidateOf = (candidate: Json, i: number, out: Array<StreamEvent.StreamEvent>): void => {
    const index = typeof candidate["index"] === "number" ? candidate["index"] : i
    if (finished.has(index)) return
    expected = Math.max(expected, index + 1)
    const { calls: functionCalls, text } = partsOf(candidate)
    if (text !== "") out.push({ data: chunk(index, { content: text }) })
    if (functionCalls.length > 0) {
      let next = called.get(index) ?? 0
      const toolCalls = functionCalls.map((call) => ({ index: next++, ...callOf(call, `call_${calls++}`) }))
      called.set(index, next)
      out.push({ data: chunk(index, { tool_calls: toolCalls }) })
    }
    if (candidate["finishReason"] !== undefined) {
      out.push({ data: chunk(index, {}, finishReason(candidate["finishReason"], called.has(index))) })
      finished.add(index)
    }
  }
  const decode = (
    payload: string,
    out: Array<StreamEvent.StreamEvent>
  ): typeof END | Errors.UpstreamError | undefined => {
    let response: unknown
    try {
      response = JSON.parse(payload)
    } catch {
      response = undefined
    }
    if (!isObject(response)) return malformedEvent(upstream, payload)
    if (response["error"] !== undefined) return streamError(upstream, response, payload)
    if (typeof response["responseId"] === "string") id = response["responseId"]
    if (typeof response["modelVersion"] === "string") name = response["modelVersion"]
    if (isObject(response["usageMetadata"])) usage = response["usageMetadata"]
    if (!started) {
      started = true
      out.push({ data: chunk(0, { role: "assistant", content: "" }) })
    }
    const list = Array.isArray(response["candidates"]) ? (response["candidates"] as ReadonlyArray<unknown>) : []
    if (list.length === 0 && isObject(response["promptFeedback"])) {
      // The prompt was blocked: no candidate comes.
      out.push({ data: chunk(0, {}, "content_filter") })
    } else {
      for (const [i, candidate] of list.entries()) if (isObject(candidate)) candidateOf(candidate, i, out)
      if (finished.size < expected) return undefined
    }
    const final = usageOf(usage)
    out.push({
      data: JSON.stringify({ id, object: "chat.completion.chunk", created, model: name, choices: [], usage: final }),
      usage: final,
      usageOnly: true
    })
    return END
  }
  return { framing: "sse", endMarker: "a finishReason", decode }
}

/**
 * A `batchEmbedContents` answer as an OpenAI embeddings response; undefined when it is not one.
 * Gemini reports no token count for embeddings: usage is `estimatedTokens`.
 */
export const fromGeminiEmbeddings = (
  answer: unknown,
  model: string,
  estimatedTokens: number
): Wire.EmbeddingsResponse | undefined => {
  if (!isObject(answer) || !Array.isArray(answer["embeddings"])) return undefined
  return {
    object: "list",
    data: (answer["embeddings"] as ReadonlyArray<unknown>).map((e, index) => ({
      object: "embedding",
      index,
      embedding: isObject(e) && Array.isArray(e["values"]) ? (e["values"] as ReadonlyArray<number>) : []
    })),
    model,
    usage: { prompt_tokens: estimatedTokens, total_tokens: estimatedTokens }
  }
}
