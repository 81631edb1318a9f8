/**
 * The OpenAI-compatible HTTP gateway: a thin adapter from HTTP to the `Router`. It parses and
 * validates bodies, maps errors to OpenAI's envelope and status, and writes streams as SSE. It holds
 * no routing logic.
 *
 * Routes: `POST /v1/chat/completions`, `POST /v1/responses` (see `Responses`), `POST /v1/completions`
 * (see `Completions`), `POST /v1/embeddings`,
 * `GET /v1/models` (and `/v1/models/{id}`), the health endpoints, and Anthropic's `POST /v1/messages`
 * and `POST /v1/messages/count_tokens` (see `Messages`).
 * Every answer (errors, models, health and streams too) carries `x-request-id`: the client's own,
 * or one generated here and handed to the router, so the decision, the trace and the header agree.
 * Routed answers also name what happened: `x-sluice-pool`, `x-sluice-upstream`, `x-sluice-attempts`
 * (and after a hedge, `x-sluice-hedged` and `x-sluice-hedge-loser`).
 *
 * It runs on `node:http` directly: one request handler reads the body and runs one Effect per request
 * (the router call and the response) through the runtime of the built layer. A client that
 * disconnects interrupts that Effect, which cancels the upstream call.
 */
// Per module, not the barrel: see Health.ts in core.
import type * as Headers from "@effect/platform/Headers"
import * as HttpTraceContext from "@effect/platform/HttpTraceContext"
import type { Decision } from "@sluice/core"
import { Config, Errors, Router, TokenCounter, Tracing, Wire } from "@sluice/core"
import type { Scope } from "effect"
import {
  Cause,
  Clock,
  Context,
  Data,
  DefaultServices,
  Effect,
  Either,
  Fiber,
  FiberId,
  FiberRefs,
  Layer,
  Option,
  Runtime,
  Schema
} from "effect"
import type { Tracer } from "effect"
import { isUtf8 } from "node:buffer"
import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from "node:http"
import { createServer } from "node:http"
import type * as Access from "./Access.js"
import { Refusal } from "./Access.js"
import * as Completions from "./Completions.js"
import * as CompiledIs from "./internal/compiledIs.js"
import { decisionHeaders, ending, relay, sse, streamHeaders, writeJson } from "./internal/http.js"
import * as Messages from "./Messages.js"
import * as Responses from "./Responses.js"

/** Gateway settings. */
export interface Options {
  /** Largest request body accepted, in bytes; larger ones get 413. */
  readonly maxBodyBytes: number
  /**
   * Client keys, their limits and priorities, and CORS (see `Access`); without it every request is
   * served, at priority 0.
   */
  readonly access?: Access.Service
  /** Whether the gateway can serve: `/health/ready` answers 503 with the reason when not. */
  readonly readiness?: Effect.Effect<Readiness>
  /** The admin API's handler: requests under `/admin` go there (404 without it). */
  readonly admin?: Handler
  /**
   * Called once with the decision of every routed request (answered, failed, or a stream at its end)
   * with its client key's name and the HTTP status answered: metrics, the audit log and the access
   * log (see `Observe`, `Logging`). Synchronous, on the hot path.
   */
  readonly observe?: (
    decision: Decision.Decision,
    key: string | undefined,
    status: number,
    content?: { readonly request: unknown; readonly response?: unknown }
  ) => void
  /** Whether `observe` wants each request's body (and whole answer): `server.audit.content`. */
  readonly observeContent?: boolean
  /** The handler of `GET /metrics` (404 without it). */
  readonly metrics?: Handler
  /** The dashboard's handler: requests under `/dashboard` go there (404 without it). */
  readonly dashboard?: Handler
}

/** What `/health/ready` reports besides draining. */
export interface Readiness {
  readonly ready: boolean
  /** Per pool, its upstreams that can take requests now. */
  readonly pools: Readonly<Record<string, ReadonlyArray<string>>>
}

/** Gateway settings. */
export class GatewayOptions extends Context.Tag("@sluice/server/GatewayOptions")<GatewayOptions, Options>() {}

/** Where the gateway listens, once it does (the port is the bound one, also when 0 was asked for). */
export interface Address {
  readonly host: string
  readonly port: number
}

/** Where the gateway listens. */
export class Listening extends Context.Tag("@sluice/server/Listening")<Listening, Address>() {}

/** The gateway could not listen (address in use, permission denied...). */
export class ListenError extends Data.TaggedError("ListenError")<{
  readonly message: string
  readonly cause: unknown
}> {}

/** A `node:http` request handler. */
export type Handler = (request: IncomingMessage, response: ServerResponse) => void

/** An error answer; after routing it names the pool and attempts as a success does. */
const writeError = (res: ServerResponse, error: Errors.RouterError, requestId: string, anthropic = false) => {
  const mapped = Errors.toOpenAI(error)
  const decision = "decision" in error ? error.decision : undefined
  const body = anthropic ? Messages.errorBody(mapped.status, mapped.body.error.message) : JSON.stringify(mapped.body)
  writeJson(res, mapped.status, body, {
    ...mapped.headers,
    ...(decision !== undefined ? decisionHeaders(decision) : {}),
    "x-request-id": requestId
  })
}

