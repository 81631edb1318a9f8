/**
 * A streamed attempt: open the upstream's stream, wait for its first content event (until then any
 * failure or silence fails over like a non-streaming attempt), then hand the stream to the reader
 * with a stall watchdog, and finish the attempt — releases, decision, spans — when it ends.
 */
import type { Clock, Tracer } from "effect"
import { Cause, Deferred, Duration, Effect, Exit, FiberId, Option, Scope, Stream } from "effect"
import type { Admitted, Service as AttemptStage } from "../Attempt.js"
import { inAttemptSpan } from "../Attempt.js"
import type { Decision } from "../Decision.js"
import { spanAttributes } from "../Decision.js"
import type { RateLimitInfo, UpstreamError } from "../Errors.js"
import { Failure } from "../Errors.js"
import type { Outcome } from "../Guard.js"
import type { Service as ProviderService } from "../Provider.js"
import type { Polled, Source, StreamEvent } from "../StreamEvent.js"
import { isContent, isEvents, take, toStream } from "../StreamEvent.js"
import type { ChatCompletionRequest, Usage } from "../Wire.js"
import { liveClock, within } from "./deadline.js"
import type { Request } from "./request.js"

/**
 * A stream that has started: its first content event has arrived from `upstream`. Read it once,
 * either through `source` (polling, then run `release` once when reading stops) or as `events`
 * (which releases at its end). `decision` completes when the stream has ended.
 */
export interface RoutedStream {
  readonly upstream: string
  readonly requestId: string
  /** The decision's pool (for the answer's headers). */
  readonly pool: string
  /** Attempts made before this stream started, this one included. */
  readonly attempts: number
  /** The events, for a reader that polls (see `StreamEvent.take`). */
  readonly source: Source
  /**
   * Ends the stream for the router: closes the upstream connection, releases the attempt's budget and
   * guards, ends its spans and completes `decision`. Run it exactly once when reading stops — at the
   * end, on failure, or when the reader gives up; later runs do nothing.
   */
  readonly release: Effect.Effect<void>
  /** The events as a `Stream` that releases when it ends (read this or `source`, not both). */
  readonly events: Stream.Stream<StreamEvent, UpstreamError>
  /** The decision, once the stream has ended. */
  readonly decision: Effect.Effect<Decision>
}

/** Opens a stream on an admitted attempt; see the module doc. */
export const open = (
  stage: AttemptStage,
  provider: ProviderService,
  request: Request,
  admitted: Admitted,
  chat: ChatCompletionRequest,
  routeSpan: Tracer.Span | undefined
): Effect.Effect<RoutedStream, UpstreamError> => {
  const upstream = admitted.attempt.upstream
  const clientWantsUsage = chat.stream_options?.include_usage === true
  const interChunk = upstream.stream.interChunkTimeoutMs
  const firstChunk = upstream.stream.firstChunkTimeoutMs ?? upstream.timeoutMs
  const finishWith = (outcome: Outcome) => {
    request.tick()
    stage.finish(request, admitted, outcome)
    return request.span === undefined ? request.flush() : Effect.void
  }
  const latency = () => Math.max(0, request.clock.unsafeCurrentTimeMillis() - admitted.startedAt)
  const opening = Effect.flatMap(Scope.make(), (scope) =>
    Effect.gen(function* () {
      // Usage is always requested upstream so budgets learn the real count; the usage-only chunk is
      // dropped again for clients that did not ask for it.
      const body: ChatCompletionRequest = {
        ...chat,
        model: upstream.model ?? request.match.model,
        stream: true,
        stream_options: { ...chat.stream_options, include_usage: true }
      }
      const opened = yield* provider.chatStream(upstream, {
        request: body,
        model: body.model,
        defaultMaxTokens: admitted.attempt.reservedOutputTokens
      })
      const feed = yield* watch(opened.events, request.clock, interChunk, () =>
        Failure.timeout(upstream.id, `stream stalled: no event within ${interChunk} ms`)
      )
      const head: Array<StreamEvent> = []
      for (;;) {
        const taken = yield* Effect.either(take(feed))
        if (taken._tag === "Left") {
          return yield* Option.isSome(taken.left)
            ? Effect.fail(taken.left.value)
            : Effect.fail(Failure.protocol(upstream.id, "stream ended before its first content event"))
        }
        let content = false
        for (const event of taken.right) {
          head.push(event)
          if (!content && isContent(event)) content = true
        }
        if (content) {
          // Handed over here, before this effect completes: from now on the stream's release (which
          // the router runs if the request is interrupted before the caller holds the stream) ends it.
          stage.served(request, admitted)
          return handOver(request, admitted, {
            head,
            feed,
            rateLimits: opened.rateLimits,
            scope,
            clientWantsUsage,
            finish: stage.finish,
            routeSpan
          })
        }
      }
    }).pipe(
      Scope.extend(scope),
      within(request.clock, firstChunk, () =>
        Failure.timeout(upstream.id, `no first content event within ${firstChunk} ms`)
      ),
      Effect.onExit((exit) => {
        if (exit._tag === "Success") return Effect.void
        const failure = Cause.failureOption(exit.cause)
        return Effect.zipRight(
          Scope.close(scope, exit),
          finishWith(
            Option.isSome(failure)
              ? { _tag: "Failure", latencyMs: latency(), error: failure.value, rateLimits: failure.value.rateLimits }
              : { _tag: "Interrupted", latencyMs: latency() }
          )
        )
      })
    )
  )
  // With spans, what the guards left runs after the attempt's span (a transition belongs on the route span).
  return request.span === undefined
    ? opening
    : Effect.ensuring(
        inAttemptSpan(request, admitted, opening),
        Effect.suspend(() => request.flush())
      )
}

