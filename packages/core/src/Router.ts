/**
 * Router: the routing pipeline as one service, composed of its stages.
 *
 * ```
 * request ─► Matcher ─► TokenCounter ─► Retry( Select ─► Queue ─► Attempt( guards ─► Provider ) ) ─► response | stream
 * ```
 *
 * The decision — match, estimate, candidates, strategy, admission — is synchronous code over this
 * instance's state (see `Select`, `Attempt`, `Guard`); Effect runs the edges: the provider call, the
 * queue wait, backoff sleeps and streams. Every request yields a {@link Decision.Decision}, returned
 * with the response (and with every error after routing), and recorded on the `sluice.route` span
 * when spans are exported.
 */
import type { Tracer } from "effect"
import { Cause, Chunk, Clock, Context, DefaultServices, Effect, Layer, Option, Random, Runtime, Stream } from "effect"
import type { Fiber } from "effect"
import { randomFillSync } from "node:crypto"
import * as AttemptStage from "./Attempt.js"
import type { Decision } from "./Decision.js"
import { Builder, spanAttributes } from "./Decision.js"
import type { RouterError, UpstreamError } from "./Errors.js"
import { ModelNotFound, withDecision } from "./Errors.js"
import { needsOf, NEEDS_EMBEDDINGS, NEEDS_EMBEDDINGS_DIMENSIONS } from "./Capabilities.js"
import { Guards } from "./Guard.js"
import * as HedgeStage from "./Hedge.js"
import type { Prompt, RouteOptions } from "./internal/request.js"
import * as LatencyAverage from "./internal/latency.js"
import * as Live from "./Live.js"
import { Request } from "./internal/request.js"
import { prefixHashOf } from "./internal/prefix.js"
import * as Forwarding from "./internal/forward.js"
import * as Resume from "./internal/resume.js"
import * as Streaming from "./internal/stream.js"
import { Matcher } from "./Matcher.js"
import type { Answer } from "./Provider.js"
import { Provider } from "./Provider.js"
import * as QueueStage from "./Queue.js"
import * as RetryStage from "./Retry.js"
import * as SelectStage from "./Select.js"
import { StateStore } from "./StateStore.js"
import { Strategy, nameOf } from "./Strategy.js"
import type { Service as TokenCounterService } from "./TokenCounter.js"
import type { Count, Rules } from "./TokenCounter.js"
import { TokenCounter, estimateAs, estimateText } from "./TokenCounter.js"
import type { Pool, Upstream } from "./Topology.js"
import * as Tracing from "./Tracing.js"
import type {
  ChatCompletion,
  ChatCompletionRequest,
  EmbeddingsRequest,
  EmbeddingsResponse,
  Model,
  Usage
} from "./Wire.js"
import { requestedMaxTokens } from "./Wire.js"

export type { Answered, Forwarded } from "./internal/forward.js"
export type { RouteOptions } from "./internal/request.js"
export type { RoutedStream } from "./internal/stream.js"

/** A forwarded stream that has started, and whether its events are the endpoint's own (else chat chunks). */
export interface ForwardedStream {
  readonly stream: Streaming.RoutedStream
  readonly native: boolean
}

/** A response with the decision that produced it. */
export interface Routed<A> {
  readonly response: A
  readonly decision: Decision
  /**
   * The response's JSON text as the upstream sent it, when nothing needed translating: relay it
   * instead of serializing `response` again.
   */
  readonly text?: string | undefined
}