/** The request's id: the client's `x-request-id` when it sent one, else a new one. */
const requestIdOf = (headers: IncomingHttpHeaders): string => {
  const sent = headers["x-request-id"]
  return typeof sent === "string" && sent !== "" ? sent : Router.newRequestId()
}

const envelope = (message: string, code: string) =>
  JSON.stringify({ error: { message, type: "invalid_request_error", param: null, code } })

const ROUTES_HINT =
  "this is an OpenAI-compatible gateway (POST /v1/chat/completions, POST /v1/responses, POST /v1/completions, " +
  "POST /v1/embeddings, " +
  "GET /v1/models; POST /v1/messages for Anthropic clients)"
const HEALTH = JSON.stringify({ status: "ok" })
const ROOT = JSON.stringify({
  name: "sluice",
  endpoints: [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/messages"
  ]
})

const notFound = (req: IncomingMessage, res: ServerResponse, requestId: string) =>
  writeJson(res, 404, envelope(`no route for ${req.method} ${req.url}; ${ROUTES_HINT}`, "not_found"), {
    "x-request-id": requestId
  })

const methodNotAllowed = (req: IncomingMessage, res: ServerResponse, allow: string, requestId: string) =>
  writeJson(
    res,
    405,
    envelope(`${req.method} is not allowed on ${req.url}; use ${allow} (${ROUTES_HINT})`, "method_not_allowed"),
    { allow, "x-request-id": requestId }
  )

/**
 * The deepest nesting of arrays and objects a request body may have; the body itself is level 1.
 * Real requests stay far below it (OpenAI accepts JSON schemas 10 levels deep); a deeper body is
 * answered 400 as soon as it is parsed, because every later step that walks it (validation, the
 * token counter, writing the upstream request) would otherwise have to be safe at any depth.
 */
export const MAX_NESTING = 64

/**
 * The path to the first array or object at level `levels + 1` when `value` is at level 1, or undefined;
 * looks no deeper than that, so its own recursion is bounded by `levels`.
 */
const tooDeep = (value: object, levels: number): Array<PropertyKey> | undefined => {
  if (levels === 0) return []
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const path = tooDeepBelow(i, value[i], levels)
      if (path !== undefined) return path
    }
    return undefined
  }
  for (const key in value) {
    const path = tooDeepBelow(key, (value as Record<string, unknown>)[key], levels)
    if (path !== undefined) return path
  }
  return undefined
}

/** {@link tooDeep} for the member `key` of a value at `levels`, with `key` in front of the path. */
const tooDeepBelow = (key: PropertyKey, item: unknown, levels: number): Array<PropertyKey> | undefined => {
  if (typeof item !== "object" || item === null) return undefined
  const path = tooDeep(item, levels - 1)
  path?.unshift(key)
  return path
}

/**
 * A body decoder for a wire schema, built once: unknown fields are kept; a body nested deeper than
 * {@link MAX_NESTING} is refused naming the path to where it goes too deep; an error names the deepest
 * bad field, with the choices of a union in one message
 * (`response_format.type: Expected one of "text", "json_object", "json_schema", actual "yaml"`). The
 * wire schemas transform nothing, so a document the schema accepts is used as parsed; only a
 * rejected one is decoded again, for the error.
 */
const decoder = <A, I>(schema: Schema.Schema<A, I>) => {
  const valid = CompiledIs.is(schema)
  const decode = Schema.decodeUnknownEither(schema, { onExcessProperty: "preserve", errors: "all" })
  return (text: string): Either.Either<A, Errors.InvalidRequest> => {
    let document: unknown
    try {
      document = JSON.parse(text)
    } catch (error) {
      return Either.left(
        new Errors.InvalidRequest({
          message: `the request body is not valid JSON: ${error instanceof Error ? error.message : String(error)}`
        })
      )
    }
    const deep = typeof document === "object" && document !== null ? tooDeep(document, MAX_NESTING) : undefined
    if (deep !== undefined) {
      const param = Config.formatPath(deep)
      return Either.left(
        new Errors.InvalidRequest({
          message: `${param}: arrays and objects nested deeper than ${MAX_NESTING} levels; flatten this value`,
          param
        })
      )
    }
    if (valid(document)) return Either.right(document)
    const decoded = decode(document)
    if (Either.isRight(decoded)) return Either.right(decoded.right)
    // The deepest issue is the most specific one; the first of those when several are as deep.
    const issue = Config.formatIssues(decoded.left).reduce<Config.Issue | undefined>(
      (deepest, next) => (deepest === undefined || next.path.length > deepest.path.length ? next : deepest),
      undefined
    )
    const param = issue?.at ?? ""
    return Either.left(
      new Errors.InvalidRequest({
        message:
          param === "" ? `invalid request: ${issue?.message ?? "malformed body"}` : `${param}: ${issue?.message}`,
        ...(param === "" ? {} : { param })
      })
    )
  }
}

