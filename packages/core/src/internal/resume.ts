/**
 * Mid-stream continuation (a pool's `stream.resume`). A routed chat stream is read through a source
 * that keeps the text it handed the client; when the upstream then fails, another upstream of the
 * pool that can continue an assistant message (capability `prefill`) is asked to continue from that
 * text — routed as a chat stream of its own (same guards, budgets, retries), the failed upstream
 * avoided — and its events follow in the same source, so the client reads one uninterrupted stream.
 * A stream that sent tool calls or several choices, or whose continuation cannot open, ends with the
 * original failure (the in-band error). The stream's decision then tells every attempt and each
 * continuation (`Decision.resumed`).
 */
import type { Fiber } from "effect"
import { Effect, Exit, Option } from "effect"
import type { Decision, Resumption } from "../Decision.js"
import type { RouterError, UpstreamError } from "../Errors.js"
import type { Polled, Source, StreamEvent } from "../StreamEvent.js"
import { isEvents } from "../StreamEvent.js"
import { estimateText } from "../TokenCounter.js"
import type { ChatCompletionRequest } from "../Wire.js"
import { requestedMaxTokens } from "../Wire.js"
import type { RouteOptions } from "./request.js"
import type { RoutedStream } from "./stream.js"
import { StreamHandle } from "./stream.js"

/** Continuations one stream may make. */
const MAX_RESUMES = 2

/** What a continuation is routed with: the router's chat stream, and a way to run it from a poll. */
export interface Reopen {
  readonly open: (chat: ChatCompletionRequest, options: RouteOptions) => Effect.Effect<RoutedStream, RouterError>
  readonly fork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.RuntimeFiber<A, E>
}

/**
 * The request that continues `chat` after `text`: the text as a final assistant message to continue
 * (without trailing whitespace, which Anthropic refuses), vLLM's `continue_final_message`, and what is
 * left of the completion's limit.
 */
export const continuation = (chat: ChatCompletionRequest, text: string): ChatCompletionRequest => {
  const limit = requestedMaxTokens(chat)
  const left = limit === undefined ? undefined : Math.max(1, limit - estimateText(text))
  return {
    ...chat,
    messages: [...chat.messages, { role: "assistant", content: text.trimEnd() }],
    continue_final_message: true,
    add_generation_prompt: false,
    ...(left === undefined
      ? {}
      : chat.max_completion_tokens !== undefined && chat.max_completion_tokens !== null
        ? { max_completion_tokens: left }
        : { max_tokens: left })
  }
}

/** Whether a stream of `chat` can be continued at all: one choice. */
export const resumable = (chat: ChatCompletionRequest): boolean => {
  const n = chat["n"]
  return typeof n !== "number" || n <= 1
}

/** One decision of the streams read: the first's, with every attempt, and the last's outcome and usage. */
const merged =
  (resumed: ReadonlyArray<Resumption>) =>
  (decisions: ReadonlyArray<Decision>): Decision => {
    const first = decisions[0]!
    const last = decisions[decisions.length - 1]!
    return {
      ...first,
      upstream: last.upstream,
      attempts: decisions.flatMap((d) => d.attempts),
      excluded: decisions.flatMap((d) => d.excluded),
      outcome: last.outcome,
      error: last.error,
      inputTokens: last.inputTokens,
      outputTokens: last.outputTokens,
      durationMs: Math.max(0, last.startedAt + last.durationMs - first.startedAt),
      resumed
    }
  }

/** What {@link contentOf} reads of a streamed choice. */
interface Choice {
  readonly index?: number
  readonly delta?: {
    readonly content?: unknown
    readonly tool_calls?: unknown
    readonly function_call?: unknown
  } | null
}

/** A chat chunk's JSON, as far as {@link contentOf} reads it; undefined when it is not JSON. */
const parsed = (data: string): { readonly choices?: ReadonlyArray<Choice | null> } | undefined => {
  try {
    return JSON.parse(data)
  } catch {
    return undefined
  }
}

/** The continuation's content text of some events; false once they hold what no prefix can continue. */
const contentOf = (events: ReadonlyArray<StreamEvent>): string | false => {
  let text = ""
  for (const event of events) {
    if (event.usageOnly === true) continue
    const chunk = parsed(event.data)
    if (chunk === undefined) return false
    const choices = chunk.choices
    if (!Array.isArray(choices)) continue
    for (const choice of choices) {
      const delta = choice?.delta
      if ((choice?.index ?? 0) !== 0 || delta?.tool_calls !== undefined || delta?.function_call !== undefined)
        return false
      if (typeof delta?.content === "string") text += delta.content
    }
  }
  return text
}