/** The routing pipeline. */
export interface Service {
  readonly chat: (
    request: ChatCompletionRequest,
    options?: RouteOptions
  ) => Effect.Effect<Routed<ChatCompletion>, RouterError>
  /** A streaming chat completion (the request's `stream` flag is ignored: this always streams). */
  readonly chatStream: (
    request: ChatCompletionRequest,
    options?: RouteOptions
  ) => Effect.Effect<Streaming.RoutedStream, RouterError>
  readonly embeddings: (
    request: EmbeddingsRequest,
    options?: RouteOptions
  ) => Effect.Effect<Routed<EmbeddingsResponse>, RouterError>
  /**
   * A request for an endpoint Sluice passes through (`completions`, `responses`): sent to an upstream
   * that serves it — or, when the request carries its chat translation, to any upstream, translated
   * where the endpoint is not its own. Same pools, guards, retries and decision as a chat request;
   * when no upstream can take it, the capability refusal names the pool and its upstreams.
   */
  readonly forward: (
    request: Forwarding.Forwarded,
    options?: RouteOptions
  ) => Effect.Effect<Routed<Forwarding.Answered>, RouterError>
  /** {@link forward}, streamed (the body's `stream` flag is ignored). */
  readonly forwardStream: (
    request: Forwarding.Forwarded,
    options?: RouteOptions
  ) => Effect.Effect<ForwardedStream, RouterError>
  /** The models the pools serve (exact names and aliases). */
  readonly models: Effect.Effect<ReadonlyArray<Model>>
  /**
   * `model` as the router would serve it — a name a pool matches by a pattern (`claude-*`) too — or
   * undefined when no pool serves it. Optional for routers built elsewhere.
   */
  readonly model?: (model: string) => Model | undefined
  /** Requests waiting in a pool's queue now (for the admin API); optional for routers built elsewhere. */
  readonly queueDepth?: (poolId: string) => number
  /**
   * Requests routed now: from their start until their answer or error (a stream: until it is
   * released). Optional for routers built elsewhere.
   */
  readonly inFlight?: () => number
  /**
   * The prompt tokens of `request` as the pool serving its model would count them: by the rules of
   * the pool's first enabled upstream (`TokenCounter.Rules`, an estimate), else by the model's own
   * tiktoken encoding (for `count_tokens`). Optional for routers built elsewhere.
   */
  readonly countTokens?: (request: ChatCompletionRequest) => Effect.Effect<Count, ModelNotFound>
  /** Completes once no request is in flight (at once when none is), e.g. to retire a replaced config. */
  readonly idle?: Effect.Effect<void>
  /**
   * An upstream's decayed latency (see `HALF_LIFE_MS`): of its whole answers, and apart from that of
   * its streams to their first content; absent before its first. Optional for routers built elsewhere.
   */
  readonly latency?: (upstreamId: string) => Latency
  /**
   * What a strategy reads of `upstream` at `now` (epoch ms), as one record: attempts in flight and
   * the tokens they reserved, decayed latencies, error rate, budget left (see `Live.Candidate`).
   * Optional for routers built elsewhere.
   */
  readonly live?: (upstream: Upstream, now: number) => LiveStatus
}

/** The live view of one upstream, and whether the pipeline counts its load. */
export interface LiveStatus extends Live.Candidate {
  /**
   * False when the pipeline's strategy reads no load (round robin, weighted...): attempts are then
   * not counted, so `inFlight` and `reservedTokens` stay 0 (the rate limiter still counts requests in
   * flight for its own limits).
   */
  readonly counted: boolean
}

/** Decayed averages of an upstream's latency, in milliseconds, with when each was last updated. */
export interface Latency {
  readonly answer?: LatencyAverage.Decayed
  readonly firstContent?: LatencyAverage.Decayed
}

/** After this long, an old latency average weighs half of what it did. */
export const HALF_LIFE_MS = LatencyAverage.HALF_LIFE_MS

/** The routing pipeline. */
export class Router extends Context.Tag("@sluice/core/Router")<Router, Service>() {}

/** What the pipeline needs: each stage is a service, chosen by providing its layer. */
export type Requirements = Matcher | TokenCounter | Strategy | Provider | Guards | StateStore

/** The retry backoff of a pool as an Effect `Schedule` (see `Retry`). */
export const backoffSchedule = RetryStage.backoffSchedule

/**
 * A new request id, `req_` and 32 hex digits: random rather than a clock and a counter, so that
 * gateway instances sharing a store never hand out the same one. The router makes one for a request
 * that comes without; the gateway makes it earlier, to put it on every answer.
 */
export const newRequestId = (): string => `req_${ids.next()}`

/**
 * 128-bit random ids as hex, drawn from a buffer the CSPRNG fills 256 ids at a time (one
 * `randomUUID` and its dash removal per request cost more than the whole decision).
 */
