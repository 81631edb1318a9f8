/**
 * The provider registry: the kinds Sluice ships ({@link kinds}, which a config is checked against
 * when it loads) and one `Provider` service that dispatches each call on `upstream.provider`. Most
 * kinds speak the OpenAI wire format (presets of the OpenAI-compatible clouds and local servers, with
 * their endpoints and quirks); translating providers (`anthropic`, `gemini`, the native `ollama`)
 * plug in here by kind.
 */
import type { TokenCounter } from "@sluice/core"
import { Config, Errors, Provider } from "@sluice/core"
import { Effect, Layer } from "effect"
import * as Anthropic from "./Anthropic.js"
import * as Gemini from "./Gemini.js"
import * as Ollama from "./Ollama.js"
import * as OpenAICompatible from "./OpenAICompatible.js"
import * as Simulator from "./Simulator.js"
import * as Quirks from "./internal/quirks.js"

/**
 * A provider kind Sluice ships: its name, the public endpoint an upstream gets when it sets no
 * `baseUrl`, and how an OpenAI-compatible one differs from OpenAI.
 */
interface Preset {
  readonly name: string
  readonly baseUrl?: string
  /** What the provider's API can take, when not everything (see `Config.Capability`). */
  readonly capabilities?: ReadonlyArray<Config.Capability>
  /** How its upstreams count prompt tokens, when not by OpenAI's tiktoken rule (`TokenCounter.Rules`). */
  readonly tokens?: TokenCounter.Rules
  readonly openai?: OpenAICompatible.Options
}

/**
 * The kinds that need nothing but an API key (and a model): the OpenAI-compatible clouds with their
 * endpoints and quirks, the local servers at their default ports, and the translated providers.
 * `openai-compatible` and `azure` (whose URL names the resource and deployment) need a `baseUrl`.
 */
/** Every capability but the opt-in ones: what a kind without a list takes. */
const everything: ReadonlyArray<Config.Capability> = Config.Capability.literals.filter(
  (c) => !Config.OPT_IN_CAPABILITIES.includes(c)
)

/** Every capability but the legacy completions endpoint and the opt-in ones, for services without `/completions`. */
const noCompletions: ReadonlyArray<Config.Capability> = everything.filter((c) => c !== "completions")