const decodeChat = decoder(Wire.ChatCompletionRequest)
const decodeEmbeddings = decoder(Wire.EmbeddingsRequest)
const decodeMessages = decoder(Messages.MessagesRequest)
const decodeCountTokens = decoder(Messages.CountTokensRequest)
const decodeResponses = decoder(Responses.ResponsesRequest)
const decodeCompletions = decoder(Completions.CompletionsRequest)

const BEARER = /^Bearer\s+(.+)$/i

const bearer = (authorization: string | undefined): string | undefined => {
  if (authorization === undefined) return undefined
  const match = BEARER.exec(authorization)
  return match === null ? undefined : match[1]!.trim()
}

/**
 * What the router needs from the HTTP request: the request id, the headers and API key (pools'
 * `sticky.key` reads the session key from them), and the queue priority (the client key's, or its
 * `x-sluice-priority` header where the key may set it).
 */
const routeOptions = (
  env: Env,
  headers: IncomingHttpHeaders,
  client: Access.Client | undefined,
  requestId: string,
  body: string | undefined
): Router.RouteOptions => {
  const apiKey = bearer(headers["authorization"])
  const priority =
    client === undefined || (client.priority === 0 && !client.priorityHeader)
      ? undefined
      : env.options.access?.priority(client, headers)
  const route: { -readonly [K in keyof Router.RouteOptions]: Router.RouteOptions[K] } = {
    headers: headers as Readonly<Record<string, string | undefined>>,
    requestId
  }
  if (body !== undefined) route.body = body
  if (apiKey !== undefined) route.apiKey = apiKey
  if (priority !== undefined) route.priority = priority
  // A request its client abandoned is audited too (499, as proxies log it), and its hold settled.
  if (env.options.observe !== undefined || client?.tracked === true)
    route.onInterrupted = (decision) => finished(env, client, decision, 499)
  return route
}

/** The parent span a caller sent (`traceparent`, `b3`), if any. */
const parentOf = (headers: IncomingHttpHeaders): Tracer.ExternalSpan | undefined =>
  headers["traceparent"] === undefined && headers["b3"] === undefined && headers["x-b3-traceid"] === undefined
    ? undefined
    : Option.getOrUndefined(HttpTraceContext.fromHeaders(headers as unknown as Headers.Headers))

/**
 * What the request functions share, built once by {@link make} and passed explicitly (not closed
 * over). One record per handler, never one per request.
 */
interface Env {
  readonly router: Router.Service
  readonly options: Options
  /** Forks an Effect on the runtime of the built layer. */
  readonly run: (effect: Effect.Effect<void>) => Fiber.RuntimeFiber<void>
  /** The requests being served, interrupted when `make`'s scope closes. */
  readonly inFlight: Set<Fiber.RuntimeFiber<void>>
  /** Whether server spans are recorded (a tracer that exports is installed). */
  readonly tracing: boolean
  /** The time for client limits and budgets. */
  readonly clock: Clock.Clock
  /** SSE answers being written, ended with the in-band error when a drain runs out of time. */
  readonly streams: Set<ServerResponse>
  /** Set once a drain has started: new connections are refused and `/health/ready` says so. */
  draining: boolean
  /** The router's token counter, when the layer has one (for the estimates of client limits). */
  readonly counter: TokenCounter.Service | undefined
}

/** The Effect answering a request from its body text; see {@link withBody}. */
type BodyHandler = (
  env: Env,
  req: IncomingMessage,
  res: ServerResponse,
  requestId: string,
  text: string,
  client: Access.Client | undefined
) => Effect.Effect<void, Errors.RouterError>

// ---- Access hooks (client keys, limits, budgets, CORS): the rules live in Access.ts.

/** Answers a refusal of `Access` in OpenAI's envelope, or Anthropic's on `/v1/messages`. */
const writeRefusal = (res: ServerResponse, refusal: Refusal, requestId: string, anthropic = false) =>
  writeJson(
    res,
    refusal.status,
    anthropic ? Messages.errorBody(refusal.status, refusal.message, refusal.code) : refusal.body,
    {
      ...refusal.headers,
      "x-request-id": requestId
    }
  )

/**
 * Admits a client's request for `model` (see `Access.admit`): the refusal, or the client of this
 * request — holding `promptTokens` and `maxOutputTokens` against its key's TPM and budgets when the
 * key has them.
 */
const admission = (
  env: Env,
  client: Access.Client | undefined,
  model: string,
  promptTokens: number,
  maxOutputTokens: number | undefined
): Access.Client | Refusal | undefined =>
  // Anyone on an open gateway, and keys without limits or restrictions, need no check.
  client === undefined || (!client.tracked && !client.restricted) || env.options.access === undefined
    ? client
    : env.options.access.admit(client, model, env.clock.unsafeCurrentTimeMillis(), promptTokens, maxOutputTokens)

