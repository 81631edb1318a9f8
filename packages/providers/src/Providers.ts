/**
 * The provider registry: the kinds Sluice ships ({@link kinds}, which a config is checked against
 * when it loads) and one `Provider` service that dispatches each call on `upstream.provider`. Most
 * kinds speak the OpenAI wire format; translating providers (`anthropic`, `gemini`, the native `ollama`) plug in here by kind.
 */
import type { Config } from "@sluice/core"
import { Errors, Provider } from "@sluice/core"
import { Effect, Layer } from "effect"
import * as Anthropic from "./Anthropic.js"
import * as Gemini from "./Gemini.js"
import * as Ollama from "./Ollama.js"
import * as OpenAICompatible from "./OpenAICompatible.js"
import * as Simulator from "./Simulator.js"

const remote = (name: string): Config.ProviderKind => ({ name, needsBaseUrl: true })

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
export const kinds: ReadonlyArray<Config.ProviderKind> = [
  remote("openai"),
  remote("openai-compatible"),
  remote("groq"),
  remote("mistral"),
  remote("together"),
  remote("vllm"),
  remote("ollama"),
  remote("lmstudio"),
  remote("anthropic"),
  remote("gemini"),
  simulated
]

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
    enforcesTimeout: (upstream) => providers[upstream.provider]?.enforcesTimeout?.(upstream) === true
  })
}

/**
 * Every built-in provider kind, plus `custom` kinds (which may also replace a built-in one). The
 * OpenAI-compatible kinds share one set of undici keep-alive connection pools, closed with the layer.
 */
export const layer = (custom: Readonly<Record<string, Provider.Service>> = {}): Layer.Layer<Provider.Provider> =>
  Layer.scoped(
    Provider.Provider,
    Effect.gen(function* () {
      const openai = yield* OpenAICompatible.make
      const anthropic = yield* Anthropic.make
      const gemini = yield* Gemini.make
      const ollama = yield* Ollama.make
      return dispatch({
        ...Object.fromEntries(openAICompatibleKinds.map((kind) => [kind, openai])),
        anthropic,
        gemini,
        ollama,
        ...custom
      })
    })
  )