interface Opened {
  readonly head: ReadonlyArray<StreamEvent>
  readonly feed: Feed
  readonly rateLimits: RateLimitInfo | undefined
  readonly scope: Scope.CloseableScope
  readonly clientWantsUsage: boolean
  readonly finish: AttemptStage["finish"]
  readonly routeSpan: Tracer.Span | undefined
}

/** The started stream for its reader: what it reads, and what ends the attempt when it stops. */
const handOver = (request: Request, admitted: Admitted, opened: Opened): RoutedStream => {
  const { feed, clientWantsUsage, routeSpan } = opened
  const done = Deferred.unsafeMake<Decision>(FiberId.none)
  let head: ReadonlyArray<StreamEvent> | undefined = opened.head
  let usage: Usage | undefined
  /** What reaches the client: every event but the usage-only chunk it did not ask for. */
  const keep = (events: ReadonlyArray<StreamEvent>): ReadonlyArray<StreamEvent> => {
    let kept: Array<StreamEvent> | undefined
    for (let i = 0; i < events.length; i++) {
      const event = events[i]!
      if (event.usage !== undefined) usage = event.usage
      if (!clientWantsUsage && event.usageOnly === true) {
        if (kept === undefined) kept = events.slice(0, i)
      } else if (kept !== undefined) kept.push(event)
    }
    return kept ?? events
  }
  const source: Source = {
    poll: (): Polled => {
      if (head !== undefined) {
        const first = head
        head = undefined
        return keep(first)
      }
      const got = feed.poll()
      return isEvents(got) ? keep(got) : got
    },
    onReady: (ready) => (head !== undefined && ready !== undefined ? ready() : feed.onReady(ready))
  }
  let released = false
  const release = Effect.suspend(() => {
    if (released) return Effect.void
    released = true
    const latencyMs = Math.max(0, request.clock.unsafeCurrentTimeMillis() - admitted.startedAt)
    const { decision } = request
    decision.inputTokens = usage?.prompt_tokens
    decision.outputTokens = usage?.completion_tokens
    const ended = feed.delivered()
    const failure = ended !== undefined && ended !== "end" ? ended : undefined
    const outcome: Outcome =
      failure !== undefined
        ? { _tag: "Failure", latencyMs, error: failure, rateLimits: opened.rateLimits }
        : ended === "end"
          ? {
              _tag: "Success",
              latencyMs,
              inputTokens: usage?.prompt_tokens,
              outputTokens: usage?.completion_tokens,
              rateLimits: opened.rateLimits
            }
          : { _tag: "Interrupted", latencyMs }
    request.tick()
    opened.finish(request, admitted, outcome)
    return request.flush().pipe(
      Effect.zipRight(Scope.close(opened.scope, Exit.void)),
      Effect.zipRight(
        Effect.suspend(() => {
          // Frozen after the attempt is recorded.
          const frozen = decision.end(
            request.now,
            failure !== undefined ? "error" : ended === "end" ? "success" : "interrupted",
            failure !== undefined ? `${failure._tag}: ${failure.message}` : undefined
          )
          // The route span of a stream closes here, with how the stream really ended.
          if (routeSpan !== undefined) {
            const attributes = spanAttributes(frozen)
            for (const key in attributes) routeSpan.attribute(key, attributes[key])
            routeSpan.end(
              request.clock.unsafeCurrentTimeNanos(),
              failure !== undefined ? Exit.fail(failure) : ended === "end" ? Exit.void : Exit.interrupt(FiberId.none)
            )
          }
          return Deferred.succeed(done, frozen)
        })
      )
    )
  })
  request.unclaimed = release
  return {
    upstream: admitted.attempt.upstream.id,
    requestId: request.decision.requestId,
    pool: admitted.attempt.pool.id,
    attempts: request.attempts,
    source,
    release,
    // Built when asked for: the gateway reads `source` and never needs the Stream.
    get events() {
      return Stream.ensuring(toStream(source), release)
    },
    decision: Deferred.await(done)
  }
}