/** `first`, read so that a failure after content is continued elsewhere; see the module doc. */
export const resuming = (
  first: RoutedStream,
  chat: ChatCompletionRequest,
  options: RouteOptions,
  reopen: Reopen
): RoutedStream => {
  const streams: Array<RoutedStream> = [first]
  const resumed: Array<Resumption> = []
  let current = first
  let text = ""
  let continuable = true
  let opening: Fiber.RuntimeFiber<RoutedStream, RouterError> | undefined
  let failed: UpstreamError | undefined
  let ready: (() => void) | undefined
  let released = false
  /**
   * The prefix went without the trailing whitespace the client already has: the continuation's first
   * content loses its leading whitespace, or the client would see it twice.
   */
  let gap = false

  /** `events` with the first content's leading whitespace dropped (see `gap`). */
  const closeGap = (events: ReadonlyArray<StreamEvent>): ReadonlyArray<StreamEvent> => {
    const out = [...events]
    for (let i = 0; i < out.length && gap; i++) {
      const event = out[i]!
      const chunk = event.usageOnly === true ? undefined : parsed(event.data)
      const delta = chunk?.choices?.[0]?.delta
      if (typeof delta?.content !== "string" || delta.content === "") continue
      gap = false
      const content = delta.content.trimStart()
      if (content !== delta.content) {
        out[i] = {
          ...event,
          data: JSON.stringify({ ...chunk, choices: [{ ...chunk!.choices![0], delta: { ...delta, content } }] })
        }
      }
    }
    return out
  }

  const wake = () => {
    const go = ready
    ready = undefined
    go?.()
  }

  /** Asks another upstream to continue after `failure`; the reader waits until it opens or cannot. */
  const resume = (failure: UpstreamError) => {
    const broken = current
    const avoid = [...(options.avoid ?? []), ...streams.map((s) => s.upstream)]
    const requestId = `${first.requestId}-resume-${resumed.length + 1}`
    const { body: _body, ...rest } = options
    opening = reopen.fork(
      Effect.zipRight(broken.release, reopen.open(continuation(chat, text), { ...rest, requestId, avoid }))
    )
    opening.addObserver((exit) => {
      opening = undefined
      if (released) {
        if (Exit.isSuccess(exit)) reopen.fork(exit.value.release)
      } else if (Exit.isSuccess(exit)) {
        streams.push(exit.value)
        resumed.push({ upstream: exit.value.upstream, requestId, afterChars: text.length, after: failure.message })
        current = exit.value
        gap = text.trimEnd() !== text
      } else failed = failure
      wake()
    })
  }

  const poll = (): Polled => {
    if (opening !== undefined) return undefined
    if (failed !== undefined) return Option.some(failed)
    const got = current.source.poll()
    if (got === undefined) return undefined
    if (isEvents(got)) {
      const events = gap ? closeGap(got) : got
      if (continuable) {
        const more = contentOf(events)
        if (more === false) continuable = false
        else text += more
      }
      return events
    }
    if (Option.isNone(got) || !continuable || text.trim() === "" || resumed.length >= MAX_RESUMES) return got
    resume(got.value)
    // The continuation may have settled already (a route refused at once): read on.
    return opening === undefined ? poll() : undefined
  }

  const source: Source = {
    poll,
    onReady: (r) => {
      ready = r
      // While a continuation opens, its settling wakes the reader.
      if (opening !== undefined) return
      if (r !== undefined && failed !== undefined) return wake()
      current.source.onReady(r === undefined ? undefined : wake)
    }
  }

  const release = Effect.suspend(() => {
    if (released) return Effect.void
    released = true
    const stop = opening === undefined ? Effect.void : Effect.asVoid(opening.interruptAsFork(opening.id()))
    return Effect.zipRight(
      stop,
      Effect.forEach(streams, (s) => s.release, { discard: true })
    )
  })

  // What the client was told as the stream started (its headers) stays the first stream's.
  const { attempts, hedge, pool, requestId, upstream } = first
  const decision = Effect.suspend(() =>
    resumed.length === 0
      ? first.decision
      : Effect.map(
          Effect.forEach(streams, (s) => s.decision),
          merged(resumed)
        )
  )
  // A class, not a literal with a getter of its own (see `StreamHandle`).
  return new StreamHandle({ upstream, requestId, pool, attempts, hedge, source, release, decision })
}
