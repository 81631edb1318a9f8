/**
 * The Anthropic provider: OpenAI-shaped chat requests translated to the Messages API
 * (`POST {baseUrl}/messages`, e.g. `https://api.anthropic.com/v1/messages`) and its answers and
 * streams translated back, over the shared transport. Authenticates with `x-api-key` and sends
 * `anthropic-version` ({@link VERSION}; a configured header of that name wins).
 *
 * - Request: system and developer messages hoisted to `system`; consecutive turns of one role merged;
 *   tool calls and results as `tool_use` / `tool_result` blocks; images (base64 data URLs and URLs);
 *   `max_tokens` the request's, else the pool's `defaultMaxTokens` (the call's), else {@link DEFAULT_MAX_TOKENS}; `stop` as `stop_sequences`;
 *   `tool_choice` and `parallel_tool_calls`; `response_format` JSON through a forced tool whose input
 *   becomes the answer's content. `n > 1`, audio and file parts fail with a 400 naming the feature.
 * - Answer: stop reasons mapped (`end_turn` / `stop_sequence` → `stop`, `max_tokens` → `length`,
 *   `tool_use` → `tool_calls`, `refusal` → `content_filter`); usage with every input token in
 *   `prompt_tokens` and cache reads as `prompt_tokens_details.cached_tokens`.
 * - Stream: Anthropic's events as OpenAI chunks, ending with a usage-only chunk; an `error` event
 *   (`overloaded_error` too) is a retryable failure.
 * - Errors: the status decides as for every provider (529 `overloaded_error` is a retryable 5xx); an
 *   `overloaded_error` body is retryable whatever its status. `anthropic-ratelimit-*` headers feed
 *   the rate limiter.
 * - Embeddings: Anthropic has none; a call fails with a 400 saying so.
 */
import { Provider, Wire } from "@sluice/core"
import { Effect } from "effect"
import type { Scope } from "effect"
import { toAnthropic } from "./internal/anthropicRequest.js"
import { refuse, Unsupported } from "./internal/unsupported.js"
import { fromAnthropic, streamDecoder } from "./internal/anthropicResponse.js"
import { decodeWhole, makeClient, opened } from "./internal/transport.js"

export { errorType } from "./internal/anthropicErrors.js"
export { finishReason, fromAnthropic, streamDecoder, usageOf } from "./internal/anthropicResponse.js"
export { JSON_TOOL, parseArguments, toAnthropic, Unsupported } from "./internal/anthropicRequest.js"

/** The `anthropic-version` header sent with every request. */
export const VERSION = "2023-06-01"

/**
 * `max_tokens` when neither the request nor the call sets one (Anthropic requires one). Through the
 * router a call always carries its pool's `defaultMaxTokens`; this is for direct calls.
 */
export const DEFAULT_MAX_TOKENS = 4096

/** Whether an Anthropic error body says the upstream is overloaded (worth another upstream). */
const overloaded = (body: unknown): boolean =>
  typeof body === "object" &&
  body !== null &&
  typeof (body as { error?: unknown }).error === "object" &&
  (body as { error: { type?: unknown } | null }).error?.type === "overloaded_error"

const now = () => Math.floor(Date.now() / 1000)

/** Makes the Anthropic provider. Its undici `Agent` is closed with the scope. */
export const make: Effect.Effect<Provider.Service, never, Scope.Scope> = Effect.gen(function* () {
  const client = yield* makeClient({ auth: (key) => ({ "x-api-key": key }), headers: { "anthropic-version": VERSION } })

  const chat: Provider.Service["chat"] = (upstream, call) => {
    const body = toAnthropic(call.request, call.model, call.defaultMaxTokens ?? DEFAULT_MAX_TOKENS, false)
    if (body instanceof Unsupported) return Effect.fail(refuse(upstream, "anthropic", body))
    return client.whole({ upstream, path: "/messages", payload: Wire.stringify(body), traced: call.traced }, (answer) =>
      decodeWhole(upstream, answer, (value) => fromAnthropic(value, now()), "an Anthropic message", {
        retryable: overloaded
      })
    )
  }

  const chatStream: Provider.Service["chatStream"] = (upstream, call) => {
    const body = toAnthropic(call.request, call.model, call.defaultMaxTokens ?? DEFAULT_MAX_TOKENS, true)
    if (body instanceof Unsupported) return Effect.fail(refuse(upstream, "anthropic", body))
    return Effect.flatMap(
      client.stream(
        {
          upstream,
          path: "/messages",
          payload: Wire.stringify(body),
          traced: call.traced,
          openTimeoutMs: call.openTimeoutMs
        },
        streamDecoder(upstream, now())
      ),
      (answer) => opened(upstream, answer, overloaded)
    )
  }

  const embeddings: Provider.Service["embeddings"] = (upstream) =>
    Effect.fail(refuse(upstream, "anthropic", new Unsupported("embeddings", "Anthropic has no embeddings API")))

  return { chat, chatStream, embeddings, enforcesTimeout: () => true }
})