/**
 * The prompt tokens a request of `client` holds of its key (none when the key holds nothing): the
 * token counter's estimate of a chat request (which counts images as the providers meter them), else
 * the body's length at about 4 characters a token.
 */
const promptOf = (
  env: Env,
  client: Access.Client | undefined,
  text: string,
  chat?: Wire.ChatCompletionRequest
): number => {
  if (client?.holds !== true) return 0
  return chat !== undefined && env.counter !== undefined
    ? env.counter.estimate(chat, chat.model).tokens
    : TokenCounter.estimateText(text)
}

/** A refusal of `Access`, answered. */
const refuse = (res: ServerResponse, refusal: Refusal, requestId: string, anthropic = false): Effect.Effect<void> =>
  Effect.sync(() => writeRefusal(res, refusal, requestId, anthropic))

/** `effect` answering a client's request; what the request still holds of its key when it ends is given back. */
const holding = <E>(
  env: Env,
  client: Access.Client | undefined,
  effect: Effect.Effect<void, E>
): Effect.Effect<void, E> =>
  client?.held === undefined
    ? effect
    : Effect.ensuring(
        effect,
        Effect.sync(() => env.options.access?.release(client, env.clock.unsafeCurrentTimeMillis()))
      )

/**
 * The one hook at the end of a routed request: records what the client used (its tokens and spend)
 * and hands the decision to `observe` (metrics, audit log).
 */
const finished = (
  env: Env,
  client: Access.Client | undefined,
  decision: Decision.Decision,
  status: number,
  content?: { readonly request: unknown; readonly response?: unknown }
) => {
  if (client !== undefined && client.tracked)
    env.options.access?.record(client, decision, env.clock.unsafeCurrentTimeMillis())
  env.options.observe?.(decision, client?.name, status, content)
}

// ---- end of access hooks

/**
 * A streamed chat completion relayed as SSE. Masked between receiving the stream and installing its
 * release, so that a disconnect in between still frees the upstream connection and the stream's budget.
 */
const streamChat = (
  env: Env,
  res: ServerResponse,
  body: Wire.ChatCompletionRequest,
  route: Router.RouteOptions,
  client: Access.Client | undefined
) =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(restore(env.router.chatStream(body, route)), (routed) => {
      res.writeHead(200, streamHeaders(routed))
      const content = env.options.observeContent === true ? { request: body } : undefined
      return relayed(env, res, routed, client, restore(relay(res, routed.source, sse, ending)), content)
    })
  )

/**
 * Runs `relaying` (the relay of a routed stream written to `res`) with what every streaming endpoint
 * does around it: the answer is one of the drain's streams while it runs, and the stream's release —
 * and the client's usage, once the decision is complete — follow however it ends. Already
 * uninterruptible (the caller's mask): these handlers need no mask of their own.
 */
const relayed = (
  env: Env,
  res: ServerResponse,
  routed: Router.RoutedStream,
  client: Access.Client | undefined,
  relaying: Effect.Effect<void>,
  content?: { readonly request: unknown }
): Effect.Effect<void> => {
  env.streams.add(res)
  const release = Effect.zipRight(
    env.options.observe === undefined && (client === undefined || !client.tracked)
      ? routed.release
      : Effect.zipRight(
          routed.release,
          Effect.map(routed.decision, (decision) => finished(env, client, decision, res.statusCode, content))
        ),
    Effect.sync(() => env.streams.delete(res))
  )
  return Effect.matchCauseEffect(relaying, {
    onSuccess: () => release,
    onFailure: (cause) => Effect.zipRight(release, Effect.failCause(cause))
  })
}

/**
 * `POST /v1/chat/completions`. Called when the request is served (see {@link withBody}): the body is
 * decoded right away, not inside the Effect.
 */
const chat: BodyHandler = (env, req, res, requestId, text, key) => {
  const decoded = decodeChat(text)
  if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
  const body = decoded.right
  const client = admission(env, key, body.model, promptOf(env, key, text, body), Wire.requestedMaxTokens(body))
  if (client instanceof Refusal) return refuse(res, client, requestId)
  // A stream's request is serialized for the upstream anyway (it asks for usage): it does not keep
  // the body's text for its whole life.
  const route = routeOptions(env, req.headers, client, requestId, body.stream === true ? undefined : text)
  if (body.stream === true) return holding(env, client, streamChat(env, res, body, route, client))
  const answered = Effect.map(env.router.chat(body, route), (routed) =>
    answerWhole(env, res, client, routed, body, true)
  )
  return holding(env, client, answered)
}

/**
 * Writes a routed whole answer (the upstream's own bytes when the router kept them) and records its
 * decision — with the request, and the response when `withResponse`, where the audit keeps content.
 */
const answerWhole = (
  env: Env,
  res: ServerResponse,
  client: Access.Client | undefined,
  routed: Router.Routed<unknown>,
  request: unknown,
  withResponse: boolean
): void => {
  writeJson(res, 200, routed.text ?? JSON.stringify(routed.response), decisionHeaders(routed.decision))
  const content =
    env.options.observeContent !== true
      ? undefined
      : withResponse
        ? { request, response: routed.response }
        : { request }
  finished(env, client, routed.decision, 200, content)
}

