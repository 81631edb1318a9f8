/**
 * `POST /v1/responses`: OpenAI's Responses API — the default of `client.responses.create`, of the
 * Vercel AI SDK's `openai` provider and of LangChain with `useResponsesApi` — served through the same
 * router and pools as chat completions. Each attempt's upstream decides how: one that serves the
 * Responses API itself (capability `responses`: OpenAI, or an OpenAI-compatible server that declares
 * it) gets the request as the client wrote it and its answer or events are relayed as they come; any
 * other gets it translated to a chat request (input items, instructions, function tools and calls,
 * structured output) and its answer translated back. What has no translation — `previous_response_id`,
 * `store: true`, built-in tools, item references — goes only to upstreams that serve the API; when the
 * pool has none, a clear 400 says why. Errors use OpenAI's envelope.
 */
import type { Router, Wire } from "@sluice/core"
import { Capabilities, Errors } from "@sluice/core"
import { Effect, Either, Option, Schema } from "effect"
import type { ServerResponse } from "node:http"
import type { Endpoint } from "./internal/http.js"
import { decisionHeaders, relay, streamHeaders, writeJson } from "./internal/http.js"
import { Refused } from "./internal/messages.js"
import { fromChat, ResponsesStream, toChat } from "./internal/responses.js"

export { fromChat, ResponsesStream, toChat } from "./internal/responses.js"

/** The fields of a Responses request the gateway checks before translating it (every other field is kept). */
export const ResponsesRequest = Schema.Struct({
  model: Schema.String.pipe(Schema.minLength(1)),
  input: Schema.Union(Schema.String, Schema.Array(Schema.Struct({}))),
  stream: Schema.optional(Schema.NullOr(Schema.Boolean))
}).annotations({ identifier: "ResponsesRequest" })

/** A checked Responses request; unknown fields are kept. */
export interface ResponsesRequest extends Schema.Schema.Type<typeof ResponsesRequest> {
  readonly [key: string]: unknown
}

/** A response id: the request's id without its prefix. */
const idOf = (requestId: string): string => requestId.replace(/^req_/, "")

const refused = (refusal: Refused) => new Errors.InvalidRequest({ message: refusal.message, param: refusal.param })

const now = () => Math.floor(Date.now() / 1000)

/** The event name of a Responses event as upstreams write it (`type` first), for its SSE `event:` line. */
const TYPE = /^\{"type":"([a-z_.]+)"/

/** Responses events relayed as the upstream sent them. */
const nativeEvents = (events: ReadonlyArray<{ readonly data: string }>): string => {
  let text = ""
  for (const event of events) {
    const type = TYPE.exec(event.data)?.[1]
    text += type === undefined ? `data: ${event.data}\n\n` : `event: ${type}\ndata: ${event.data}\n\n`
  }
  return text
}

/** The `error` event that ends a stream which broke off (nothing after a complete one). */
const errorEvent = (error: Errors.UpstreamError): string => {
  const mapped = Errors.toOpenAI(error).body.error
  const data = { type: "error", code: mapped.code ?? "upstream_error", message: mapped.message, param: null }
  return `event: error\ndata: ${JSON.stringify(data)}\n\n`
}

/** The relay of a stream: the upstream's own events, or chat chunks translated to Responses events. */
const relaying = (res: ServerResponse, started: Router.ForwardedStream, body: ResponsesRequest) => {
  const routed = started.stream
  if (started.native) {
    return relay(res, routed.source, nativeEvents, (end) => (Option.isNone(end) ? "" : errorEvent(end.value)))
  }
  const events = new ResponsesStream(idOf(routed.requestId), now(), body)
  res.write(events.start())
  return relay(
    res,
    routed.source,
    (chunks) => {
      let text = ""
      for (const chunk of chunks) text += events.chunk(chunk.data)
      return text
    },
    (end) => {
      if (Option.isNone(end)) return events.end()
      const mapped = Errors.toOpenAI(end.value)
      return events.error(mapped.body.error.code ?? "upstream_error", mapped.body.error.message)
    }
  )
}

/** A streamed response; the stream is released however the relay ends (see the gateway's `streamChat`). */
const stream = (
  endpoint: Endpoint,
  res: ServerResponse,
  body: ResponsesRequest,
  forwarded: Router.Forwarded,
  route: Router.RouteOptions
) =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(restore(endpoint.router.forwardStream(forwarded, route)), (started) => {
      res.writeHead(200, streamHeaders(started.stream))
      return endpoint.relayed(res, started.stream, restore(relaying(res, started, body)))
    })
  )

/** A whole response: the upstream's own relayed, or the chat completion translated. */
const whole = (
  endpoint: Endpoint,
  res: ServerResponse,
  requestId: string,
  body: ResponsesRequest,
  forwarded: Router.Forwarded,
  route: Router.RouteOptions
) =>
  Effect.map(endpoint.router.forward(forwarded, route), (answer) => {
    endpoint.served(answer.decision)
    const answered = answer.response
    const text = answered.native
      ? (answer.text ?? JSON.stringify(answered.value))
      : JSON.stringify(fromChat(answered.value, body, idOf(requestId), now()))
    writeJson(res, 200, text, decisionHeaders(answer.decision))
  })

/**
 * `POST /v1/responses` for a checked body (`decoded`): routed with its chat translation (any upstream
 * can serve it), or — when it has none — only to upstreams that serve the Responses API, the reason
 * there is no translation answered as a 400 when the pool has none.
 */
export const create = (
  endpoint: Endpoint,
  res: ServerResponse,
  requestId: string,
  decoded: Either.Either<ResponsesRequest, Errors.InvalidRequest>,
  route: Router.RouteOptions
): Effect.Effect<void, Errors.RouterError> =>
  Effect.suspend(() => {
    if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
    const body = decoded.right
    const chat: Wire.ChatCompletionRequest | Refused = toChat(body)
    const untranslated = chat instanceof Refused
    const forwarded: Router.Forwarded = untranslated
      ? { endpoint: "responses", body }
      : { endpoint: "responses", body, chat }
    const routed =
      body.stream === true
        ? stream(endpoint, res, body, forwarded, route)
        : whole(endpoint, res, requestId, body, forwarded, route)
    if (!untranslated) return routed
    // No upstream serves the API itself: the reason the request has no translation is the answer.
    return Effect.mapError(routed, (error) =>
      error._tag === "NoUpstreamAvailable" && Capabilities.unsupported(error) ? refused(chat) : error
    )
  })
