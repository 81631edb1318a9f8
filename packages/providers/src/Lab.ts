/**
 * Lab: simulated upstreams that live in the process and keep time with Effect's `Clock`, for
 * simulations: under `TestClock` an hour of traffic against rate-limited upstreams runs in seconds.
 * No HTTP, no sockets; `provider` is a `Provider.Service` that answers for every upstream whose id
 * the lab models (whatever its `provider` kind), so a pipeline uses it through
 * `Layer.succeed(Provider.Provider, lab.provider)`.
 *
 * Each modelled upstream, per request (chat, streamed chat or embeddings), in this order:
 * 1. counts the request against its own SLIDING 60 s windows: `rpm` requests and `tpm` tokens (the
 *    prompt estimate plus the completion tokens it will answer with; embeddings: the input estimate).
 *    Over either: a 429 `UpstreamError` (`retryable`, `retryAfterMs` = when this request would fit),
 *    not counted. A request larger than `tpm` gets a 429 that is not retryable and names no wait.
 * 2. reports rate limits like a real upstream's `x-ratelimit-*` headers — in the answer
 *    (`Provider.Answer.rateLimits`, `Provider.Opened.rateLimits`) and on the 429 and the 500 too
 *    (`UpstreamError.rateLimits`): limit, remaining and reset, where reset is the time until the
 *    window next frees capacity; a 429 that names a wait adds it as `retryAfterMs`.
 * 3. fails with a 500 with probability `failureRate` (dice from Effect's `Random`, so seedable; the
 *    request stays counted, as upstreams count what they received).
 * 4. sleeps `latencyMs` (`Effect.sleep`: `TestClock` drives it), then answers: `completionTokens`
 *    words capped by `max_completion_tokens` / `max_tokens`, with usage, under the upstream's model
 *    name (`Provider.Call.model`). A stream sleeps before its first event and then sends a role
 *    chunk, up to 4 content chunks, a finish chunk and, with `stream_options.include_usage`, a
 *    usage-only chunk.
 *
 * Prompt estimate (as the HTTP simulator's): `ceil(characters of message text / 4) + 3 per message
 * + 85 per image part`; embeddings: `ceil(characters / 4)` per string, the length of a token array.
 */
import type { Topology } from "@sluice/core"
import { Errors, Provider, StreamEvent, Wire } from "@sluice/core"
import { Clock, Effect, Option, Random, Stream } from "effect"
import { Completions, embed, estimatePromptTokens, estimateTextTokens, toBase64 } from "./internal/simulatorContent.js"
import { SlidingWindow } from "./internal/simulatorRateLimit.js"

/** How one simulated upstream behaves. Every field is optional. */
export interface UpstreamModel {
  /** Requests per minute over a sliding 60 s window; over it: 429. Default: no limit. */
  readonly rpm?: number
  /** Tokens per minute over a sliding 60 s window (prompt estimate + completion); over it: 429. Default: no limit. */
  readonly tpm?: number
  /** Milliseconds before an answer (before the first event of a stream). Default 0. */
  readonly latencyMs?: number
  /** Completion tokens per answer, capped by the request's `max_tokens`. Default 16. */
  readonly completionTokens?: number
  /** Probability (0..1) of answering 500. Default 0. */
  readonly failureRate?: number
}

/** What one upstream did since the lab was made. */
export interface Stats {
  /** Requests answered successfully (a stream: once it has been read to the end). */
  readonly served: number
  /** Requests answered 429. */
  readonly rateLimited: number
  /** Requests answered 500 (`failureRate`). */
  readonly failed: number
  /** Tokens (prompt + completion) of the requests served. */
  readonly tokens: number
}

/** A set of simulated upstreams. */
export interface Lab {
  /** Calls the simulated upstreams by `upstream.id`; an id the lab does not model fails (not retryable). */
  readonly provider: Provider.Service
  /** What upstream `upstreamId` did so far (all zeros for an id the lab does not model). */
  readonly stats: (upstreamId: string) => Stats
}

const WINDOW_MS = 60_000
const DEFAULT_COMPLETION_TOKENS = 16
const DEFAULT_DIMENSIONS = 8
const STREAM_CONTENT_CHUNKS = 4