/** `POST /v1/embeddings`; the body is decoded when the Effect runs. */
const embeddings: BodyHandler = (env, req, res, requestId, text, key) =>
  Effect.suspend(() => {
    const decoded = decodeEmbeddings(text)
    if (Either.isLeft(decoded)) return Effect.fail(decoded.left)
    const client = admission(env, key, decoded.right.model, promptOf(env, key, text), 0)
    if (client instanceof Refusal) return refuse(res, client, requestId)
    const answered = Effect.map(
      env.router.embeddings(decoded.right, routeOptions(env, req.headers, client, requestId, text)),
      (routed) => answerWhole(env, res, client, routed, decoded.right, false)
    )
    return holding(env, client, answered)
  })

/**
 * What `Messages` and `Responses` need of the gateway: its router, and how a stream they relay is
 * run (as the drain's, released, the client's usage recorded) and a whole answer's decision recorded.
 */
const endpoint = (env: Env, client: Access.Client | undefined): Messages.Endpoint => ({
  router: env.router,
  served: (decision, status = 200) => finished(env, client, decision, status),
  relayed: (res, routed, relaying) => relayed(env, res, routed, client, relaying)
})

/** A body field that is a number, else undefined (the endpoint modules keep unknown fields as sent). */
const numberField = (body: object, field: string): number | undefined => {
  const value = (body as Record<string, unknown>)[field]
  return typeof value === "number" ? value : undefined
}

/**
 * The handler of an endpoint that lives in its own module (`Messages`, `Responses`, `Completions`):
 * the body decoded, admitted against the client's key (its model, and the tokens it may hold: the
 * prompt and `maxOutputField`) with a refusal answered in Anthropic's envelope when `anthropic`, then
 * the module's `create` — which answers a body that did not decode itself — holding what it reserved
 * of the key until it ends.
 */
const moduleHandler =
  <A extends { readonly model: string }>(
    decode: (text: string) => Either.Either<A, Errors.InvalidRequest>,
    create: (
      endpoint: Messages.Endpoint,
      res: ServerResponse,
      requestId: string,
      decoded: Either.Either<A, Errors.InvalidRequest>,
      route: Router.RouteOptions
    ) => Effect.Effect<void, Errors.RouterError>,
    maxOutputField: string,
    anthropic = false
  ): BodyHandler =>
  (env, req, res, requestId, text, key) => {
    const decoded = decode(text)
    const client = Either.isRight(decoded)
      ? admission(env, key, decoded.right.model, promptOf(env, key, text), numberField(decoded.right, maxOutputField))
      : key
    if (client instanceof Refusal) return refuse(res, client, requestId, anthropic)
    const route = routeOptions(env, req.headers, client, requestId, undefined)
    return holding(env, client, create(endpoint(env, client), res, requestId, decoded, route))
  }

/**
 * `POST /v1/messages`: Anthropic's Messages API over the same router; it answers its own errors in
 * Anthropic's envelope (see `Messages`). The client's key may come as `x-api-key`.
 */
const messages: BodyHandler = moduleHandler(decodeMessages, Messages.create, "max_tokens", true)

/** `POST /v1/messages/count_tokens`. */
const countTokens: BodyHandler = (env, _req, res, requestId, text) =>
  Messages.countTokens(env.router, res, requestId, decodeCountTokens(text))

/** `POST /v1/responses`: OpenAI's Responses API over the same router (see `Responses`). */
const responses: BodyHandler = moduleHandler(decodeResponses, Responses.create, "max_output_tokens")

/** `POST /v1/completions`: the legacy endpoint, passed through to upstreams that have it (see `Completions`). */
const completions: BodyHandler = moduleHandler(decodeCompletions, Completions.create, "max_tokens")

/** `GET /v1/models`: the router's list, in OpenAI's shape. */
const models = (env: Env, res: ServerResponse, requestId: string): Effect.Effect<void, Errors.RouterError> =>
  Effect.map(env.router.models, (list) =>
    writeJson(res, 200, JSON.stringify({ object: "list", data: list }), { "x-request-id": requestId })
  )

/** `GET /v1/models/{id}`: a model the router serves (listed, or matched by a pool's pattern), else a 404 naming the known ones. */
const model = (env: Env, res: ServerResponse, requestId: string, id: string): Effect.Effect<void, Errors.RouterError> =>
  Effect.flatMap(env.router.models, (list) => {
    // A name a pool matches by a pattern is served too, so it is retrievable as well.
    const found = list.find((m) => m.id === id) ?? env.router.model?.(id)
    if (found === undefined) {
      return Effect.fail(new Errors.ModelNotFound({ model: id, known: list.map((m) => m.id) }))
    }
    return Effect.sync(() => writeJson(res, 200, JSON.stringify(found), { "x-request-id": requestId }))
  })

