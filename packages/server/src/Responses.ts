/**
 * `POST /v1/responses`: OpenAI's Responses API — the default of `client.responses.create`, of the
 * Vercel AI SDK's `openai` provider and of LangChain with `useResponsesApi` — served through the same
 * router and pools as chat completions. A request is translated to a chat request (input items,
 * instructions, function tools and calls, structured output), routed to any upstream of the pool, and
 * the answer translated back: a `response` object, or Responses stream events. Stateless: nothing is
 * stored, so `previous_response_id` and `store: true` answer a clear 400. Errors use OpenAI's envelope.
 */
import type { Router, Wire } from "@sluice/core"
import { Errors } from "@sluice/core"
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

/** A streamed response; the stream is released however the relay ends (see the gateway's `streamChat`). */
const stream = (
  endpoint: Endpoint,
  res: ServerResponse,
  request: Wire.ChatCompletionRequest,
  route: Router.RouteOptions,
  body: ResponsesRequest
) =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(restore(endpoint.router.chatStream(request, route)), (routed) => {
      res.writeHead(200, streamHeaders(routed))
      const events = new ResponsesStream(idOf(routed.requestId), Math.floor(Date.now() / 1000), body)
      res.write(events.start())
      const relayed = relay(
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
      return endpoint.relayed(res, routed, restore(relayed))
    })
  )

/**
 * `POST /v1/responses` for a checked body (`decoded`): routed as a chat completion, answered as a
 * `response` object or a stream of Responses events.
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
    const request = toChat(body)
    if (request instanceof Refused) return Effect.fail(refused(request))
    if (request.stream === true) return stream(endpoint, res, request, route, body)
    return Effect.map(endpoint.router.chat(request, route), (answer) => {
      endpoint.served(answer.decision)
      writeJson(
        res,
        200,
        JSON.stringify(fromChat(answer.response, body, idOf(requestId), Math.floor(Date.now() / 1000))),
        decisionHeaders(answer.decision)
      )
    })
  })
