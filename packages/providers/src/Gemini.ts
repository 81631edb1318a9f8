/**
 * The Gemini provider: OpenAI-shaped requests translated to the Gemini API
 * (`POST {baseUrl}/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
 * `:batchEmbedContents`, e.g. with `baseUrl: https://generativelanguage.googleapis.com/v1beta`) and
 * its answers translated back, over the shared transport. Authenticates with `x-goog-api-key`.
 *
 * - Request: system and developer messages as `systemInstruction`; `contents` and parts (text,
 *   images as `inlineData` or `fileData`, audio as `inlineData`); tool calls and results as
 *   `functionCall` / `functionResponse`; tools as `functionDeclarations`, `tool_choice` as
 *   `toolConfig`; `response_format` JSON as `responseMimeType` + `responseSchema` (keywords Gemini
 *   refuses, such as `additionalProperties`, are left out); `n` as `candidateCount`.
 * - Answer: one choice per candidate; `MAX_TOKENS` → `length`; safety, recitation and blocklist
 *   stops, and a prompt blocked outright, → `content_filter`; usage from `usageMetadata` (thinking
 *   tokens count as completion tokens, cached content as `cached_tokens`).
 * - Stream: each event's candidates as chunks; function calls arrive whole; the stream ends once
 *   every candidate has a `finishReason` (Gemini sends no end marker).
 * - Thought signatures (Gemini 3): a `functionCall` part's `thoughtSignature` rides on its tool call as
 *   `extra_content.google.thought_signature` and is put back into that part when the call is
 *   replayed; for endpoints whose clients send back only a call's id, `foldedId` / `unfoldId` carry
 *   it in the id.
 * - Embeddings: `batchEmbedContents` (texts only; `dimensions` as `outputDimensionality`); usage is
 *   an estimate (characters / 4), since Gemini reports none.
 */
import { Provider, TokenCounter, Wire } from "@sluice/core"
import { Effect } from "effect"
import type { Scope } from "effect"
import { refuse, Unsupported } from "./internal/unsupported.js"
import { toGemini, toGeminiEmbeddings } from "./internal/geminiRequest.js"
import { fromGemini, fromGeminiEmbeddings, streamDecoder } from "./internal/geminiResponse.js"
import { decodeWhole, makeClient, opened } from "./internal/transport.js"

export { cleanSchema, toGemini, toGeminiEmbeddings } from "./internal/geminiRequest.js"
export { finishReason, fromGemini, fromGeminiEmbeddings, streamDecoder, usageOf } from "./internal/geminiResponse.js"
export {
  foldedId,
  signatureFields,
  signatureOf,
  SKIP_VALIDATION,
  unfoldId,
  validatesSignatures
} from "./internal/geminiSignature.js"

/** The path of a model's method; a model may be written with Gemini's `models/` prefix or without. */
const methodPath = (model: string, method: string): string =>
  `/models/${encodeURIComponent(model.replace(/^models\//, ""))}:${method}`

const now = () => Math.floor(Date.now() / 1000)

/** How many candidates a request asks for (its `n`): the stream ends when each has finished. */
const candidateCount = (request: Wire.ChatCompletionRequest): number => {
  const n = request["n"]
  return typeof n === "number" && Number.isInteger(n) && n > 1 ? n : 1
}

/** Makes the Gemini provider. Its undici `Agent` is closed with the scope. */
export const make: Effect.Effect<Provider.Service, never, Scope.Scope> = Effect.gen(function* () {
  const client = yield* makeClient({ auth: (key) => ({ "x-goog-api-key": key }) })

  const chat: Provider.Service["chat"] = (upstream, call) => {
    const body = toGemini(call.request, call.model)
    if (body instanceof Unsupported) return Effect.fail(refuse(upstream, "gemini", body))
    const created = now()
    return client.whole(
      { upstream, path: methodPath(call.model, "generateContent"), payload: Wire.stringify(body), traced: call.traced },
      (answer) =>
        decodeWhole(upstream, answer, (value) => fromGemini(value, call.model, created), "a GenerateContentResponse")
    )
  }

  const chatStream: Provider.Service["chatStream"] = (upstream, call) => {
    const body = toGemini(call.request, call.model)
    if (body instanceof Unsupported) return Effect.fail(refuse(upstream, "gemini", body))
    return Effect.flatMap(
      client.stream(
        {
          upstream,
          path: methodPath(call.model, "streamGenerateContent?alt=sse"),
          payload: Wire.stringify(body),
          traced: call.traced,
          openTimeoutMs: call.openTimeoutMs
        },
        streamDecoder(upstream, call.model, now(), candidateCount(call.request))
      ),
      (answer) => opened(upstream, answer)
    )
  }

  const embeddings: Provider.Service["embeddings"] = (upstream, call) => {
    const body = toGeminiEmbeddings(call.request, call.model.replace(/^models\//, ""))
    if (body instanceof Unsupported) return Effect.fail(refuse(upstream, "gemini", body))
    const input = call.request.input
    const tokens = (typeof input === "string" ? [input] : (input as ReadonlyArray<string>)).reduce(
      (sum, text) => sum + TokenCounter.estimateText(text),
      0
    )
    return client.whole(
      {
        upstream,
        path: methodPath(call.model, "batchEmbedContents"),
        payload: Wire.stringify(body),
        traced: call.traced
      },
      (answer) =>
        decodeWhole(
          upstream,
          answer,
          (value) => fromGeminiEmbeddings(value, call.model, tokens),
          "a batchEmbedContents answer"
        )
    )
  }

  return { chat, chatStream, embeddings, enforcesTimeout: () => true }
})