interface Simulated {
  readonly id: string
  readonly model: UpstreamModel
  readonly requests: SlidingWindow
  readonly tokens: SlidingWindow
  readonly completions: Completions
  served: number
  rateLimited: number
  failed: number
  tokensServed: number
}

/** Milliseconds until the window next frees capacity: 0 when it holds nothing. */
const nextFree = (window: SlidingWindow, limit: number, now: number): number => {
  const used = window.used(now)
  if (used === 0) return 0
  return Math.ceil(window.waitMs(now, Math.max(0, limit - used) + 1, limit))
}

/** The rate-limit headers a real upstream would send with an answer at `now`. */
const rateLimitsOf = (sim: Simulated, now: number): Provider.RateLimitInfo | undefined => {
  const { rpm, tpm } = sim.model
  if (rpm === undefined && tpm === undefined) return undefined
  const info: { -readonly [K in keyof Provider.RateLimitInfo]: Provider.RateLimitInfo[K] } = {}
  if (rpm !== undefined) {
    info.limitRequests = rpm
    info.remainingRequests = Math.max(0, rpm - sim.requests.used(now))
    info.resetRequestsMs = nextFree(sim.requests, rpm, now)
  }
  if (tpm !== undefined) {
    info.limitTokens = tpm
    info.remainingTokens = Math.max(0, tpm - sim.tokens.used(now))
    info.resetTokensMs = nextFree(sim.tokens, tpm, now)
  }
  return info
}

/**
 * A call the lab cannot answer at all. Built by hand rather than with `Errors.Failure.protocol`
 * (which is retryable): an upstream the lab does not model is a mistake in the simulation's setup,
 * and retrying it elsewhere would hide that.
 */
const plain = (upstream: string, message: string) =>
  new Errors.UpstreamError({ upstream, kind: "protocol", message, retryable: false })

/** What a received request learned: when it arrived and the rate-limit headers of its answer. */
interface Received {
  readonly now: number
  readonly rateLimits: Provider.RateLimitInfo | undefined
}

/** The upstreams a lab models, by id, and the sequence that numbers its answers. Made once by {@link make}. */
interface Bench {
  readonly sims: ReadonlyMap<string, Simulated>
  /** The number of the next answer's id (`chatcmpl-lab-<n>`), shared by chat and streamed chat. */
  sequence: number
}

/** A modelled upstream with empty windows and nothing counted yet. */
const simulate = (id: string, model: UpstreamModel): Simulated => ({
  id,
  model,
  requests: new SlidingWindow(WINDOW_MS),
  tokens: new SlidingWindow(WINDOW_MS),
  completions: new Completions(id),
  served: 0,
  rateLimited: 0,
  failed: 0,
  tokensServed: 0
})

/** The simulation of `upstream`, or a failure (not retryable) naming the upstreams the lab models. */
const lookup = (bench: Bench, upstream: Topology.Upstream): Effect.Effect<Simulated, Errors.UpstreamError> => {
  const sim = bench.sims.get(upstream.id)
  return sim === undefined
    ? Effect.fail(
        plain(
          upstream.id,
          `the lab models no upstream '${upstream.id}'; it models: ${[...bench.sims.keys()].join(", ")}`
        )
      )
    : Effect.succeed(sim)
}

/**
 * The 429 of a request over `rpm` or `tpm` at `now` (counted as rate-limited): retryable after the
 * wait when the request fits the window at all, otherwise not retryable and naming no wait.
 */
const rateLimitedError = (
  sim: Simulated,
  now: number,
  tokens: number,
  requestWait: number,
  tokenWait: number
): Errors.UpstreamError => {
  const { rpm, tpm } = sim.model
  sim.rateLimited++
  const wait = Math.max(requestWait, tokenWait)
  const fits = Number.isFinite(wait)
  const retryAfterMs = Math.ceil(wait)
  const info = rateLimitsOf(sim, now)
  const what =
    tokenWait >= requestWait
      ? `tokens per minute (limit ${tpm}, used ${sim.tokens.used(now)}, requested ${tokens})`
      : `requests per minute (limit ${rpm})`
  if (fits) {
    return Errors.Failure.http(sim.id, 429, `HTTP 429: rate limit reached for ${what}; retry in ${retryAfterMs}ms`, {
      retryAfterMs,
      rateLimits: { ...info, retryAfterMs }
    })
  }
  // Built by hand: `Errors.Failure.http` makes every 429 retryable, but a request larger than
  // the upstream's whole TPM never fits it, so it names no wait and is not retryable.
  return new Errors.UpstreamError({
    upstream: sim.id,
    kind: "http",
    status: 429,
    message: `HTTP 429: request too large for ${what}`,
    retryable: false,
    ...(info !== undefined ? { rateLimits: info } : {})
  })
}