const ids = (() => {
  const buffer = Buffer.allocUnsafe(16 * 256)
  let at = buffer.length
  return {
    next: (): string => {
      if (at === buffer.length) {
        randomFillSync(buffer)
        at = 0
      }
      at += 16
      return buffer.toString("hex", at - 16, at)
    }
  }
})()

/** The default `Random` service: with it, a request draws from `Math.random` without an effect per draw. */
const liveRandom = Context.get(DefaultServices.liveServices, Random.Random)

/** What one operation routes: its name, its prompt and what it asks of the completion. */
interface Operation {
  readonly name: Decision["operation"]
  readonly stream: boolean
  readonly model: string
  readonly user: string | undefined
  readonly prompt: Prompt
  readonly requestedOutputTokens: number | undefined
  /** The capabilities it needs of an upstream, when it needs any. */
  readonly needs: ReadonlyArray<string> | undefined
}

/** The stages and services of one router, passed explicitly to the functions that route. */
interface Pipeline {
  readonly matcher: Context.Tag.Service<Matcher>
  readonly counter: TokenCounterService
  readonly strategy: Context.Tag.Service<Strategy>
  readonly provider: Context.Tag.Service<Provider>
  readonly store: Context.Tag.Service<StateStore>
  readonly attempt: AttemptStage.Service
  readonly queue: QueueStage.Service
  readonly retry: RetryStage.Service
  /** A pool and its fallbacks, in order, built once per pool (cycles are rejected when the config loads). */
  readonly chains: Map<string, ReadonlyArray<Pool>>
  /** Requests in flight, and who waits for there to be none (see `Service.idle`). */
  readonly load: Load
}

/** Counts the requests in flight (no Effect, no allocation per request) and wakes who waits for none. */
class Load {
  count = 0
  private waiting: Array<() => void> | undefined = undefined
  /** Counts a request that started; returns what ends it, for `Request.onEnd`. */
  readonly started = (): (() => void) => {
    this.count++
    return this.ended
  }
  private readonly ended = (): void => {
    if (--this.count > 0 || this.waiting === undefined) return
    const waiting = this.waiting
    this.waiting = undefined
    for (const wake of waiting) wake()
  }
  readonly idle: Effect.Effect<void> = Effect.async<void>((resume) => {
    if (this.count === 0) return resume(Effect.void)
    const wake = () => resume(Effect.void)
    ;(this.waiting ??= []).push(wake)
    return Effect.sync(() => {
      this.waiting = this.waiting?.filter((w) => w !== wake)
    })
  })
}

