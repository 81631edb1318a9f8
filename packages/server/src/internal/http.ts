/** Writing answers: what every endpoint of the gateway shares. */
import type { Decision, Router } from "@sluice/core"
import { Errors, StreamEvent } from "@sluice/core"
import { Effect, Option } from "effect"
import type { ServerResponse } from "node:http"

const JSON_TYPE = "application/json"

/** Writes a JSON answer; `headers` is a fresh object of the caller's, completed here (no copy per answer). */
export const writeJson = (
  res: ServerResponse,
  status: number,
  text: string,
  headers: Record<string, string | number> = {}
) => {
  if (res.headersSent || res.destroyed) return
  headers["content-type"] = JSON_TYPE
  headers["content-length"] = Buffer.byteLength(text)
  res.writeHead(status, headers)
  res.end(text)
}

/**
 * What happened, as headers: the pool, the attempts, and the upstream that served — or, for an
 * error answer, the upstream of the last attempt (none when no attempt was made) — and a hedge.
 */
export const decisionHeaders = (decision: Decision.Decision): Record<string, string> => {
  const upstream = decision.upstream ?? decision.attempts[decision.attempts.length - 1]?.upstream
  const headers: Record<string, string> =
    upstream === undefined
      ? {
          "x-request-id": decision.requestId,
          "x-sluice-pool": decision.pool,
          "x-sluice-attempts": String(decision.attempts.length)
        }
      : {
          "x-request-id": decision.requestId,
          "x-sluice-pool": decision.pool,
          "x-sluice-upstream": upstream,
          "x-sluice-attempts": String(decision.attempts.length)
        }
  if (decision.hedge !== undefined) hedgeHeaders(headers, decision.hedge)
  return headers
}

/** The headers of a streamed answer: an event stream, and what happened (as {@link decisionHeaders}). */
export const streamHeaders = (routed: Router.RoutedStream): Record<string, string> => {
  const headers: Record<string, string> = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "x-request-id": routed.requestId,
    "x-sluice-pool": routed.pool,
    "x-sluice-upstream": routed.upstream,
    "x-sluice-attempts": String(routed.attempts)
  }
  if (routed.hedge !== undefined) hedgeHeaders(headers, routed.hedge)
  return headers
}

/** A hedge, as headers: that one started, and which upstream lost the race (when one did). */
const hedgeHeaders = (headers: Record<string, string>, hedge: Decision.Hedge): void => {
  headers["x-sluice-hedged"] = "true"
  if (hedge.loser !== undefined) headers["x-sluice-hedge-loser"] = hedge.loser
}

const DONE = "data: [DONE]\n\n"

/** SSE text of some events (OpenAI's framing: data lines only). */
export const sse = (events: Iterable<StreamEvent.StreamEvent>): string => {
  let text = ""
  for (const event of events) text += `data: ${event.data}\n\n`
  return text
}

/**
 * The last SSE text of an OpenAI stream: `[DONE]`, or after the first chunk an upstream failure as an
 * in-band error event in OpenAI's shape — and no `[DONE]`, so no client mistakes the stream for complete.
 */
export const ending = (end: Option.Option<Errors.UpstreamError>): string =>
  Option.isNone(end) ? DONE : `data: ${JSON.stringify(Errors.toOpenAI(end.value).body)}\n\n`

/**
 * Relays a stream to `res` straight from its source (no Stream machinery): one write per upstream
 * read, and whatever has already arrived when a read comes in — up to the end of the stream — goes
 * out in the same write, so a short answer costs one write. `text` writes events in the endpoint's
 * format, `ending` the end or the in-band failure.
 */
export const relay = (
  res: ServerResponse,
  source: StreamEvent.Source,
  text: (events: ReadonlyArray<StreamEvent.StreamEvent>) => string,
  ending: (end: Option.Option<Errors.UpstreamError>) => string
): Effect.Effect<void> => {
  const step = (events: ReadonlyArray<StreamEvent.StreamEvent>): Effect.Effect<void> => {
    let out = text(events)
    for (let more = source.poll(); more !== undefined; more = source.poll()) {
      if (!StreamEvent.isEvents(more)) {
        res.end(out + ending(more))
        return Effect.void
      }
      out += text(more)
    }
    return out === "" || res.write(out) ? loop : Effect.zipRight(drained(res), loop)
  }
  const loop: Effect.Effect<void> = Effect.matchEffect(StreamEvent.take(source), {
    onSuccess: step,
    onFailure: (end) => Effect.sync(() => void res.end(ending(end)))
  })
  return loop
}

/** Waits until `res` can take more (a slow client); interruption (a disconnect) ends the wait. */
const drained = (res: ServerResponse) =>
  Effect.async<void>((resume) => {
    const go = () => resume(Effect.void)
    res.once("drain", go)
    return Effect.sync(() => void res.off("drain", go))
  })

/**
 * What an endpoint module (`Messages`, `Responses`) needs of the gateway: the router; what to do with
 * a whole answer's decision (the client's usage); and how to run the relay of a stream it answers
 * (`relaying`, already written to `res`), so that the stream is one the gateway's drain knows and is
 * released — with the client's usage recorded — however it ends. Called inside the caller's mask.
 */
export interface Endpoint {
  readonly router: Router.Service
  /** Records a routed request's decision with the status it was answered (200 when not told). */
  readonly served: (decision: Decision.Decision, status?: number) => void
  readonly relayed: (
    res: ServerResponse,
    routed: Router.RoutedStream,
    relaying: Effect.Effect<void>
  ) => Effect.Effect<void>
}
