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
 * - Embeddings: `batchEmbedContents` (texts only; `dimensions` as `outputDimensionality`); usage is
 *   an estimate (characters / 4), since Gemini reports none.
 */
import { Errors, Provider, TokenCounter, Wire } from "@sluice/core"
import type { Topology } from "@sluice/core"
import { Effect } from "effect"
import type { Scope } from "effect"
import { Unsupported } from "./internal/anthropicRequest.js"
import { toGemini, toGeminiEmbeddings } from "./internal/geminiRequest.js"
import { fromGemini, fromGeminiEmbeddings, streamDecoder } from "./internal/geminiResponse.js"
import type { Answer } from "./internal/transport.js"
import { fromStatus, makeClient, notJson, opened } from "./internal/transport.js"

export { cleanSchema, toGemini, toGeminiEmbeddings } from "./internal/geminiRequest.js"
export { finishReason, fromGemini, fromGeminiEmbeddings, streamDecoder, usageOf } from "./internal/geminiResponse.js"

type Upstream = Topology.Upstream

/** A request this upstream cannot serve: a 400 naming the feature and the upstream. */
const unsupported = (upstream: Upstream, what: Unsupported): Errors.UpstreamError =>
  Errors.Failure.http(
    upstream.id,
    400,
    `upstream '${upstream.id}' (gemini) cannot serve this request: ${what.message} (${what.feature}); ` +
      `send it to a pool whose upstreams support ${what.feature}`
  )

/** The path of a model's method; a model may be written with Gemini's `models/` prefix or without. */
const methodPath = (model: string, method: string): string =>
  `/models/${encodeURIComponent(model.replace(/^models\//, ""))}:${method}`

/** A whole answer's JSON translated by `translate`, or the failure it is. */
const decode = <A>(
  upstream: Upstream,
  answer: Answer,
  translate: (value: unknown) => A | undefined,
  what: string
): Effect.Effect<Provider.Answer<A>, Errors.UpstreamError> => {
  if (answer.status < 200 || answer.status >= 300) {
    return Effect.fail(fromStatus(upstream, answer.status, answer.headers, answer.text))
  }
  let value: unknown
  try {
    value = JSON.parse(answer.text)
  } catch (error) {
    return Effect.fail(notJson(upstream, answer.text, error))
  }
  const translated = translate(value)
  if (translated === undefined) return Effect.fail(Errors.Failure.protocol(upstream.id, `the answer is not ${what}`))
  return Effect.succeed({ value: translated, rateLimits: Provider.parseRateLimitHeaders(answer.headers, Date.now()) })
}

const now = () => Math.floor(Date.now() / 1000)

/** Makes the Gemini provider. Its undici `Agent` is closed with the scope. */
export const make: Effect.Effect<Provider.Service, never, Scope.Scope> = Effect.gen(function* () {
  const client = yield* makeClient({ auth: (key) => ({ "x-goog-api-key": key }) })

  const chat: Provider.Service["chat"] = (upstream, call) => {
    const body = toGemini(call.request)
    if (body instanceof Unsupported) return Effect.fail(unsupported(upstream, body))
    const created = now()
    return client.whole(
      { upstream, path: methodPath(call.model, "generateContent"), payload: Wire.stringify(body), traced: call.traced },
      (answer) =>
        decode(upstream, answer, (value) => fromGemini(value, call.model, created), "a GenerateContentResponse")
    )
  }

  const chatStream: Provider.Service["chatStream"] = (upstream, call) => {
    const body = toGemini(call.request)
    if (body instanceof Unsupported) return Effect.fail(unsupported(upstream, body))
    return Effect.flatMap(
      client.stream(
        { upstream, path: methodPath(call.model, "streamGenerateContent?alt=sse"), payload: Wire.stringify(body) },
        streamDecoder(upstream, call.model, now())
      ),
      (answer) => opened(upstream, answer)
    )
  }

  const embeddings: Provider.Service["embeddings"] = (upstream, call) => {
    const body = toGeminiEmbeddings(call.request, call.model.replace(/^models\//, ""))
    if (body instanceof Unsupported) return Effect.fail(unsupported(upstream, body))
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
        decode(
          upstream,
          answer,
          (value) => fromGeminiEmbeddings(value, call.model, tokens),
          "a batchEmbedContents answer"
        )
    )
  }

  return { chat, chatStream, embeddings, enforcesTimeout: () => true }
})