/** Builds the router from its stages. */
export const make: Effect.Effect<Service, never, Requirements> = Effect.gen(function* () {
  const matcher = yield* Matcher
  const guards = yield* Guards
  const strategy = yield* Strategy
  const provider = yield* Provider
  const store = yield* StateStore
  const select = SelectStage.make(guards, strategy, store.local)
  const attempt = AttemptStage.make(guards, provider, store.local, strategy.live !== false)
  const queue = QueueStage.make(guards, select.soonestFree)
  const p: Pipeline = {
    matcher,
    counter: yield* TokenCounter,
    strategy,
    provider,
    store,
    attempt,
    queue,
    retry: RetryStage.make(guards, select, attempt, queue, HedgeStage.make(select, attempt, store.local)),
    chains: new Map(),
    load: new Load()
  }
  // Only a config with a pool that resumes streams pays for the check.
  const resumes = matcher.models.some(({ pool }) => matcher.pool(pool)?.resume === true)
  const models: ReadonlyArray<Model> = matcher.models.map(({ id, pool }) => ({
    id,
    object: "model",
    created: 0,
    owned_by: `sluice:${pool}`
  }))
  return Router.of({
    chat: (chat, options) =>
      whole(
        p,
        CHAT,
        chatOperation(p, chat, false),
        options,
        (upstream, model, traced, maxTokens) =>
          provider.chat(upstream, { request: chat, model, body: options?.body, traced, defaultMaxTokens: maxTokens }),
        completionUsage
      ),
    chatStream: resumes
      ? (chat, options) => resumingStream(p, chat, options)
      : (chat, options) => chatStream(p, chat, options),
    forward: (forwarded, options) =>
      whole(
        p,
        { "gen_ai.operation.name": forwarded.endpoint },
        forwardOperation(p, forwarded, false),
        options,
        Forwarding.call(provider, forwarded),
        Forwarding.usageOf
      ),
    forwardStream: (forwarded, options) => {
      let native = false
      const start = Forwarding.start(provider, forwarded, (own) => (native = own))
      return Effect.map(
        chatStream(p, Forwarding.chatOf(forwarded), options, forwardOperation(p, forwarded, true), start),
        (stream): ForwardedStream => ({ stream, native })
      )
    },
    embeddings: (body, options) =>
      whole(
        p,
        EMBEDDINGS,
        embeddingsOperation(body),
        options,
        (upstream, model, traced) =>
          provider.embeddings(upstream, { request: body, model, body: options?.body, traced }),
        embeddingsUsage
      ),
    models: Effect.succeed(models),
    model: (id) => {
      const match = matcher.find(id)
      return match instanceof ModelNotFound
        ? undefined
        : (models.find((m) => m.id === id) ?? { id, object: "model", created: 0, owned_by: `sluice:${match.pool.id}` })
    },
    countTokens: (request) => countTokens(p, request),
    queueDepth: queue.depth,
    inFlight: () => p.load.count,
    idle: p.load.idle,
    latency: (upstreamId) => {
      const answer = LatencyAverage.read(store.local, "answer", upstreamId)
      const firstContent = LatencyAverage.read(store.local, "first-content", upstreamId)
      return {
        ...(answer === undefined ? {} : { answer }),
        ...(firstContent === undefined ? {} : { firstContent })
      }
    },
    live: liveOf(store.local, strategy.live !== false)
  })
})

/** {@link Service.live} over the state in `local`; `counted` when the strategy reads the load. */
const liveOf = (local: StateStore["Type"]["local"], counted: boolean) => {
  const reader = Live.make(local)
  return (upstream: Upstream, now: number): LiveStatus => {
    reader.now = now
    return { ...reader.candidate(upstream), counted }
  }
}

/** {@link Service.countTokens}: by the rules of the first enabled upstream of the model's pool. */
const countTokens = (p: Pipeline, request: ChatCompletionRequest): Effect.Effect<Count, ModelNotFound> => {
  const match = p.matcher.find(request.model)
  if (match instanceof ModelNotFound) return Effect.fail(match)
  const upstream = match.pool.upstreams.find((u) => u.enabled) ?? match.pool.upstreams[0]
  const model = upstream?.model ?? match.model
  return upstream?.tokens === undefined
    ? p.counter.count(request, model)
    : Effect.succeed(estimateAs(request, model, upstream.tokens))
}

/** The pool and its fallbacks, in order. */
const chainOf = (p: Pipeline, pool: Pool): ReadonlyArray<Pool> => {
  let chain = p.chains.get(pool.id)
  if (chain === undefined) {
    const pools: Array<Pool> = []
    for (let next: Pool | undefined = pool; next !== undefined && !pools.includes(next);) {
      pools.push(next)
      next = next.fallback === undefined ? undefined : p.matcher.pool(next.fallback)
    }
    p.chains.set(pool.id, (chain = pools))
  }
  return chain
}

/**
 * Starts a request: the match, the estimate and the decision under construction — synchronously —
 * or the `ModelNotFound` error.
 */