/** Steps 1-3: counts the request or answers 429, reports the headers, rolls the failure die. */
const receive = (sim: Simulated, tokens: number): Effect.Effect<Received, Errors.UpstreamError> =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const { rpm, tpm, failureRate } = sim.model
    const requestWait = rpm === undefined ? 0 : sim.requests.waitMs(now, 1, rpm)
    const tokenWait = tpm === undefined ? 0 : sim.tokens.waitMs(now, tokens, tpm)
    if (requestWait > 0 || tokenWait > 0) {
      return yield* rateLimitedError(sim, now, tokens, requestWait, tokenWait)
    }
    sim.requests.add(now, 1)
    sim.tokens.add(now, tokens)
    const rateLimits = rateLimitsOf(sim, now)
    if (failureRate !== undefined && failureRate > 0 && (yield* Random.next) < failureRate) {
      sim.failed++
      return yield* Errors.Failure.http(sim.id, 500, "HTTP 500: simulated failure", { rateLimits })
    }
    return { now, rateLimits }
  })

/** Step 4's wait: `latencyMs` on the `Clock`, nothing when it is 0. */
const latency = (sim: Simulated): Effect.Effect<void> => {
  const ms = sim.model.latencyMs ?? 0
  return ms > 0 ? Effect.sleep(ms) : Effect.void
}

/** Prompt and completion of a chat request, and how the completion ends. */
const plan = (sim: Simulated, request: Wire.ChatCompletionRequest) => {
  const configured = sim.model.completionTokens ?? DEFAULT_COMPLETION_TOKENS
  const cap = Wire.requestedMaxTokens(request)
  const completion = cap === undefined ? configured : Math.min(configured, cap)
  const prompt = estimatePromptTokens(request.messages)
  return {
    prompt,
    completion,
    finish: completion < configured ? "length" : "stop",
    content: sim.completions.get(completion, request.response_format?.type === "json_object").content,
    usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
  }
}

/** Counts a request served with its tokens. */
const countServed = (sim: Simulated, tokens: number): void => {
  sim.served++
  sim.tokensServed += tokens
}

const served = (sim: Simulated, tokens: number) => Effect.sync(() => countServed(sim, tokens))

/** The lab's `chat`: a whole completion after the latency. */
const chatOf =
  (bench: Bench): Provider.Service["chat"] =>
  (upstream, { model, request }) =>
    Effect.gen(function* () {
      const sim = yield* lookup(bench, upstream)
      const p = plan(sim, request)
      const { now, rateLimits } = yield* receive(sim, p.prompt + p.completion)
      yield* latency(sim)
      yield* served(sim, p.usage.total_tokens)
      const value = {
        id: `chatcmpl-lab-${bench.sequence++}`,
        object: "chat.completion",
        created: Math.floor(now / 1000),
        model,
        choices: [{ index: 0, message: { role: "assistant", content: p.content }, finish_reason: p.finish }],
        usage: p.usage
      } satisfies Wire.ChatCompletion
      return { value, rateLimits }
    })

/**
 * The events of a streamed answer, `head` being the chunk's fields before `choices`: a role chunk,
 * up to {@link STREAM_CONTENT_CHUNKS} content chunks, a finish chunk and, when asked for, usage.
 */
const streamEventsOf = (
  head: string,
  p: ReturnType<typeof plan>,
  includeUsage: boolean
): Array<StreamEvent.StreamEvent> => {
  const event = (delta: object, finish: string | null): StreamEvent.StreamEvent => ({
    data: `${head},"choices":[{"index":0,"delta":${JSON.stringify(delta)},"finish_reason":${JSON.stringify(finish)}}]}`
  })
  const events: Array<StreamEvent.StreamEvent> = [event({ role: "assistant", content: "" }, null)]
  const size = Math.ceil(p.content.length / STREAM_CONTENT_CHUNKS)
  for (let at = 0; at < p.content.length; at += size) {
    events.push(event({ content: p.content.slice(at, at + size) }, null))
  }
  events.push(event({}, p.finish))
  if (includeUsage) {
    events.push({
      data: `${head},"choices":[],"usage":${JSON.stringify(p.usage)}}`,
      usage: p.usage,
      usageOnly: true
    })
  }
  return events
}

