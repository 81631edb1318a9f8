/**
 * A forwarded request (see `Router.Service.forward`): an endpoint of the upstream's own API that
 * Sluice passes through — OpenAI's legacy completions, its Responses API — routed like a chat
 * request. Each attempt picks how to call its upstream: the endpoint itself where the upstream has it
 * (its capabilities name it), else the request's chat translation when the caller gave one.
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import type { Call as AttemptCall } from "../Attempt.js"
import { has, needsOf, NEEDS_COMPLETIONS, NEEDS_RESPONSES } from "../Capabilities.js"
import type { Capability } from "../Config.js"
import type { UpstreamError } from "../Errors.js"
import { Failure } from "../Errors.js"
import type { Answer, Forward, Opened, Service as ProviderService } from "../Provider.js"
import type { Upstream } from "../Topology.js"
import { estimateText } from "../TokenCounter.js"
import type { ChatCompletion, ChatCompletionRequest, Usage } from "../Wire.js"
import { stringify, toChatUsage } from "../Wire.js"
import type { Start } from "./stream.js"

/** A request for an endpoint Sluice passes through, with its chat translation when it has one. */
export interface Forwarded extends Forward {
  /**
   * The same request as a chat completion, for upstreams that do not serve `endpoint`: with it every
   * upstream of the pool can take the request (translated where the endpoint is not native);
   * without it only the upstreams whose capabilities name the endpoint are candidates.
   */
  readonly chat?: ChatCompletionRequest | undefined
}

/** A forwarded request's whole answer: the upstream's own (`native`), or the chat translation's. */
export type Answered =
  { readonly native: true; readonly value: unknown } | { readonly native: false; readonly value: ChatCompletion }

/** The capability that names an endpoint. */
const capabilityOf = (forward: Forward): Capability => forward.endpoint

/** True when `upstream` serves the endpoint of `forward` itself. */
export const native = (upstream: Upstream, forward: Forward): boolean =>
  has(upstream.capabilities, capabilityOf(forward))

/** What the request needs of an upstream: the endpoint itself, unless a chat translation can go anywhere. */
export const needs = (forwarded: Forwarded): ReadonlyArray<string> | undefined =>
  forwarded.chat !== undefined
    ? needsOf(forwarded.chat)
    : forwarded.endpoint === "completions"
      ? NEEDS_COMPLETIONS
      : NEEDS_RESPONSES

/** The completion tokens a forwarded body asks for: `max_tokens` (completions) or `max_output_tokens`. */
export const requestedOutputTokens = (forwarded: Forwarded): number | undefined => {
  const limit = forwarded.body[forwarded.endpoint === "completions" ? "max_tokens" : "max_output_tokens"]
  return typeof limit === "number" ? limit : undefined
}

/** The fast estimate of a body without a chat translation: its prompt (or input) text. */
export const estimateBody = (forwarded: Forwarded): number => {
  const prompt = forwarded.body[forwarded.endpoint === "completions" ? "prompt" : "input"]
  if (typeof prompt === "string") return estimateText(prompt)
  return prompt === undefined ? 0 : estimateText(stringify(prompt))
}

const missing = (upstream: Upstream, forward: Forward): UpstreamError =>
  Failure.protocol(upstream.id, `the ${upstream.provider} provider cannot pass /${forward.endpoint} through`)

/** The whole answer of one attempt: the endpoint itself where the upstream has it, else the translation. */
export const call =
  (provider: ProviderService, forwarded: Forwarded): AttemptCall<Answered> =>
  (upstream, model, traced, maxTokens) => {
    if (forwarded.chat === undefined || native(upstream, forwarded)) {
      if (provider.forward === undefined) return Effect.fail(missing(upstream, forwarded))
      return Effect.map(
        provider.forward(upstream, { request: forwarded, model, traced }),
        (answer): Answer<Answered> => ({ ...answer, value: { native: true, value: answer.value } })
      )
    }
    return Effect.map(
      provider.chat(upstream, { request: forwarded.chat, model, traced, defaultMaxTokens: maxTokens }),
      (answer): Answer<Answered> => ({ ...answer, value: { native: false, value: answer.value } })
    )
  }

/**
 * The stream of one attempt, as {@link call}; `opened` hears whether it is the upstream's own.
 * Without a chat translation `chat` (which `Streaming.open` builds its call from) is only a stand-in.
 */
export const start =
  (provider: ProviderService, forwarded: Forwarded, opened: (native: boolean) => void): Start =>
  (upstream, chatCall): Effect.Effect<Opened, UpstreamError, Scope.Scope> => {
    const own = forwarded.chat === undefined || native(upstream, forwarded)
    opened(own)
    if (!own) return provider.chatStream(upstream, chatCall)
    if (provider.forwardStream === undefined) return Effect.fail(missing(upstream, forwarded))
    return provider.forwardStream(upstream, {
      request: forwarded,
      model: chatCall.model,
      traced: chatCall.traced,
      openTimeoutMs: chatCall.openTimeoutMs
    })
  }

/** The chat request `Streaming.open` starts from: the translation, else a stand-in that keeps the client's usage choice. */
export const chatOf = (forwarded: Forwarded): ChatCompletionRequest =>
  forwarded.chat ?? {
    model: forwarded.body.model,
    messages: [],
    ...(isObject(forwarded.body["stream_options"])
      ? { stream_options: forwarded.body["stream_options"] as ChatCompletionRequest["stream_options"] }
      : {})
  }

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null

/**
 * The usage of an answer in OpenAI's chat shape: a chat or completions answer's own, or a Responses
 * answer's `input_tokens` / `output_tokens`.
 */
export const usageOf = (answered: Answered): Usage | undefined => {
  const usage = isObject(answered.value) ? answered.value["usage"] : undefined
  return isObject(usage) ? toChatUsage(usage) : undefined
}