const start = (
  p: Pipeline,
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  operation: Operation,
  options: RouteOptions | undefined,
  span: Tracer.Span | undefined
): Request | ModelNotFound => {
  // The fiber's own cache of its default services: no fiber ref lookup.
  const services = fiber.currentDefaultServices
  const clock = Context.get(services, Clock.Clock)
  const requestId = options?.requestId ?? newRequestId()
  // Before matching, so that a request for an unknown model is traced with its id too.
  if (span !== undefined) span.attribute("sluice.request_id", requestId)
  const match = p.matcher.find(operation.model)
  if (match instanceof ModelNotFound) return match
  const pool = match.pool
  if (span !== undefined) {
    span.attribute("gen_ai.request.model", operation.model)
    span.attribute("sluice.pool", pool.id)
  }
  // The fast estimate, until a limit comes near enough that only an exact count will do.
  const count = operation.prompt.estimate(match.model)
  const random = Context.get(services, Random.Random)
  const decision = new Builder(
    requestId,
    operation.name,
    operation.stream,
    operation.model,
    pool.id,
    nameOf(p.strategy, pool),
    count.tokens,
    count.exact,
    clock.unsafeCurrentTimeMillis()
  )
  const request = new Request(
    clock,
    span,
    match,
    chainOf(p, pool),
    options,
    operation.user,
    operation.stream,
    operation.requestedOutputTokens,
    operation.prompt,
    decision,
    random === liveRandom ? Math.random : () => Effect.runSync(random.next)
  )
  request.needs = operation.needs
  if (options?.avoid !== undefined) request.failed = [...options.avoid]
  return request
}

/** Records a decision on its span. */
const annotate = (span: Tracer.Span | undefined, decision: Decision): void => {
  if (span === undefined) return
  const attributes = spanAttributes(decision)
  for (const key in attributes) span.attribute(key, attributes[key])
}

/**
 * Routes one request through the stages: `once` runs an admitted attempt, `done` makes the result
 * of its value. Fails with the error carrying the decision.
 */
const route = <A, B>(
  p: Pipeline,
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
  operation: Operation,
  options: RouteOptions | undefined,
  span: Tracer.Span | undefined,
  once: (request: Request, admitted: AttemptStage.Admitted) => Effect.Effect<A, UpstreamError>,
  done: (value: A, request: Request) => B
): Effect.Effect<B, RouterError> => {
  const request = start(p, fiber, operation, options, span)
  if (request instanceof ModelNotFound) return Effect.fail(request)
  // In flight from here until `request.end()`: the handlers below, or a stream's release.
  request.onEnd = p.load.started()
  // One uninterruptible region for the whole route, interruptible only where it waits (see
  // `Request.restore`): these handlers run however the route ends, and no attempt needs a mask of its own.
  return Effect.uninterruptibleMask((restore) => {
    request.restore = restore
    return routed(p, request, span, once, done)
  })
}

/** The route's stages and how it ends, in its uninterruptible region. */
const routed = <A, B>(
  p: Pipeline,
  request: Request,
  span: Tracer.Span | undefined,
  once: (request: Request, admitted: AttemptStage.Admitted) => Effect.Effect<A, UpstreamError>,
  done: (value: A, request: Request) => B
): Effect.Effect<B, RouterError> =>
  Effect.matchCauseEffect(p.retry.run(request, once), {
    onSuccess: (value) => {
      // A stream is in flight until its release.
      if (!request.stream) request.end()
      if (request.ticket !== undefined) return Effect.as(p.queue.leave(request), done(value, request))
      return Effect.succeed(done(value, request))
    },
    onFailure: (cause) => {
      request.end()
      const now = request.clock.unsafeCurrentTimeMillis()
      const error = Option.getOrUndefined(Cause.failureOption(cause))
      const interrupted = error === undefined && Cause.isInterruptedOnly(cause)
      const decision = request.decision.end(
        now,
        interrupted ? "interrupted" : "error",
        error !== undefined
          ? `${error._tag}: ${error.message}`
          : interrupted
            ? undefined
            : `Defect: ${Cause.pretty(cause)}`
      )
      annotate(span, decision)
      if (interrupted) request.options?.onInterrupted?.(decision)
      const left = p.queue.leave(request)
      return error === undefined
        ? Effect.zipRight(left, Effect.failCause(cause))
        : Effect.zipRight(left, Effect.fail(withDecision(error, decision)))
    }
  })

