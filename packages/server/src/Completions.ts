/**
 * `POST /v1/completions`: OpenAI's legacy text completions, passed through — not translated — to the
 * upstreams of the pool that have the endpoint (capability `completions`: OpenAI and the
 * OpenAI-compatible kinds that serve it; an upstream's own `capabilities` may leave it out). Routed
 * through the same router and pools as chat completions, so budgets, retries, breakers and the
 * decision headers apply. When no upstream of the pool or its fallbacks has the endpoint the answer is
 * a 400 naming the pool and each upstream. Whole answers are relayed as the upstream sent them;
 * streams as SSE chunks ending in `[DONE]`.
 */
import type { Errors, Router } from "@sluice/core"
import { Effect, Either, Schema } from "effect"
import type { ServerResponse } from "node:http"
import type { Endpoint } from "./internal/http.js"
import { decisionHeaders, ending, relay, sse, streamHeaders, writeJson } from "./internal/http.js"

/** The fields of a completions request the gateway checks (every other field is passed on as sent). */
export const CompletionsRequest = Schema.Struct({
  model: Schema.String.pipe(Schema.minLength(1)),
  prompt: Schema.Union(
    Schema.String,
    Schema.Array(Schema.String),
    Schema.Array(Schema.Number),
    Schema.Array(Schema.Array(Schema.Number))
  ),
  stream: Schema.optional(Schema.NullOr(Schema.Boolean))
}).annotations({ identifier: "CompletionsRequest" })

/** A checked completions request; unknown fields are kept. */
export interface CompletionsRequest extends Schema.Schema.Type<typeof CompletionsRequest> {
  readonly [key: string]: unknown
}

/** A streamed completion relayed as SSE; released however the relay ends (see the gateway's `streamChat`). */
const stream = (endpoint: Endpoint, res: ServerResponse, forwarded: Router.Forwarded, route: Router.RouteOptions) =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(restore(endpoint.router.forwardStream(forwarded, route)), ({ stream: routed }) => {
      res.writeHead(200, streamHeaders(routed))
      return endpoint.relayed(res, routed, restore(relay(res, routed.source, sse, ending)))
    })
  )

/** `POST /v1/completions` for a checked body (`decoded`). */
export const create = (
  endpoint: Endpoint,
  res: ServerResponse,
  _requestId: string,
  decoded: Either.Either<CompletionsRequest, Errors.InvalidRequest>,
  route: Router.RouteOptions
): Effect.Effect<void, Errors.RouterError> =>
  Effect.suspend(() => {
    if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
    const forwarded: Router.Forwarded = { endpoint: "completions", body: decoded.right }
    if (decoded.right.stream === true) return stream(endpoint, res, forwarded, route)
    return Effect.map(endpoint.router.forward(forwarded, route), (answer) => {
      endpoint.served(answer.decision)
      writeJson(res, 200, answer.text ?? JSON.stringify(answer.response.value), decisionHeaders(answer.decision))
    })
  })