export const presets: ReadonlyArray<Preset> = [
  // OpenAI keeps responses (`previous_response_id`, `store`): its `/responses` is passed through.
  { name: "openai", baseUrl: "https://api.openai.com/v1", capabilities: Config.Capability.literals },
  { name: "openai-compatible" },
  // Azure OpenAI: `baseUrl: https://<resource>.openai.azure.com/openai/deployments/<deployment>?api-version=<version>`
  // (or the v1 API, `https://<resource>.openai.azure.com/openai/v1`); the key goes in `api-key`.
  { name: "azure", openai: { auth: (key) => ({ "api-key": key }) } },
  // Groq, Mistral and Cohere serve no legacy `/completions`. Groq answers 400 to `n` other than 1 and to
  // `logprobs` / `top_logprobs`, and has no embeddings endpoint.
  {
    name: "groq",
    baseUrl: "https://api.groq.com/openai/v1",
    capabilities: noCompletions.filter((c) => c !== "n" && c !== "logprobs" && c !== "embeddings")
  },
  // Mistral refuses fields it does not know (422 `extra_forbidden`), `stream_options` among them (its last
  // chunk has usage anyway), and tool call ids other than 9 letters or digits (400): `Quirks.mistral`
  // renames or leaves out the one and rewrites the other (`Quirks.mistralEmbeddings`: embeddings'
  // `dimensions` as its `output_dimension`). It has no logprobs.
  {
    name: "mistral",
    baseUrl: "https://api.mistral.ai/v1",
    capabilities: noCompletions.filter((c) => c !== "logprobs"),
    openai: { adapt: Quirks.mistral, adaptEmbeddings: Quirks.mistralEmbeddings }
  },
  // Together's documented endpoint (its OpenAI compatibility page); chat, vision, tools, structured
  // output, legacy completions and embeddings.
  { name: "together", baseUrl: "https://api.together.ai/v1" },
  // DeepSeek's chat models take text only, and it has no embeddings endpoint.
  {
    name: "deepseek",
    baseUrl: "https://api.deepseek.com/v1",
    capabilities: everything.filter((c) => !["vision", "image_url", "embeddings"].includes(c))
  },
  // OpenRouter keeps a stream alive with SSE comments (`: OPENROUTER PROCESSING`), which the SSE reader
  // skips; `HTTP-Referer` / `X-Title` are optional attribution headers (an upstream's `headers`).
  { name: "openrouter", baseUrl: "https://openrouter.ai/api/v1" },
  // Fireworks sends usage in a stream's last chunk whether or not it was asked for.
  { name: "fireworks", baseUrl: "https://api.fireworks.ai/inference/v1" },
  // Cerebras has no embeddings endpoint.
  {
    name: "cerebras",
    baseUrl: "https://api.cerebras.ai/v1",
    capabilities: everything.filter((c) => c !== "embeddings")
  },
  // xAI's reasoning models refuse the penalties (and `grok-3` / `grok-4` `reasoning_effort`): `Quirks.xai`.
  { name: "xai", baseUrl: "https://api.x.ai/v1", openai: { adapt: Quirks.xai } },
  // Cohere's Compatibility API: chat (tools, structured output) and embeddings, no legacy completions. It
  // documents `n`, `top_logprobs`, `audio` / `modalities` and others as not supported, and embeddings'
  // `dimensions`: such requests go elsewhere, and `Quirks.cohere` leaves the rest out.
  {
    name: "cohere",
    baseUrl: "https://api.cohere.ai/compatibility/v1",
    capabilities: noCompletions.filter((c) => !["n", "logprobs", "audio", "dimensions"].includes(c)),
    openai: { adapt: Quirks.cohere }
  },
  // vLLM (`vllm serve`, port 8000, `--api-key` checked as a bearer token) continues a final assistant
  // message (`continue_final_message`): a stream can resume there.
  { name: "vllm", baseUrl: "http://localhost:8000/v1", capabilities: [...everything, "prefill"] },
  // LM Studio's server (port 1234) needs no key. Recent versions serve `/v1/responses` with
  // `previous_response_id`; an upstream whose version does can list `responses` in its capabilities.
  { name: "lmstudio", baseUrl: "http://localhost:1234/v1" },
  // Native Ollama: no `n`, no audio, images as data only (no `image_url`), no `file` parts, no forced
  // tool call (`tool_choice`), no logprobs.
  // Its models' tokenizers are their own and undocumented here: counts are estimates.
  {
    name: "ollama",
    baseUrl: "http://localhost:11434",
    capabilities: ["vision", "tools", "json_schema", "embeddings", "dimensions", "prefill"],
    tokens: "estimate"
  },
  // Anthropic: one choice per request, no audio input, no `file` parts, no logprobs, no embeddings API;
  // a final assistant message is a prefill.
  {
    name: "anthropic",
    baseUrl: "https://api.anthropic.com/v1",
    capabilities: ["vision", "image_url", "tools", "tool_choice", "json_schema", "prefill"],
    tokens: "anthropic"
  },
  // Gemini: no `file` parts, no logprobs (its `responseLogprobs` is not translated).
  {
    name: "gemini",
    baseUrl: "https://generativelanguage.googleapis.com/v1beta",
    capabilities: [
      "vision",
      "image_url",
      "audio",
      "tools",
      "tool_choice",
      "json_schema",
      "n",
      "embeddings",
      "dimensions"
    ],
    tokens: "gemini"
  }
]

const kindOf = (preset: Preset): Config.ProviderKind => ({
  name: preset.name,
  ...(preset.baseUrl === undefined ? { needsBaseUrl: true } : { needsBaseUrl: false, defaultBaseUrl: preset.baseUrl }),
  ...(preset.capabilities !== undefined ? { capabilities: preset.capabilities } : {}),
  ...(preset.tokens !== undefined ? { tokens: preset.tokens } : {})
})

/**
 * `simulated`: an OpenAI-compatible upstream that only pretends. With a `baseUrl` it is called like
 * any other (a `sluice simulate` elsewhere); without one the server starts a {@link Simulator} in
 * process for it, set up by the upstream's `simulate:` block ({@link Simulator.SimulateOptions}).
 */
