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
 *    request stays counted, as upstreams count what they received), once the time to first token it
 *    would have taken has passed (step 5's draw, without a cache hit): an upstream fails after
 *    working on the request, not before.
 * 4. looks its prompt cache up (`cache`): the prefix of a chat request — its tools and every message
 *    but the last — hits when the same prefix was seen within the cache's TTL.
 * 5. sleeps its time to first token (`Effect.sleep` on the `Clock`): `latencyMs`, plus a uniform
 *    draw of up to `jitterMs`, times `tail.multiplier` with probability `tail.probability`, times
 *    `degrade.latencyMultiplier` once degraded, times the cache's `latencyFactor` on a hit. Then
 *    `perTokenMs` per completion token after the first. It answers `completionTokens` words capped by
 *    `max_completion_tokens` / `max_tokens`, with usage (`prompt_tokens_details.cached_tokens` on a
 *    cache hit), under the upstream's model name (`Provider.Call.model`). A stream sends a role chunk
 *    and its first content chunk after the time to first token, then the rest of its content chunks
 *    (4 in all), a finish chunk and, with `stream_options.include_usage`, a usage-only chunk once
 *    generated.
 *
 * `degrade` changes an upstream from `atMs` after the lab was made: its latency multiplied, its
 * failure rate replaced. `pricing` prices what it served (cached input at the cache's `priceFactor`),
 * and the prompt of a stream abandoned before its end.
 *
 * {@link simulate} runs a program in the lab's virtual time, where hours of traffic take seconds.
 *
 * Prompt estimate (as the HTTP simulator's): `ceil(characters of message text / 4) + 3 per message
 * + 85 per image part`; embeddings: `ceil(characters / 4)` per string, the length of a token array.
 */
import type { Topology } from "@sluice/core"
import { Errors, Provider, StreamEvent, Wire } from "@sluice/core"
import type { Scope } from "effect"
import { Clock, Effect, Option, Random } from "effect"
import type { CacheModel, DegradeModel, PriceModel } from "./internal/labModel.js"
import { costOf, failureRateAt, firstTokenMs, generationMs, prefixOf, PromptCache } from "./internal/labModel.js"
import { Completions, embed, estimatePromptTokens, estimateTextTokens, toBase64 } from "./internal/simulatorContent.js"
import { SlidingWindow } from "./internal/simulatorRateLimit.js"

export type { CacheModel, DegradeModel, PriceModel } from "./internal/labModel.js"
export { simulate, VirtualClock } from "./internal/labClock.js"

/** How one simulated upstream behaves. Every field is optional. */
export interface UpstreamModel {
  /** Requests per minute over a sliding 60 s window; over it: 429. Default: no limit. */
  readonly rpm?: number
  /** Tokens per minute over a sliding 60 s window (prompt estimate + completion); over it: 429. Default: no limit. */
  readonly tpm?: number
  /** Milliseconds to the first content of an answer (the first event of a stream), before jitter. Default 0. */
  readonly latencyMs?: number
  /** Up to this many milliseconds more, drawn uniformly per request. Default 0. */
  readonly jitterMs?: number
  /** A long tail: with `probability` (0..1), a request's time to first token is `multiplier` times longer. */
  readonly tail?: { readonly probability: number; readonly multiplier: number }
  /** Milliseconds per completion token after the first content. Default 0. */
  readonly perTokenMs?: number
  /** Completion tokens per answer, capped by the request's `max_tokens`. Default 16. */
  readonly completionTokens?: number
  /** Probability (0..1) of answering 500. Default 0. */
  readonly failureRate?: number
  /** From a moment on, slower or failing more. Default: never. */
  readonly degrade?: DegradeModel
  /** A prompt cache. Default: none. */
  readonly cache?: CacheModel
  /** Prices of what it serves (for `Stats.costUsd`). Default: free. */
  readonly pricing?: PriceModel
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
  /** Chat requests with a prefix long enough to cache, answered past the failure die (0 without `cache`). */
  readonly cacheLookups: number
  /** Of those, the ones whose prefix was cached. */
  readonly cacheHits: number
  /** Prompt tokens served from the cache. */
  readonly cachedTokens: number
  /** What the requests served cost, and the prompts of streams abandoned, in US dollars (0 without `pricing`). */
  readonly costUsd: number
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
  readonly cache: PromptCache | undefined
  served: number
  rateLimited: number
  failed: number
  tokensServed: number
  cacheLookups: number
  cacheHits: number
  cachedTokens: number
  costUsd: number
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
  /** Epoch milliseconds when the lab was made: `degrade.atMs` counts from here. */
  readonly startedAt: number
  /** The number of the next answer's id (`chatcmpl-lab-<n>`), shared by chat and streamed chat. */
  sequence: number
}

/** A modelled upstream with empty windows and nothing counted yet. */
const modelled = (id: string, model: UpstreamModel): Simulated => ({
  id,
  model,
  requests: new SlidingWindow(WINDOW_MS),
  tokens: new SlidingWindow(WINDOW_MS),
  completions: new Completions(id),
  cache: model.cache === undefined ? undefined : new PromptCache(model.cache),
  served: 0,
  rateLimited: 0,
  failed: 0,
  tokensServed: 0,
  cacheLookups: 0,
  cacheHits: 0,
  cachedTokens: 0,
  costUsd: 0
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
const receive = (bench: Bench, sim: Simulated, tokens: number): Effect.Effect<Received, Errors.UpstreamError> =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const { rpm, tpm } = sim.model
    const failureRate = failureRateAt(sim.model, now - bench.startedAt)
    const requestWait = rpm === undefined ? 0 : sim.requests.waitMs(now, 1, rpm)
    const tokenWait = tpm === undefined ? 0 : sim.tokens.waitMs(now, tokens, tpm)
    if (requestWait > 0 || tokenWait > 0) {
      return yield* rateLimitedError(sim, now, tokens, requestWait, tokenWait)
    }
    sim.requests.add(now, 1)
    sim.tokens.add(now, tokens)
    const rateLimits = rateLimitsOf(sim, now)
    if (failureRate > 0 && (yield* Random.next) < failureRate) {
      sim.failed++
      yield* sleep((yield* timing(bench, sim, now, false, 0)).first)
      return yield* Errors.Failure.http(sim.id, 500, "HTTP 500: simulated failure", { rateLimits })
    }
    return { now, rateLimits }
  })

/** A sleep on the `Clock`; nothing when it is 0. */
const sleep = (ms: number): Effect.Effect<void> => (ms > 0 ? Effect.sleep(ms) : Effect.void)

/** Step 4: the cache lookup of a chat request served at `now`; the prompt tokens it hit (0 on a miss). */
const lookUp = (sim: Simulated, request: Wire.ChatCompletionRequest, now: number): number => {
  if (sim.cache === undefined) return 0
  const prefix = prefixOf(sim.model.cache!, request)
  if (prefix === undefined) return 0
  sim.cacheLookups++
  if (!sim.cache.use(prefix, now)) return 0
  sim.cacheHits++
  return prefix.tokens
}

/** Step 5's waits: to the first content, then to the end, for a request received at `now`. */
const timing = (bench: Bench, sim: Simulated, now: number, hit: boolean, completion: number) =>
  Effect.gen(function* () {
    const { jitterMs, tail } = sim.model
    const jitter = jitterMs === undefined || jitterMs === 0 ? 0 : yield* Random.next
    const tailDraw = tail === undefined ? 1 : yield* Random.next
    const elapsed = now - bench.startedAt
    return {
      first: firstTokenMs(sim.model, elapsed, hit, jitter, tailDraw),
      rest: generationMs(sim.model, elapsed, completion)
    }
  })

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
    usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion } as Wire.Usage
  }
}

type Plan = ReturnType<typeof plan>

/** The plan of a request that hit `cached` prompt tokens: its usage says so. */
const withCached = (p: Plan, cached: number): Plan =>
  cached === 0 ? p : { ...p, usage: { ...p.usage, prompt_tokens_details: { cached_tokens: cached } } }

/** Counts a request served with its tokens, and what it cost. */
const countServed = (sim: Simulated, tokens: number, prompt = tokens, cached = 0, completion = 0): void => {
  sim.served++
  sim.tokensServed += tokens
  sim.cachedTokens += cached
  sim.costUsd += costOf(sim.model.pricing, sim.model.cache, prompt, cached, completion)
}

/** Counts a chat answer served. */
const countChat = (sim: Simulated, p: Plan, cached: number): void =>
  countServed(sim, p.prompt + p.completion, p.prompt, cached, p.completion)

/** The lab's `chat`: a whole completion after the latency. */
const chatOf =
  (bench: Bench): Provider.Service["chat"] =>
  (upstream, { model, request }) =>
    Effect.gen(function* () {
      const sim = yield* lookup(bench, upstream)
      const planned = plan(sim, request)
      const { now, rateLimits } = yield* receive(bench, sim, planned.prompt + planned.completion)
      const cached = lookUp(sim, request, now)
      const p = withCached(planned, cached)
      const { first, rest } = yield* timing(bench, sim, now, cached > 0, p.completion)
      yield* sleep(first + rest)
      countChat(sim, p, cached)
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
const streamEventsOf = (head: string, p: Plan, includeUsage: boolean): Array<StreamEvent.StreamEvent> => {
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

/**
 * A source that delivers each batch of events after its wait (the waits add up), then ends: one
 * fiber of the caller's scope times it, however slowly it is read.
 */
const timed = (
  batches: ReadonlyArray<ReadonlyArray<StreamEvent.StreamEvent>>,
  waits: ReadonlyArray<number>
): Effect.Effect<StreamEvent.Source, never, Scope.Scope> =>
  Effect.gen(function* () {
    let buffered: Array<StreamEvent.StreamEvent> = []
    let ended = false
    let ready: (() => void) | undefined
    const deliver = (i: number) =>
      Effect.sync(() => {
        buffered.push(...batches[i]!)
        ended = i === batches.length - 1
        const wake = ready
        ready = undefined
        wake?.()
      })
    yield* Effect.forkScoped(Effect.forEach(batches, (_, i) => Effect.zipRight(sleep(waits[i] ?? 0), deliver(i))))
    return {
      poll: (): StreamEvent.Polled => {
        if (buffered.length === 0) return ended ? Option.none() : undefined
        const out = buffered
        buffered = []
        return out
      },
      onReady: (r) => {
        ready = r
      }
    }
  })

/** The lab's `chatStream`: the latency before the first event; served once read to its end. */
const chatStreamOf =
  (bench: Bench): Provider.Service["chatStream"] =>
  (upstream, { model, request }) =>
    Effect.gen(function* () {
      const sim = yield* lookup(bench, upstream)
      const planned = plan(sim, request)
      const { now, rateLimits } = yield* receive(bench, sim, planned.prompt + planned.completion)
      const cached = lookUp(sim, request, now)
      const p = withCached(planned, cached)
      const { first, rest } = yield* timing(bench, sim, now, cached > 0, p.completion)
      const head = `{"id":"chatcmpl-lab-${bench.sequence++}","object":"chat.completion.chunk","created":${Math.floor(now / 1000)},"model":${JSON.stringify(model)}`
      const events = streamEventsOf(head, p, request.stream_options?.include_usage === true)
      // The role chunk and the first content chunk after the time to first token, the rest once
      // generated; timed by a fiber of the caller's scope, so time passes whether or not anyone reads.
      const source = yield* timed([events.slice(0, 2), events.slice(2)], [first, rest])
      let ended = false
      const poll = (): StreamEvent.Polled => {
        const polled = source.poll()
        // Served once the reader got the clean end, as a client reads a stream to its end.
        if (!ended && polled !== undefined && !StreamEvent.isEvents(polled) && Option.isNone(polled)) {
          ended = true
          countChat(sim, p, cached)
        }
        return polled
      }
      // A stream abandoned before its end (a hedge's loser, a client gone) still cost its prompt.
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          if (!ended) sim.costUsd += costOf(sim.model.pricing, sim.model.cache, p.prompt, cached, 0)
        })
      )
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
      const { now, rateLimits } = yield* receive(bench, sim, tokens)
      const { first } = yield* timing(bench, sim, now, false, 0)
      yield* sleep(first)
      countServed(sim, tokens)
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
    ? NOTHING
    : {
        served: sim.served,
        rateLimited: sim.rateLimited,
        failed: sim.failed,
        tokens: sim.tokensServed,
        cacheLookups: sim.cacheLookups,
        cacheHits: sim.cacheHits,
        cachedTokens: sim.cachedTokens,
        costUsd: sim.costUsd
      }
}

const NOTHING: Stats = {
  served: 0,
  rateLimited: 0,
  failed: 0,
  tokens: 0,
  cacheLookups: 0,
  cacheHits: 0,
  cachedTokens: 0,
  costUsd: 0
}

/** Makes simulated upstreams, keyed by upstream id; `degrade.atMs` counts from now on the `Clock`. */
export const make = (models: Readonly<Record<string, UpstreamModel>>): Effect.Effect<Lab> =>
  Effect.map(Clock.currentTimeMillis, (startedAt) => {
    const sims = new Map<string, Simulated>()
    for (const [id, model] of Object.entries(models)) sims.set(id, modelled(id, model))
    const bench: Bench = { sims, startedAt, sequence: 0 }
    return {
      provider: Provider.Provider.of({
        chat: chatOf(bench),
        chatStream: chatStreamOf(bench),
        embeddings: embeddingsOf(bench)
      }),
      stats: (upstreamId) => statsOf(bench, upstreamId)
    }
  })
