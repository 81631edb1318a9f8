/** Stubs and builders shared by the router tests. */
import { Effect, Layer, Stream } from "effect"
import type { Scope } from "effect"
import type { Decision, Wire } from "../src/index.js"
import {
  Errors,
  Guard,
  Matcher,
  Provider,
  Router,
  StateStore,
  StreamEvent,
  Strategy,
  TokenCounter,
  Topology
} from "../src/index.js"

/** An upstream with a base URL nobody listens on (the stub provider never dials it). */
export const upstream = (
  id: string,
  fields: Partial<Omit<Topology.Upstream, "id" | "provider" | "baseUrl">> = {}
): Topology.Upstream => Topology.upstream({ id, provider: "openai", baseUrl: "http://127.0.0.1:9/v1", ...fields })

/** A one-message chat request. */
export const chatRequest = (
  model = "gpt-4o",
  fields: Partial<Omit<Wire.ChatCompletionRequest, "model">> = {}
): Wire.ChatCompletionRequest => ({ model, messages: [{ role: "user", content: "hello" }], ...fields })

/**
 * Prompt tokens of {@link chatRequest} under `TokenCounter.layerEstimate`: 3 to prime the reply,
 * 3 of framing, ceil(4 / 4) for "user" and ceil(5 / 4) for "hello".
 */
export const PROMPT_TOKENS = 9

/** A completion as upstream `id` would answer it. */
export const completion = (
  id: string,
  usage: Wire.Usage = { prompt_tokens: 12, completion_tokens: 7, total_tokens: 19 }
): Wire.ChatCompletion => ({
  id: `chatcmpl-${id}`,
  object: "chat.completion",
  created: 0,
  model: "gpt-4o",
  choices: [{ index: 0, message: { role: "assistant", content: `answer from ${id}` }, finish_reason: "stop" }],
  usage
})

/** An upstream's HTTP error, retryable as the providers classify it (408, 429 and 5xx are). */
export const httpError = (upstream: string, status: number): Errors.UpstreamError =>
  new Errors.UpstreamError({
    upstream,
    kind: "http",
    status,
    message: `upstream answered ${status}`,
    retryable: status === 408 || status === 429 || status >= 500
  })

/** A streamed chunk carrying `content`. */
export const chunk = (content: string): Provider.StreamEvent => ({
  data: JSON.stringify({
    id: "chatcmpl-s",
    object: "chat.completion.chunk",
    created: 0,
    model: "gpt-4o",
    choices: [{ index: 0, delta: { content }, finish_reason: null }]
  })
})

/** The usage-only chunk that ends a stream with `stream_options.include_usage`. */
export const usageChunk = (usage: Wire.Usage): Provider.StreamEvent => ({
  data: JSON.stringify({ id: "chatcmpl-s", object: "chat.completion.chunk", created: 0, model: "gpt-4o", choices: [] }),
  usage,
  usageOnly: true
})

/** A Provider whose operations default to "not expected in this test" (a defect). */
export const provider = (service: Partial<Provider.Service>) =>
  Layer.succeed(
    Provider.Provider,
    Provider.Provider.of({
      chat: (u) => Effect.dieMessage(`unexpected chat call on ${u.id}`),
      chatStream: (u) => Effect.dieMessage(`unexpected chatStream call on ${u.id}`),
      embeddings: (u) => Effect.dieMessage(`unexpected embeddings call on ${u.id}`),
      ...service
    })
  )

/** A provider stream of the given events. */
export const streamOf = (...events: ReadonlyArray<Provider.StreamEvent>) => Stream.fromIterable(events)

/** A stream the upstream accepted, as a provider's `chatStream` returns it (read ahead in the scope). */
export const opened = (
  stream: Stream.Stream<Provider.StreamEvent, Errors.UpstreamError>
): Effect.Effect<Provider.Opened, never, Scope.Scope> =>
  Effect.map(StreamEvent.fromStream(stream), (events) => ({ events }))

/** A whole answer, as a provider's `chat` returns it. */
export const answer = <A>(value: A): Provider.Answer<A> => ({ value })

/**
 * A strategy that prefers the upstreams in `preference` order (falling back to the first
 * candidate) and records the candidate ids it was offered on each selection.
 */
export const preferring = (preference: ReadonlyArray<string>, offered: Array<ReadonlyArray<string>> = []) =>
  Strategy.make("preferring", (selection) => {
    offered.push(selection.candidates.map((u) => u.id))
    for (const id of preference) {
      const found = selection.candidates.find((u) => u.id === id)
      if (found !== undefined) return found
    }
    return selection.candidates[0]
  })

/** The router over `pools`, with the given stages (the estimate token counter unless one is given). */
export const routerLayer = (
  pools: ReadonlyArray<Topology.Pool>,
  stages: {
    readonly provider: Layer.Layer<Provider.Provider>
    readonly strategy?: Strategy.Service
    readonly guards?: Layer.Layer<Guard.Guards>
    readonly counter?: Layer.Layer<TokenCounter.TokenCounter>
  }
): Layer.Layer<Router.Router> =>
  Router.layer.pipe(
    Layer.provide(Matcher.layer),
    Layer.provide(
      Layer.mergeAll(
        Topology.layerPools(pools),
        stages.counter ?? TokenCounter.layerEstimate,
        stages.provider,
        Strategy.layer(stages.strategy ?? Strategy.first),
        stages.guards ?? Guard.none,
        StateStore.layerMemory
      )
    )
  )

/** What a recording guard saw. */
export interface GuardLog {
  readonly admitted: Array<string>
  readonly released: Array<{ readonly upstream: string; readonly outcome: Guard.Outcome }>
}

/**
 * A guard that admits every attempt (unless `refuse` says otherwise) and records admissions and
 * releases; `exclude` lets it leave an upstream out while candidates are built.
 */
export const recordingGuard = (
  log: GuardLog,
  options: {
    readonly name?: string
    readonly exclude?: (upstream: Topology.Upstream) => Errors.Exclusion | undefined
    readonly refuse?: (attempt: Guard.Attempt) => Errors.Exclusion | undefined
  } = {}
): Guard.Guard => ({
  name: options.name ?? "recording",
  check: (u) => options.exclude?.(u),
  admit: (attempt) => {
    const refused = options.refuse?.(attempt)
    if (refused !== undefined) return refused
    log.admitted.push(attempt.upstream.id)
    return (outcome) => void log.released.push({ upstream: attempt.upstream.id, outcome })
  }
})

/** A fresh, empty guard log. */
export const guardLog = (): GuardLog => ({ admitted: [], released: [] })

/** The guards layer for the given guards, in order. */
export const guards = (...gs: ReadonlyArray<Guard.Guard>) => Layer.succeed(Guard.Guards, gs)

/** The attempts of a decision without their timings. */
export const attemptsOf = (decision: Decision.Decision) =>
  decision.attempts.map(({ latencyMs: _latencyMs, ...rest }) => rest)
