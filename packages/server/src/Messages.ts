/**
 * `POST /v1/messages` and `POST /v1/messages/count_tokens`: Anthropic's Messages API served through
 * the same router and pools as `/v1/chat/completions`, so `@anthropic-ai/sdk` (and tools built on it
 * that take a base URL) can use Sluice unchanged and a pool can mix Claude, OpenAI and local models
 * behind it. A request is translated to an OpenAI chat request, routed, and the answer — whole or
 * streamed — translated back; errors answer in Anthropic's envelope (`{"type":"error","error":{...}}`)
 * with the status the OpenAI endpoint would use. The client's key may come as `x-api-key` (as the SDK
 * sends it) or as a bearer token.
 */
import type { Wire } from "@sluice/core"
import type { StreamEvent } from "@sluice/core"
import { Errors, Router, TokenCounter } from "@sluice/core"
import { Anthropic } from "@sluice/providers"
import { Effect, Either, Option, Schema } from "effect"
import type { IncomingHttpHeaders, ServerResponse } from "node:http"
import type { Endpoint } from "./internal/http.js"
import { decisionHeaders, relay, streamHeaders, writeJson } from "./internal/http.js"
import { errorEvent, fromOpenAI, Refused, StreamTranslator, toOpenAI } from "./internal/messages.js"

export type { Endpoint } from "./internal/http.js"
export { fromOpenAI, StreamTranslator, toOpenAI } from "./internal/messages.js"

/**
 * The fields of a Messages request the gateway checks before translating it (every other field is
 * kept): `model`, a positive integer `max_tokens`, and at least one message with a role.
 */
export const MessagesRequest = Schema.Struct({
  model: Schema.String.pipe(Schema.minLength(1)),
  max_tokens: Schema.Number.pipe(Schema.int(), Schema.positive()),
  messages: Schema.Array(
    Schema.Struct({
      role: Schema.Literal("user", "assistant"),
      content: Schema.Union(Schema.String, Schema.Array(Schema.Struct({ type: Schema.String })))
    })
  ).pipe(Schema.minItems(1)),
  stream: Schema.optional(Schema.Boolean)
}).annotations({ identifier: "MessagesRequest" })

/** A checked Messages request; unknown fields are kept. */
export interface MessagesRequest extends Schema.Schema.Type<typeof MessagesRequest> {
  readonly [key: string]: unknown
}

/** `count_tokens` takes the request without `max_tokens`. */
export const CountTokensRequest = Schema.Struct({
  model: Schema.String.pipe(Schema.minLength(1)),
  messages: MessagesRequest.fields.messages
}).annotations({ identifier: "CountTokensRequest" })

/** A checked `count_tokens` request; unknown fields are kept. */
export interface CountTokensRequest extends Schema.Schema.Type<typeof CountTokensRequest> {
  readonly [key: string]: unknown
}

/**
 * Takes the client's `x-api-key` (as Anthropic's SDK sends its key) as its bearer token when it sent
 * no `Authorization`: client keys, priorities and sticky sessions then see it like any other.
 */
export const acceptApiKey = (headers: IncomingHttpHeaders): void => {
  const key = headers["x-api-key"]
  if (headers["authorization"] === undefined && typeof key === "string" && key !== "") {
    headers["authorization"] = `Bearer ${key}`
  }
}

/**
 * Anthropic's error envelope for an answer of `status` saying `message`. `code` (a gateway refusal's,
 * as OpenAI's envelope carries it: `budget_exceeded`) goes beside Anthropic's type, which alone cannot
 * tell a spent budget from a rate limit.
 */
export const errorBody = (status: number, message: string, code?: string): string =>
  JSON.stringify({
    type: "error",
    error: { type: Anthropic.errorType(status), message, ...(code === undefined ? {} : { code }) }
  })

/** A pipeline error as Anthropic's error envelope, with the status and headers the OpenAI endpoint uses. */
const writeError = (res: ServerResponse, error: Errors.RouterError, requestId: string): void => {
  const mapped = Errors.toOpenAI(error)
  const decision = "decision" in error ? error.decision : undefined
  const body = {
    type: "error",
    error: { type: Anthropic.errorType(mapped.status), message: mapped.body.error.message }
  }
  writeJson(res, mapped.status, JSON.stringify(body), {
    ...mapped.headers,
    ...(decision !== undefined ? decisionHeaders(decision) : {}),
    "x-request-id": requestId
  })
}