/** The model id of a `/v1/models/{id}` path (percent-decoded; ids may hold `/`), undefined when malformed. */
const modelId = (path: string): string | undefined => {
  try {
    return decodeURIComponent(path.slice("/v1/models/".length))
  } catch {
    return undefined
  }
}

/** Answers a failure: the error envelope, or a 500 (or a cut response) for a bug. */
const recover = (
  env: Env,
  client: Access.Client | undefined,
  res: ServerResponse,
  requestId: string,
  cause: Cause.Cause<Errors.RouterError>
): Effect.Effect<void> => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure))
    return Effect.sync(() => {
      const error = failure.value
      writeError(res, error, requestId)
      if ("decision" in error && error.decision !== undefined) finished(env, client, error.decision, res.statusCode)
    })
  if (Cause.isInterruptedOnly(cause)) return Effect.void
  return Effect.zipRight(
    Effect.logError("request failed unexpectedly", cause),
    Effect.sync(() => {
      if (res.headersSent) res.destroy()
      else
        writeJson(res, 500, envelope("internal error in the gateway", "internal_error"), {
          "x-request-id": requestId
        })
    })
  )
}

/**
 * Runs one request's Effect — in an `http.server` span when `env.tracing` (the parent of the
 * router's spans). The fiber is tracked in `env.inFlight` until it ends; a disconnect interrupts it.
 */
const serve = (
  env: Env,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  requestId: string,
  effect: Effect.Effect<void, Errors.RouterError>,
  client?: Access.Client
) => {
  const handled = Effect.catchAllCause(effect, (cause) => recover(env, client, res, requestId, cause))
  let program = handled
  if (env.tracing) {
    const method = req.method ?? "GET"
    const parent = parentOf(req.headers)
    program = Effect.useSpan(
      `http.server ${method}`,
      {
        kind: "server",
        captureStackTrace: false,
        attributes: { "http.request.method": method, "url.path": path, "sluice.request_id": requestId },
        ...(parent !== undefined ? { parent } : {})
      },
      (span) =>
        handled.pipe(
          Effect.ensuring(Effect.sync(() => span.attribute("http.response.status_code", res.statusCode))),
          Effect.withParentSpan(span)
        )
    )
  }
  const inFlight = env.inFlight
  const fiber = env.run(program)
  inFlight.add(fiber)
  fiber.addObserver(() => {
    inFlight.delete(fiber)
  })
  res.once("close", () => {
    if (!res.writableFinished) fiber.unsafeInterruptAsFork(FiberId.none)
  })
}

/**
 * Reads the body, then {@link serve}s `handle`'s Effect for it. Past `env.options.maxBodyBytes`
 * (declared or read) it answers 413 and drains the rest; bytes that are not UTF-8 are a 400.
 */
const withBody = (
  env: Env,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  requestId: string,
  handle: BodyHandler,
  client: Access.Client | undefined
) => {
  const limit = env.options.maxBodyBytes
  // Anthropic's clients get their errors in Anthropic's envelope, before routing too.
  const anthropic = path.startsWith("/v1/messages")
  const tooLarge = () => {
    writeError(res, new Errors.RequestTooLarge({ limitBytes: limit }), requestId, anthropic)
    // The rest of the body is read and dropped, so the connection stays usable.
    req.resume()
  }
  const declared = Number(req.headers["content-length"])
  if (Number.isFinite(declared) && declared > limit) return tooLarge()
  const chunks: Array<Buffer> = []
  let size = 0
  let refused = false
  req.on("data", (chunk: Buffer) => {
    if (refused) return
    size += chunk.length
    if (size > limit) {
      refused = true
      return tooLarge()
    }
    chunks.push(chunk)
  })
  req.on("end", () => {
    if (refused) return
    const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)
    // The listeners live as long as the request: they must not keep the body's bytes too.
    chunks.length = 0
    // Decoding would turn bad bytes into U+FFFD silently and send upstream what the client never wrote.
    if (!isUtf8(bytes)) {
      const error = new Errors.InvalidRequest({
        message: "the request body is not valid UTF-8; send it encoded as UTF-8"
      })
      if (anthropic) return writeError(res, error, requestId, true)
      return serve(env, req, res, path, requestId, Effect.fail(error))
    }
    serve(env, req, res, path, requestId, handle(env, req, res, requestId, bytes.toString("utf8"), client), client)
  })
  req.on("error", (error) => {
    if (refused) return
    refused = true
    writeError(
      res,
      new Errors.InvalidRequest({ message: `could not read the request body: ${error.message}` }),
      requestId,
      anthropic
    )
  })
}

/**
 * The client of a `/v1` request (see `Access`): undefined without access rules, or the refusal —
 * already answered — when it bears no valid key.
 */
const clientOf = (
  env: Env,
  req: IncomingMessage,
  res: ServerResponse,
  requestId: string,
  anthropic = false
): Access.Client | undefined | null => {
  const access = env.options.access
  if (access === undefined) return undefined
  const client = access.authenticate(req.headers)
  if (!(client instanceof Refusal)) return client
  writeRefusal(res, client, requestId, anthropic)
  return null
}