/** The lab's `chatStream`: the latency before the first event; served once read to its end. */
const chatStreamOf =
  (bench: Bench): Provider.Service["chatStream"] =>
  (upstream, { model, request }) =>
    Effect.gen(function* () {
      const sim = yield* lookup(bench, upstream)
      const p = plan(sim, request)
      const { now, rateLimits } = yield* receive(sim, p.prompt + p.completion)
      const head = `{"id":"chatcmpl-lab-${bench.sequence++}","object":"chat.completion.chunk","created":${Math.floor(now / 1000)},"model":${JSON.stringify(model)}`
      const events = streamEventsOf(head, p, request.stream_options?.include_usage === true)
      // Read ahead by a fiber of the caller's scope: the latency passes whether or not anyone reads.
      const source = yield* StreamEvent.fromStream(Stream.fromIterable(events).pipe(Stream.onStart(latency(sim))))
      let ended = false
      const poll = (): StreamEvent.Polled => {
        const polled = source.poll()
        // Served once the reader got the clean end, as a client reads a stream to its end.
        if (!ended && polled !== undefined && !StreamEvent.isEvents(polled) && Option.isNone(polled)) {
          ended = true
          countServed(sim, p.usage.total_tokens)
        }
        return polled
      }
      return { events: { poll, onReady: source.onReady }, rateLimits }
    })

/** The lab's `embeddings`: a deterministic vector per input after the latency. */
const embeddingsOf =
  (bench: Bench): Provider.Service["embeddings"] =>
  (upstream, { model, request }) =>
    Effect.gen(function* () {
      const sim = yield* lookup(bench, upstream)
      const inputs: ReadonlyArray<string | ReadonlyArray<number>> =
        typeof request.input === "string"
          ? [request.input]
          : request.input.length > 0 && typeof request.input[0] === "number"
            ? [request.input as ReadonlyArray<number>]
            : (request.input as ReadonlyArray<string | ReadonlyArray<number>>)
      let tokens = 0
      for (const input of inputs) tokens += typeof input === "string" ? estimateTextTokens(input) : input.length
      const { rateLimits } = yield* receive(sim, tokens)
      yield* latency(sim)
      yield* served(sim, tokens)
      const dimensions = request.dimensions ?? DEFAULT_DIMENSIONS
      const value = {
        object: "list",
        data: inputs.map((input, index) => {
          const vector = embed(typeof input === "string" ? input : input.join(","), dimensions)
          return {
            object: "embedding" as const,
            index,
            embedding: request.encoding_format === "base64" ? toBase64(vector) : Array.from(vector)
          }
        }),
        model,
        usage: { prompt_tokens: tokens, total_tokens: tokens }
      } satisfies Wire.EmbeddingsResponse
      return { value, rateLimits }
    })

/** What upstream `upstreamId` did so far (all zeros for an id the lab does not model). */
const statsOf = (bench: Bench, upstreamId: string): Stats => {
  const sim = bench.sims.get(upstreamId)
  return sim === undefined
    ? { served: 0, rateLimited: 0, failed: 0, tokens: 0 }
    : { served: sim.served, rateLimited: sim.rateLimited, failed: sim.failed, tokens: sim.tokensServed }
}

/** Makes simulated upstreams, keyed by upstream id. */
export const make = (models: Readonly<Record<string, UpstreamModel>>): Effect.Effect<Lab> =>
  Effect.sync(() => {
    const sims = new Map<string, Simulated>()
    for (const [id, model] of Object.entries(models)) sims.set(id, simulate(id, model))
    const bench: Bench = { sims, sequence: 0 }
    return {
      provider: Provider.Provider.of({
        chat: chatOf(bench),
        chatStream: chatStreamOf(bench),
        embeddings: embeddingsOf(bench)
      }),
      stats: (upstreamId) => statsOf(bench, upstreamId)
    }
  })