/** The events of an upstream stream for one reader, with a stall watchdog. */
interface Feed extends Source {
  /** How the stream ended for the reader: `"end"`, an error, or undefined while it has not ended. */
  readonly delivered: () => "end" | UpstreamError | undefined
}

/**
 * Watches `source` for stalls: one watchdog per stream checks how long the reader has been waiting —
 * not a timer per event. With the live clock it is a plain timer; with any other clock (`TestClock`)
 * a fiber sleeping on it. Both end with the scope.
 */
const watch = (
  source: Source,
  clock: Clock.Clock,
  stallMs: number,
  stalled: () => UpstreamError
): Effect.Effect<Feed, never, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    let stall: UpstreamError | undefined
    let delivered: "end" | UpstreamError | undefined
    let ready: (() => void) | undefined
    let waitingSince: number | undefined
    const poll = (): Polled => {
      if (stall !== undefined) {
        delivered = stall
        return Option.some(stall)
      }
      const got = source.poll()
      if (got === undefined) return undefined
      waitingSince = undefined
      if (!isEvents(got)) delivered = Option.isSome(got) ? got.value : "end"
      return got
    }
    const onReady = (r: (() => void) | undefined) => {
      ready = r
      if (r === undefined) {
        waitingSince = undefined
        return source.onReady(undefined)
      }
      waitingSince ??= clock.unsafeCurrentTimeMillis()
      source.onReady(() => {
        const go = ready
        ready = undefined
        go?.()
      })
    }
    /** Checks for a stall; the milliseconds until the next check, or undefined when the stream is over. */
    const check = (): number | undefined => {
      if (delivered !== undefined || stall !== undefined) return undefined
      const now = clock.unsafeCurrentTimeMillis()
      if (waitingSince !== undefined && now - waitingSince >= stallMs) {
        stall = stalled()
        const go = ready
        ready = undefined
        source.onReady(undefined)
        go?.()
        return undefined
      }
      return waitingSince === undefined ? stallMs : Math.max(1, waitingSince + stallMs - now)
    }
    if (clock === liveClock) {
      let timer: ReturnType<typeof setTimeout> | undefined
      const tick = () => {
        const next = check()
        timer = next === undefined ? undefined : setTimeout(tick, next)
      }
      timer = setTimeout(tick, stallMs)
      // Straight on the scope: `Effect.addFinalizer` would diff every fiber ref when it runs.
      yield* Scope.addFinalizer(
        scope,
        Effect.sync(() => clearTimeout(timer))
      )
    } else {
      yield* Effect.forkScoped(
        Effect.gen(function* () {
          let wait: number | undefined = stallMs
          while (wait !== undefined) {
            yield* Effect.sleep(Duration.millis(wait))
            wait = check()
          }
        })
      )
    }
    return { poll, onReady, delivered: () => delivered }
  })