/** Sets the CORS headers of an allowed origin; true when the request was a preflight, answered here. */
const corsPreflight = (env: Env, req: IncomingMessage, res: ServerResponse, requestId: string): boolean => {
  const headers = env.options.access?.cors(req.headers["origin"])
  if (headers === undefined) return false
  for (const name in headers) res.setHeader(name, headers[name]!)
  if (req.method !== "OPTIONS") return false
  res.writeHead(204, { "x-request-id": requestId })
  res.end()
  return true
}

const LIVE = JSON.stringify({ status: "live" })

/** `GET /health/ready`: 503 while draining or when no pool has an upstream that can take requests. */
const ready = (env: Env, res: ServerResponse, requestId: string) => {
  if (env.draining) return writeJson(res, 503, JSON.stringify({ status: "draining" }), { "x-request-id": requestId })
  const readiness = env.options.readiness
  if (readiness === undefined)
    return writeJson(res, 200, JSON.stringify({ status: "ready" }), { "x-request-id": requestId })
  env.run(
    Effect.map(readiness, (r) =>
      writeJson(
        res,
        r.ready ? 200 : 503,
        JSON.stringify({ status: r.ready ? "ready" : "unavailable", pools: r.pools }),
        {
          "x-request-id": requestId
        }
      )
    )
  )
}

const SHUTTING_DOWN = "the gateway is shutting down; retry on another instance"
const drainingEnvelope = (_status: number, message: string) => envelope(message, "shutting_down")

/** A request on a kept-alive connection while draining: 503, and the connection closes. */
const refuseDraining = (res: ServerResponse, requestId: string, anthropic = false) =>
  writeJson(res, 503, (anthropic ? Messages.errorBody : drainingEnvelope)(503, SHUTTING_DOWN), {
    "x-request-id": requestId,
    connection: "close",
    "retry-after": "1"
  })

/**
 * A `POST` endpoint with a body: 405 for another method, 503 while draining, the client's key
 * checked, then `handler` on the body (refusals in Anthropic's envelope when `anthropic`).
 */
const posted = (
  env: Env,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  id: string,
  handler: BodyHandler,
  anthropic = false
): void => {
  if (req.method !== "POST") return methodNotAllowed(req, res, "POST", id)
  if (env.draining) return refuseDraining(res, id, anthropic)
  const client = clientOf(env, req, res, id, anthropic)
  if (client !== null) withBody(env, req, res, path, id, handler, client)
}

/**
 * Answers one HTTP request: routes it by path and method to the handlers above; the health
 * endpoints and `/` are answered synchronously, without an Effect.
 */
const handle = (env: Env, req: IncomingMessage, res: ServerResponse): void => {
  const url = req.url ?? "/"
  const query = url.indexOf("?")
  const path = query === -1 ? url : url.slice(0, query)
  const method = req.method
  const id = requestIdOf(req.headers)
  if (req.headers["origin"] !== undefined && corsPreflight(env, req, res, id)) return
  switch (path) {
    case "/v1/chat/completions":
    case "/chat/completions":
      return posted(env, req, res, path, id, chat)
    case "/v1/embeddings":
    case "/embeddings":
      return posted(env, req, res, path, id, embeddings)
    case "/v1/responses":
    case "/responses":
      return posted(env, req, res, path, id, responses)
    case "/v1/completions":
    case "/completions":
      return posted(env, req, res, path, id, completions)
    case "/v1/messages":
      // Anthropic's SDK sends its key as `x-api-key`: it counts as the bearer token.
      Messages.acceptApiKey(req.headers)
      return posted(env, req, res, path, id, messages, true)
    case "/v1/messages/count_tokens":
      Messages.acceptApiKey(req.headers)
      return posted(env, req, res, path, id, countTokens, true)
    case "/v1/models":
    case "/models":
      if (method !== "GET") return methodNotAllowed(req, res, "GET", id)
      if (clientOf(env, req, res, id) === null) return
      return serve(env, req, res, path, id, models(env, res, id))
    case "/health":
    case "/health/live":
      return method === "GET"
        ? writeJson(res, 200, path === "/health" ? HEALTH : LIVE, { "x-request-id": id })
        : methodNotAllowed(req, res, "GET", id)
    case "/health/ready":
      return method === "GET" ? ready(env, res, id) : methodNotAllowed(req, res, "GET", id)
    case "/metrics":
      if (env.options.metrics === undefined) return notFound(req, res, id)
      return method === "GET" ? env.options.metrics(req, res) : methodNotAllowed(req, res, "GET", id)
    case "/":
      return method === "GET"
        ? writeJson(res, 200, ROOT, { "x-request-id": id })
        : methodNotAllowed(req, res, "GET", id)
    default:
      if (env.options.admin !== undefined && (path === "/admin" || path.startsWith("/admin/")))
        return env.options.admin(req, res)
      if (path.startsWith("/v1/models/") && path.length > "/v1/models/".length) {
        const wanted = modelId(path)
        if (wanted === undefined) return notFound(req, res, id)
        if (method !== "GET") return methodNotAllowed(req, res, "GET", id)
        if (clientOf(env, req, res, id) === null) return
        return serve(env, req, res, path, id, model(env, res, id, wanted))
      }
      if (env.options.dashboard !== undefined && (path === "/dashboard" || path.startsWith("/dashboard/")))
        return env.options.dashboard(req, res)
      return notFound(req, res, id)
  }
}