const refused = (refusal: Refused) => new Errors.InvalidRequest({ message: refusal.message, param: refusal.param })

/** A routed stream's events as Messages events, ending with `message_stop`, or an `error` event on failure. */
const translated = (res: ServerResponse, source: StreamEvent.Source, translator: StreamTranslator) =>
  relay(
    res,
    source,
    (events) => {
      let text = ""
      for (const event of events) text += translator.chunk(event.data)
      return text
    },
    (end) => {
      if (Option.isNone(end)) return translator.end()
      const mapped = Errors.toOpenAI(end.value)
      const overloaded = end.value.message.includes("overloaded_error")
      return errorEvent(overloaded ? "overloaded_error" : Anthropic.errorType(mapped.status), mapped.body.error.message)
    }
  )

/** A streamed answer; the stream is released however the relay ends (see the gateway's `streamChat`). */
const stream = (
  endpoint: Endpoint,
  res: ServerResponse,
  request: Wire.ChatCompletionRequest,
  route: Router.RouteOptions
) =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(restore(endpoint.router.chatStream(request, route)), (routed) => {
      res.writeHead(200, streamHeaders(routed))
      const translator = new StreamTranslator(`msg_${routed.requestId.replace(/^req_/, "")}`, request.model)
      res.write(translator.start())
      return endpoint.relayed(res, routed, restore(translated(res, routed.source, translator)))
    })
  )

/**
 * `POST /v1/messages` for a checked body (`decoded`): routed as a chat completion, answered in
 * Anthropic's format. Never fails: every error is answered in Anthropic's envelope.
 */
export const create = (
  endpoint: Endpoint,
  res: ServerResponse,
  requestId: string,
  decoded: Either.Either<MessagesRequest, Errors.InvalidRequest>,
  route: Router.RouteOptions
): Effect.Effect<void> => {
  const routed = Effect.suspend(() => {
    if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
    const request = toOpenAI(decoded.right)
    if (request instanceof Refused) return Effect.fail(refused(request))
    if (request.stream === true) return stream(endpoint, res, request, route)
    return Effect.map(endpoint.router.chat(request, route), (answer) => {
      endpoint.served(answer.decision)
      writeJson(res, 200, JSON.stringify(fromOpenAI(answer.response, request.model)), decisionHeaders(answer.decision))
    })
  })
  // Answered here in Anthropic's envelope, so the gateway never sees the error: its decision is
  // recorded here (metrics, audit, access line) as the gateway records an OpenAI endpoint's.
  return Effect.catchAll(routed, (error) =>
    Effect.sync(() => {
      writeError(res, error, requestId)
      if ("decision" in error && error.decision !== undefined) endpoint.served(error.decision, res.statusCode)
    })
  )
}

/**
 * `POST /v1/messages/count_tokens`: `{"input_tokens": n}` for the translated request, counted as the
 * pool serving its model counts (`Router.countTokens`: by the documented rules of its first enabled
 * upstream's provider — Anthropic's images by size, Gemini's per tile — else the model's tiktoken
 * encoding). Claude's tokenizer is not public, so for Claude this is an estimate. A model no pool
 * serves is a 404, as on `/v1/messages`. Without the router's count, the fast estimate.
 */
export const countTokens = (
  router: Router.Service,
  res: ServerResponse,
  requestId: string,
  decoded: Either.Either<CountTokensRequest, Errors.InvalidRequest>
): Effect.Effect<void> => {
  const counted = Effect.suspend((): Effect.Effect<void, Errors.RouterError> => {
    if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
    const request = toOpenAI({ max_tokens: 1, ...decoded.right })
    if (request instanceof Refused) return Effect.fail(refused(request))
    const count =
      router.countTokens === undefined
        ? Effect.succeed(TokenCounter.estimateText(JSON.stringify(request.messages)))
        : Effect.map(router.countTokens(request), (c) => c.tokens)
    return Effect.map(count, (tokens) =>
      writeJson(res, 200, JSON.stringify({ input_tokens: tokens }), { "x-request-id": requestId })
    )
  })
  return Effect.catchAll(counted, (error) => Effect.sync(() => writeError(res, error, requestId)))
}
