/**
 * StreamEvent: the contract of a streamed answer between a provider, the router and whoever relays
 * it (the gateway). A stream is a {@link Source} that is pushed to — a socket's reads — and polled by
 * one reader, without the `Stream` machinery (a channel executor per run costs hundreds of
 * microseconds for a short stream). {@link fromStream} adapts any Effect `Stream`; {@link toStream}
 * turns a source back into one.
 */
import { Chunk, Effect, Option, Stream } from "effect"
import type { Scope } from "effect"
import type { UpstreamError } from "./Errors.js"
import type { Usage } from "./Wire.js"

/**
 * One streamed event. `data` is the JSON text of one OpenAI `chat.completion.chunk`, exactly as it
 * goes to the client (passed through untouched where no translation is needed).
 */
export interface StreamEvent {
  readonly data: string
  /** Usage, when this event carries it (the final chunk with `stream_options.include_usage`). */
  readonly usage?: Usage
  /** True for a usage-only chunk (`choices: []`) that carries no content. */
  readonly usageOnly?: boolean
  /**
   * Whether it carries content, when the provider knows (a forwarded stream of another endpoint's
   * events); absent, {@link isContent} reads a chat chunk's text.
   */
  readonly content?: boolean
}

/**
 * What a source has for its reader now: the events that arrived since the last poll, the end
 * (`None`) or a failure (`Some`), or `undefined` when nothing has arrived yet.
 */
export type Polled = ReadonlyArray<StreamEvent> | Option.Option<UpstreamError> | undefined

/** Events pushed by an upstream, read by one reader. */
export interface Source {
  /** What has arrived, without waiting. Once it returned the end or a failure, it keeps returning it. */
  readonly poll: () => Polled
  /** Calls `ready` once, as soon as `poll` has something; `undefined` cancels. */
  readonly onReady: (ready: (() => void) | undefined) => void
}

/** True when a poll returned events (rather than the end, a failure, or nothing). */
export const isEvents = (polled: Polled): polled is ReadonlyArray<StreamEvent> => Array.isArray(polled)

/**
 * The events that arrived since the last take, waiting for at least one. Fails with `None` at the
 * end, `Some(error)` on failure.
 */
export const take = (source: Source): Effect.Effect<ReadonlyArray<StreamEvent>, Option.Option<UpstreamError>> =>
  Effect.suspend(() => {
    const now = source.poll()
    if (now !== undefined) return settled(now)
    return Effect.async<ReadonlyArray<StreamEvent>, Option.Option<UpstreamError>>((resume) => {
      const wake = () => {
        const next = source.poll()
        if (next === undefined) source.onReady(wake)
        else resume(settled(next))
      }
      source.onReady(wake)
      return Effect.sync(() => source.onReady(undefined))
    })
  })

const settled = (
  polled: ReadonlyArray<StreamEvent> | Option.Option<UpstreamError>
): Effect.Effect<ReadonlyArray<StreamEvent>, Option.Option<UpstreamError>> =>
  isEvents(polled) ? Effect.succeed(polled) : Effect.fail(polled)

/** A source as an Effect `Stream` (consume it once: the stream and the source share one reader). */
export const toStream = (source: Source): Stream.Stream<StreamEvent, UpstreamError> =>
  Stream.repeatEffectChunkOption(Effect.map(take(source), Chunk.unsafeFromArray))

/** Events a read-ahead source holds for a slow reader before it stops pulling from the stream. */
const HIGH_WATER = 256

/**
 * Any Effect `Stream` as a source: a fiber of the current scope reads it ahead (and stops with the
 * scope), pausing while `HIGH_WATER` events wait for the reader.
 */
export const fromStream = (
  stream: Stream.Stream<StreamEvent, UpstreamError>
): Effect.Effect<Source, never, Scope.Scope> =>
  Effect.gen(function* () {
    const pull = yield* Stream.toPull(stream)
    let buffered: Array<StreamEvent> = []
    let end: Option.Option<UpstreamError> | undefined
    let ready: (() => void) | undefined
    let paused: (() => void) | undefined
    const signal = () => {
      const r = ready
      ready = undefined
      r?.()
    }
    const produce = Effect.gen(function* () {
      for (;;) {
        if (buffered.length >= HIGH_WATER) {
          yield* Effect.async<void>((resume) => {
            paused = () => resume(Effect.void)
          })
        }
        const chunk = yield* pull
        for (const event of chunk) buffered.push(event)
        if (buffered.length > 0) signal()
      }
    }).pipe(
      Effect.catchAll((error) =>
        Effect.sync(() => {
          end = error
          signal()
        })
      )
    )
    yield* Effect.forkScoped(produce)
    return {
      poll: () => {
        if (buffered.length > 0) {
          const out = buffered
          buffered = []
          const p = paused
          paused = undefined
          p?.()
          return out
        }
        return end
      },
      onReady: (r) => {
        ready = r
      }
    }
  })

const CONTENT = /"(?:content|arguments|refusal|reasoning_content)":"[^"]|"finish_reason":"|"tool_calls":\[/

/** True for a stream event that carries content (not just the opening role chunk). */
export const isContent = (event: StreamEvent): boolean =>
  event.content ?? (event.usage !== undefined || CONTENT.test(event.data))