/** Runs `body` in a `sluice.route` span when spans are exported (see `Tracing`), else without one. */
const traced = <A, E>(
  attributes: Record<string, unknown>,
  body: (fiber: Fiber.RuntimeFiber<unknown, unknown>, span: Tracer.Span | undefined) => Effect.Effect<A, E>
): Effect.Effect<A, E> =>
  Effect.withFiberRuntime((fiber) =>
    Tracing.exportedOn(fiber)
      ? Effect.useSpan("sluice.route", { attributes, captureStackTrace: false }, (span) =>
          Effect.withParentSpan(body(fiber, span), span)
        )
      : body(fiber, undefined)
  )

/** A whole answer's routed result, its decision ended and recorded. */
const finished = <A>(answer: Answer<A>, request: Request): Routed<A> => {
  const decision = request.decision.end(request.clock.unsafeCurrentTimeMillis(), "success", undefined)
  annotate(request.span, decision)
  return { response: answer.value, decision, text: answer.text }
}

const chatOperation = (p: Pipeline, chat: ChatCompletionRequest, stream: boolean): Operation => ({
  name: "chat",
  stream,
  model: chat.model,
  user: chat.user,
  prompt: new ChatPrompt(p.counter, chat),
  requestedOutputTokens: requestedMaxTokens(chat),
  needs: needsOf(chat)
})

const forwardOperation = (p: Pipeline, forwarded: Forwarding.Forwarded, stream: boolean): Operation => {
  const chat = forwarded.chat
  const tokens = chat === undefined ? Forwarding.estimateBody(forwarded) : 0
  return {
    name: forwarded.endpoint,
    stream,
    model: forwarded.body.model,
    user: typeof forwarded.body["user"] === "string" ? forwarded.body["user"] : undefined,
    prompt:
      chat !== undefined
        ? new ChatPrompt(p.counter, chat)
        : { estimate: () => ({ tokens, exact: false }), exact: () => Effect.succeed({ tokens, exact: false }) },
    requestedOutputTokens: Forwarding.requestedOutputTokens(forwarded),
    needs: Forwarding.needs(forwarded)
  }
}

const embeddingsOperation = (body: EmbeddingsRequest): Operation => {
  const tokens = embeddingTokens(body)
  return {
    name: "embeddings",
    stream: false,
    model: body.model,
    user: body.user,
    prompt: {
      estimate: () => ({ tokens, exact: false }),
      exact: () => Effect.succeed({ tokens, exact: false })
    },
    requestedOutputTokens: 0,
    // A provider that cannot shorten its vectors would answer at its own size: never sent there.
    needs: body.dimensions === undefined ? NEEDS_EMBEDDINGS : NEEDS_EMBEDDINGS_DIMENSIONS
  }
}

/** Routes an operation that answers whole: `call` asks the provider, `usageOf` reads the answer's usage. */
const whole = <A>(
  p: Pipeline,
  attributes: Record<string, unknown>,
  operation: Operation,
  options: RouteOptions | undefined,
  call: AttemptStage.Call<A>,
  usageOf: (value: A) => Usage | undefined
): Effect.Effect<Routed<A>, RouterError> =>
  traced(attributes, (fiber, span) =>
    route(
      p,
      fiber,
      operation,
      options,
      span,
      (request, admitted) => p.attempt.call(request, admitted, call, usageOf),
      finished
    )
  )

/**
 * Routes a streaming chat completion; see {@link Service.chatStream}. A forwarded stream passes its
 * own operation and how each attempt opens its stream (`start`).
 */