/** The built gateway: its request handler, and the state a drain needs. */
const build = Effect.gen(function* () {
  const runtime = yield* Effect.runtime<never>()
  const services = FiberRefs.getOrDefault(runtime.fiberRefs, DefaultServices.currentServices)
  const env: Env = {
    router: yield* Router.Router,
    options: yield* GatewayOptions,
    run: Runtime.runFork(runtime),
    inFlight: new Set<Fiber.RuntimeFiber<void>>(),
    // Server spans only when a tracer is installed: Effect's built-in one exports nothing.
    tracing: Tracing.exported({ getFiberRef: (ref) => FiberRefs.getOrDefault(runtime.fiberRefs, ref) }),
    clock: Context.get(services, Clock.Clock),
    streams: new Set<ServerResponse>(),
    draining: false,
    counter: Option.getOrUndefined(yield* Effect.serviceOption(TokenCounter.TokenCounter))
  }
  yield* Effect.addFinalizer(() => Fiber.interruptAll(env.inFlight))
  const handler: Handler = (req, res) => handle(env, req, res)
  return { env, handler }
})

/** The in-band event that ends a stream cut by a drain that ran out of time (no `[DONE]` follows). */
const DRAIN_CUT = `data: ${JSON.stringify({
  error: {
    message: "the gateway shut down before this stream finished; retry the request",
    type: "server_error",
    param: null,
    code: "shutting_down"
  }
})}\n\n`

/**
 * Drains the gateway: refuse new connections and report not-ready at once, let what is in flight
 * finish for up to `drainMs`, then end the streams left with the in-band error and interrupt the
 * rest.
 */
const drain = (env: Env, server: Server, drainMs: number): Effect.Effect<void> =>
  Effect.gen(function* () {
    env.draining = true
    server.close()
    server.closeIdleConnections()
    const pending = [...env.inFlight]
    if (drainMs > 0)
      yield* Effect.logWarning(`draining: ${pending.length} requests in flight may take up to ${drainMs} ms to finish`)
    // A finalizer runs uninterruptibly: the wait must be made interruptible for the timeout to end it.
    if (pending.length > 0 && drainMs > 0)
      yield* Effect.timeout(Effect.interruptible(Fiber.awaitAll(pending)), drainMs).pipe(Effect.ignore)
    for (const res of env.streams) if (!res.writableEnded) res.end(DRAIN_CUT)
    yield* Fiber.interruptAll(env.inFlight)
  })

/**
 * Builds the gateway's request handler over the router. Requests in flight when the scope closes
 * are interrupted (their upstream calls cancelled).
 */
export const make: Effect.Effect<Handler, never, Router.Router | GatewayOptions | Scope.Scope> = Effect.map(
  build,
  (built) => built.handler
)

/** How the gateway stops. */
export interface StopOptions {
  /**
   * When the layer closes (`SIGTERM`), how long requests and streams in flight may take to finish,
   * in milliseconds; default 0 (interrupted at once). Meanwhile new connections are refused and
   * `/health/ready` answers 503; past it, streams left end with the in-band error.
   */
  readonly drainMs?: number
}

/**
 * The gateway listening on `host:port` (0 picks a free port; {@link Listening} has the bound one).
 * Closing the layer drains it (see {@link StopOptions.drainMs}), interrupts what is left and closes
 * every connection.
 */
export const layer = (
  address: Address,
  stop: StopOptions = {}
): Layer.Layer<Listening, ListenError, Router.Router | GatewayOptions> =>
  Layer.scoped(
    Listening,
    Effect.gen(function* () {
      const { env, handler } = yield* build
      const server = yield* Effect.acquireRelease(
        Effect.async<Server, ListenError>((resume) => {
          const server = createServer({ keepAlive: true, noDelay: true }, handler)
          const onError = (error: Error) =>
            resume(
              Effect.fail(
                new ListenError({
                  message: `could not listen on ${address.host}:${address.port}: ${error.message}`,
                  cause: error
                })
              )
            )
          server.once("error", onError)
          server.listen(address.port, address.host, () => {
            server.off("error", onError)
            resume(Effect.succeed(server))
          })
        }),
        (server) =>
          Effect.zipRight(
            drain(env, server, stop.drainMs ?? 0),
            Effect.async<void>((resume) => {
              server.close(() => resume(Effect.void))
              server.closeAllConnections()
            })
          )
      )
      const bound = server.address()
      return {
        host: address.host,
        port: typeof bound === "object" && bound !== null ? bound.port : address.port
      }
    })
  )