export const simulated = {
  name: "simulated",
  needsBaseUrl: false,
  simulated: true,
  options: { key: "simulate", schema: Simulator.SimulateOptions }
} as const satisfies Config.ProviderKind

/**
 * Every provider kind Sluice ships, in the order error messages list them: pass them as
 * `Config.DecodeOptions.providers` (the server's `ConfigFile` does).
 */
export const kinds: ReadonlyArray<Config.ProviderKind> = [...presets.map(kindOf), simulated]

/** Provider kinds whose upstreams speak their own API, translated by their own provider. */
const translated: ReadonlyArray<string> = ["anthropic", "gemini", "ollama"]

/** Provider kinds served by the OpenAI-compatible translation. */
export const openAICompatibleKinds: ReadonlyArray<string> = kinds
  .map((kind) => kind.name)
  .filter((name) => !translated.includes(name))

/** Dispatches on `upstream.provider` among `providers`; an unknown kind fails without retry. */
export const dispatch = (providers: Readonly<Record<string, Provider.Service>>): Provider.Service => {
  // Built by hand rather than with `Errors.Failure.protocol` (retryable): a kind nobody serves is a
  // configuration mistake that no other attempt fixes.
  const unknown = (upstream: { readonly id: string; readonly provider: string }) =>
    new Errors.UpstreamError({
      upstream: upstream.id,
      kind: "protocol",
      message: `no provider for kind '${upstream.provider}'; known: ${Object.keys(providers).join(", ")}`,
      retryable: false
    })
  // An upstream whose capabilities name an endpoint its provider cannot pass through: a config mistake too.
  const unforwarded = (upstream: { readonly id: string; readonly provider: string }, forward: Provider.Forward) =>
    new Errors.UpstreamError({
      upstream: upstream.id,
      kind: "protocol",
      message: `the ${upstream.provider} provider cannot pass /${forward.endpoint} through; remove '${forward.endpoint}' from the upstream's capabilities`,
      retryable: false
    })
  return Provider.Provider.of({
    chat: (upstream, call) => {
      const p = providers[upstream.provider]
      return p === undefined ? Effect.fail(unknown(upstream)) : p.chat(upstream, call)
    },
    chatStream: (upstream, call) => {
      const p = providers[upstream.provider]
      return p === undefined ? Effect.fail(unknown(upstream)) : p.chatStream(upstream, call)
    },
    embeddings: (upstream, call) => {
      const p = providers[upstream.provider]
      return p === undefined ? Effect.fail(unknown(upstream)) : p.embeddings(upstream, call)
    },
    forward: (upstream, call) => {
      const p = providers[upstream.provider]
      if (p?.forward === undefined) return Effect.fail(unforwarded(upstream, call.request))
      return p.forward(upstream, call)
    },
    forwardStream: (upstream, call) => {
      const p = providers[upstream.provider]
      if (p?.forwardStream === undefined) return Effect.fail(unforwarded(upstream, call.request))
      return p.forwardStream(upstream, call)
    },
    enforcesTimeout: (upstream) => providers[upstream.provider]?.enforcesTimeout?.(upstream) === true
  })
}

/**
 * Every built-in provider kind, plus `custom` kinds (which may also replace a built-in one). The
 * OpenAI-compatible kinds without quirks share one set of undici keep-alive connection pools; each
 * other provider has its own. All are closed with the layer.
 */
export const layer = (custom: Readonly<Record<string, Provider.Service>> = {}): Layer.Layer<Provider.Provider> =>
  Layer.scoped(
    Provider.Provider,
    Effect.gen(function* () {
      const openai = yield* OpenAICompatible.make
      const anthropic = yield* Anthropic.make
      const gemini = yield* Gemini.make
      const ollama = yield* Ollama.make
      const quirky: Record<string, Provider.Service> = {}
      for (const preset of presets) {
        if (preset.openai !== undefined) quirky[preset.name] = yield* OpenAICompatible.makeWith(preset.openai)
      }
      return dispatch({
        ...Object.fromEntries(openAICompatibleKinds.map((kind) => [kind, openai])),
        ...quirky,
        anthropic,
        gemini,
        ollama,
        ...custom
      })
    })
  )