const chatStream = (
  p: Pipeline,
  chat: ChatCompletionRequest,
  options: RouteOptions | undefined,
  operation?: Operation,
  start?: Streaming.Start
): Effect.Effect<Streaming.RoutedStream, RouterError> =>
  Effect.withFiberRuntime((fiber) => {
    // The request, once an attempt was admitted: a stream it started but did not hand back (the
    // request was interrupted just after the first event) is released here, or it would stay open.
    let routed: Request | undefined
    const open = (span: Tracer.Span | undefined) =>
      Effect.onExit(
        route(
          p,
          fiber,
          operation ?? chatOperation(p, chat, true),
          options,
          span,
          (request, admitted) => {
            routed = request
            return Streaming.open(p.attempt, p.provider, request, admitted, chat, span, start)
          },
          (stream) => stream
        ),
        (exit) => (exit._tag === "Success" || routed?.unclaimed === undefined ? Effect.void : routed.unclaimed)
      )
    if (!Tracing.exportedOn(fiber)) return open(undefined)
    // The route span outlives the effect that opens the stream: it ends here only if opening fails
    // or is interrupted; once the stream runs, its release ends it with the final decision.
    return Effect.flatMap(
      Effect.makeSpan("sluice.route", {
        attributes: { "gen_ai.operation.name": operation?.name ?? "chat", "sluice.stream": true },
        captureStackTrace: false
      }),
      (span) =>
        Effect.withParentSpan(open(span), span).pipe(
          Effect.onExit((exit) =>
            // A started stream's release has ended the span already.
            exit._tag === "Success" || routed?.unclaimed !== undefined
              ? Effect.void
              : Effect.clockWith((clock) => Effect.sync(() => span.end(clock.unsafeCurrentTimeNanos(), exit)))
          )
        )
    )
  })

/**
 * A chat stream whose pool resumes streams (`stream.resume`): read through `Resume`, which routes a
 * continuation — needing `prefill` of its upstream — when the upstream fails after content.
 */
const resumingStream = (
  p: Pipeline,
  chat: ChatCompletionRequest,
  options: RouteOptions | undefined
): Effect.Effect<Streaming.RoutedStream, RouterError> =>
  Effect.flatMap(chatStream(p, chat, options), (routed) =>
    p.matcher.pool(routed.pool)?.resume !== true || !Resume.resumable(chat)
      ? Effect.succeed(routed)
      : Effect.map(Effect.runtime<never>(), (runtime) =>
          Resume.resuming(routed, chat, options ?? {}, {
            open: (continued, continuedOptions) =>
              chatStream(p, continued, continuedOptions, {
                ...chatOperation(p, continued, true),
                needs: [...(needsOf(continued) ?? []), "prefill"]
              }),
            fork: Runtime.runFork(runtime)
          })
        )
  )

/** A chat request's prompt, counted by the pipeline's counter (a class: no closures per request). */
class ChatPrompt implements Prompt {
  private prefix: number | undefined | null = null
  constructor(
    private readonly counter: TokenCounterService,
    private readonly chat: ChatCompletionRequest
  ) {}
  estimate(model: string) {
    return this.counter.estimate(this.chat, model)
  }
  exact(model: string) {
    return this.counter.count(this.chat, model)
  }
  prefixHash() {
    if (this.prefix === null) this.prefix = prefixHashOf(this.chat)
    return this.prefix
  }
  as(model: string, rules: Rules) {
    return estimateAs(this.chat, model, rules)
  }
}

const CHAT = { "gen_ai.operation.name": "chat" }
const EMBEDDINGS = { "gen_ai.operation.name": "embeddings" }

const completionUsage = (completion: ChatCompletion) => completion.usage ?? undefined

// Embeddings have no completion: no output count (the decision and `gen_ai.usage.output_tokens` leave it out).
const embeddingsUsage = (response: EmbeddingsResponse) =>
  response.usage === undefined
    ? undefined
    : { prompt_tokens: response.usage.prompt_tokens, total_tokens: response.usage.prompt_tokens }

/** The estimated tokens of an embeddings request's input. */
const embeddingTokens = (request: EmbeddingsRequest): number => {
  const inputs = typeof request.input === "string" ? [request.input] : request.input
  let tokens = 0
  for (const item of inputs)
    tokens += typeof item === "string" ? estimateText(item) : typeof item === "number" ? 1 : item.length
  return tokens
}

/** The router layer: provide a Matcher, TokenCounter, Strategy, Provider, Guards and StateStore. */
export const layer: Layer.Layer<Router, never, Requirements> = Layer.effect(Router, make)

/** Collects a routed stream's events into their chunk texts (handy in tests and scripts). */
export const collect = (stream: Streaming.RoutedStream): Effect.Effect<ReadonlyArray<string>, UpstreamError> =>
  Effect.map(Stream.runCollect(stream.events), (chunk) => Chunk.toReadonlyArray(chunk).map((e) => e.data))
