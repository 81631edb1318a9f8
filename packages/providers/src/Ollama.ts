/**
 * The native Ollama provider: OpenAI-shaped requests translated to Ollama's own API
 * (`POST {baseUrl}/api/chat`, NDJSON streaming, `POST {baseUrl}/api/embed`, e.g. with
 * `baseUrl: http://localhost:11434`; a base URL ending in `/v1` is taken as the server's root) and
 * its answers translated back. Ollama's OpenAI-compatible `/v1` stays available as the
 * `openai-compatible` kind.
 *
 * - Request: images as base64 `images` (image URLs fail: Ollama takes data only); tool calls with
 *   object arguments and tool results named after their call; `response_format` as `format` (`json`
 *   or the JSON schema); temperature, `top_p`, `seed`, `max_tokens` (`num_predict`) and `stop` in
 *   `options`, with the request's own Ollama `options` (`num_ctx`...) and `keep_alive` passed on.
 *   `tool_choice` that forces a call and `n > 1` fail with a 400 naming the feature.
 * - Answer and stream: usage from `prompt_eval_count` / `eval_count`; `done_reason: "length"` →
 *   `length`; tool calls get ids `call_<n>` where Ollama sends none.
 * - Authenticates with a bearer token when the upstream has an API key (a proxy in front of Ollama).
 */
import { Provider, Wire } from "@sluice/core"
import { Effect } from "effect"
import type { Scope } from "effect"
import { refuse, Unsupported } from "./internal/unsupported.js"
import { fromOllama, fromOllamaEmbeddings, streamDecoder, toOllama, toOllamaEmbeddings } from "./internal/ollama.js"
import { bearer, decodeWhole, makeClient, opened } from "./internal/transport.js"

export {
  fromOllama,
  fromOllamaEmbeddings,
  streamDecoder,
  toOllama,
  toOllamaEmbeddings,
  usageOf
} from "./internal/ollama.js"

const now = () => Math.floor(Date.now() / 1000)

/** Makes the native Ollama provider. Its undici `Agent` is closed with the scope. */
export const make: Effect.Effect<Provider.Service, never, Scope.Scope> = Effect.gen(function* () {
  const client = yield* makeClient({ auth: bearer, rebase: (path) => path.replace(/\/(v1|api)$/, "") })

  const chat: Provider.Service["chat"] = (upstream, call) => {
    const body = toOllama(call.request, call.model, false)
    if (body instanceof Unsupported) return Effect.fail(refuse(upstream, "ollama", body))
    const created = now()
    return client.whole({ upstream, path: "/api/chat", payload: Wire.stringify(body), traced: call.traced }, (answer) =>
      decodeWhole(upstream, answer, (value) => fromOllama(value, created), "an Ollama chat answer")
    )
  }

  const chatStream: Provider.Service["chatStream"] = (upstream, call) => {
    const body = toOllama(call.request, call.model, true)
    if (body instanceof Unsupported) return Effect.fail(refuse(upstream, "ollama", body))
    return Effect.flatMap(
      client.stream(
        {
          upstream,
          path: "/api/chat",
          payload: Wire.stringify(body),
          traced: call.traced,
          openTimeoutMs: call.openTimeoutMs
        },
        streamDecoder(upstream, now())
      ),
      (answer) => opened(upstream, answer)
    )
  }

  const embeddings: Provider.Service["embeddings"] = (upstream, call) => {
    const body = toOllamaEmbeddings(call.request, call.model)
    if (body instanceof Unsupported) return Effect.fail(refuse(upstream, "ollama", body))
    return client.whole(
      { upstream, path: "/api/embed", payload: Wire.stringify(body), traced: call.traced },
      (answer) =>
        decodeWhole(upstream, answer, (value) => fromOllamaEmbeddings(value, call.model), "an Ollama embed answer")
    )
  }

  return { chat, chatStream, embeddings, enforcesTimeout: () => true }
})
