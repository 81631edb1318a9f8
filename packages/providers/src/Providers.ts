/**
 * The provider registry: one `Provider` service that dispatches each call on `upstream.provider`.
 * Every kind Sluice ships today speaks the OpenAI wire format; translating providers (Anthropic,
 * Gemini) plug in here by kind.
 */
import { Config, Errors, Provider } from "@sluice/core"
import { Effect, Layer } from "effect"
import * as OpenAICompatible from "./OpenAICompatible.js"

/** Provider kinds served by the OpenAI-compatible translation: every kind the config accepts today. */
export const openAICompatibleKinds: ReadonlyArray<Config.ProviderKind> = Config.ProviderKind.literals

/** Dispatches on `upstream.provider` among `providers`; an unknown kind fails without retry. */
export const dispatch = (providers: Readonly<Record<string, Provider.Service>>): Provider.Service => {
  const unknown = (upstream: { readonly id: string; readonly provider: string }) =>
    new Errors.UpstreamError({
      upstream: upstream.id,
      kind: "protocol",
      message: `no provider for kind '${upstream.provider}'; known: ${Object.keys(providers).join(", ")}`,
      retryable: false
    })
  return Provider.Provider.of({
    chat: (upstream, request) => {
      const p = providers[upstream.provider]
      return p === undefined ? Effect.fail(unknown(upstream)) : p.chat(upstream, request)
    },
    chatStream: (upstream, request) => {
      const p = providers[upstream.provider]
      return p === undefined ? Effect.fail(unknown(upstream)) : p.chatStream(upstream, request)
    },
    embeddings: (upstream, request) => {
      const p = providers[upstream.provider]
      return p === undefined ? Effect.fail(unknown(upstream)) : p.embeddings(upstream, request)
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
    Effect.map(OpenAICompatible.make, (openai) =>
      dispatch({ ...Object.fromEntries(openAICompatibleKinds.map((kind) => [kind, openai])), ...custom })
    )
  )
