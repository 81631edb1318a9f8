/**
 * The OpenAI-compatible provider: OpenAI, Groq, Mistral, Together, vLLM, Ollama's `/v1`, LM Studio
 * and the simulated upstream. Requests go out as the client sent them (unknown fields included) with
 * only `model` replaced; streamed chunks come back untouched as the JSON text of each SSE event, so
 * nothing is re-encoded. Usage is read from the response, or from the final chunk when streaming.
 *
 * Upstream calls go over the shared transport (`internal/transport.ts`): one keep-alive undici
 * `Agent`, one `Effect.async` per call, and an SSE reader that hands the router every event of one
 * socket read in one chunk. Every failure is built there, with the upstream's credentials (its API
 * key, secret-looking configured headers) scrubbed out of whatever the upstream sent back.
 */
import { Errors, Provider, Wire } from "@sluice/core"
import type { StreamEvent, Topology } from "@sluice/core"
import { Effect } from "effect"
import type { Scope } from "effect"
import type { Answer, Auth, StreamDecoder } from "./internal/transport.js"
import * as Forwarding from "./internal/forward.js"
import { scan, Scanned } from "./internal/jsonScan.js"
import {
  bearer,
  decodeWhole,
  doneDecoder,
  makeClient,
  malformedEvent,
  opened,
  streamError
} from "./internal/transport.js"
import { refuse, Unsupported } from "./internal/unsupported.js"

type Upstream = Topology.Upstream

/**
 * The body to send: the client's own bytes when the call changes nothing in them (the model is the
 * one asked for, and nothing else is set), else the request serialized with the upstream's model
 * and `extra` fields.
 */
const payloadOf = <R extends { readonly model: string }>(
  call: Provider.Call<R>,
  extra: Readonly<Record<string, unknown>> | undefined
): string =>
  call.body !== undefined && extra === undefined && call.model === call.request.model
    ? call.body
    : Wire.stringify({ ...call.request, model: call.model, ...extra })

/**
 * One SSE payload as a stream event, or a failure: the upstream's in-band error, or a payload that is
 * not a JSON object (a mangled event, after which nothing in the stream can be trusted). Every payload
 * is checked; most are only scanned (see `jsonScan`), and the few that carry an error or usage are
 * parsed, once.
 */
const toEvent = (upstream: Upstream, data: string): StreamEvent.StreamEvent | Errors.UpstreamError => {
  const scanned = scan(data)
  if (scanned === Scanned.Plain) return { data }
  if (scanned === Scanned.Invalid) return malformedEvent(upstream, data)
  let chunk: unknown
  try {
    chunk = JSON.parse(data)
  } catch {
    chunk = undefined
  }
  if (typeof chunk !== "object" || chunk === null || Array.isArray(chunk)) return malformedEvent(upstream, data)
  const { choices, error, usage } = chunk as Partial<Wire.ChatCompletionChunk> & { readonly error?: unknown }
  if (error !== undefined && error !== null) return streamError(upstream, chunk, data)
  if (typeof usage !== "object" || usage === null) return { data }
  return { data, usage, usageOnly: Array.isArray(choices) && choices.length === 0 }
}

const decoders = new WeakMap<Upstream, StreamDecoder>()

/**
 * The decoder of an upstream's OpenAI chunks: each payload checked (parsed once, usage read) and
 * passed through as it came. Stateless, so one per upstream.
 */
export const streamDecoder = (upstream: Upstream): StreamDecoder => {
  let decoder = decoders.get(upstream)
  if (decoder === undefined) {
    decoder = doneDecoder((payload) => toEvent(upstream, payload))
    decoders.set(upstream, decoder)
  }
  return decoder
}

/** A whole answer: its JSON when 2xx and OpenAI-shaped (with its bytes and rate limits), an `UpstreamError` otherwise. */
const decodeAnswer = <A>(
  upstream: Upstream,
  answer: Answer,
  isValid: (value: unknown) => boolean
): Effect.Effect<Provider.Answer<A>, Errors.UpstreamError> =>
  // Nothing was translated: the client gets the upstream's bytes.
  decodeWhole(upstream, answer, (value) => (isValid(value) ? (value as A) : undefined), "an OpenAI-shaped response", {
    relay: true
  })

const isCompletion = (v: unknown): boolean =>
  typeof v === "object" && v !== null && Array.isArray((v as { choices?: unknown }).choices)

const isEmbeddings = (v: unknown): boolean =>
  typeof v === "object" && v !== null && Array.isArray((v as { data?: unknown }).data)

/** How one OpenAI-compatible service differs from OpenAI. */
export interface Options {
  /** The headers that carry the API key. Default `Authorization: Bearer <key>`. */
  readonly auth?: Auth
  /**
   * Request fields the service refuses (Mistral answers 422 to `stream_options`): left out of what
   * is sent. A stream's usage then comes from the service's own final chunk, where it sends one.
   */
  readonly drop?: ReadonlyArray<string>
  /**
   * Rewrites a chat request (after `drop`) that the service would refuse as sent, for the upstream
   * model `model`: renamed fields, fields it does not define, ids it does not accept. Undefined when
   * the request needs no change. See `Providers.presets` for which services have one.
   */
  readonly adapt?: (request: Readonly<Record<string, unknown>>, model: string) => Record<string, unknown> | undefined
  /**
   * The same for an embeddings request; or what the service cannot take for `model` at all (the call
   * then fails with the capability refusal, and the router tries another upstream).
   */
  readonly adaptEmbeddings?: (
    request: Readonly<Record<string, unknown>>,
    model: string
  ) => Record<string, unknown> | Unsupported | undefined
}

/** A request's body without the fields `drop` names; undefined when it has none of them. */
const without = (request: Readonly<Record<string, unknown>>, drop: ReadonlyArray<string>) => {
  if (!drop.some((key) => request[key] !== undefined)) return undefined
  const out: Record<string, unknown> = { ...request }
  for (const key of drop) delete out[key]
  return out
}

/**
 * Makes the OpenAI-compatible provider. Its undici `Agent` (keep-alive connections per upstream
 * origin) is closed with the scope.
 */
export const make: Effect.Effect<Provider.Service, never, Scope.Scope> = Effect.suspend(() => makeWith({}))

/** The OpenAI-compatible provider for a service with its own auth header or refused fields (see {@link Options}). */
export const makeWith = (options: Options): Effect.Effect<Provider.Service, never, Scope.Scope> =>
  Effect.gen(function* () {
    const client = yield* makeClient({ auth: options.auth ?? bearer })
    const drop = options.drop ?? []
    const adapt = options.adapt
    /** The call with the refused fields left out of its request, adapted (and no raw body to forward). */
    const clean = <R extends { readonly model: string }>(call: Provider.Call<R>): Provider.Call<R> => {
      if (drop.length === 0 && adapt === undefined) return call
      let request = drop.length === 0 ? undefined : without(call.request, drop)
      if (adapt !== undefined) request = adapt(request ?? call.request, call.model) ?? request
      return request === undefined ? call : { request: request as R, model: call.model, traced: call.traced }
    }

    const json = <A>(
      upstream: Upstream,
      path: string,
      payload: string,
      isValid: (value: unknown) => boolean,
      traced: boolean | undefined
    ): Effect.Effect<Provider.Answer<A>, Errors.UpstreamError> =>
      // Only stream requests open a stream: a whole answer comes back, decoded as it ends.
      client.whole({ upstream, path, payload, traced }, (answer) => decodeAnswer<A>(upstream, answer, isValid))

    const chat: Provider.Service["chat"] = (upstream, whole) => {
      const call = clean(whole)
      return json<Wire.ChatCompletion>(
        upstream,
        "/chat/completions",
        payloadOf(call, call.request.stream === true ? { stream: false } : undefined),
        isCompletion,
        call.traced
      )
    }

    const adaptEmbeddings = options.adaptEmbeddings
    const embeddings: Provider.Service["embeddings"] = (upstream, whole) => {
      const adapted = adaptEmbeddings?.(whole.request, whole.model)
      if (adapted instanceof Unsupported) return Effect.fail(refuse(upstream, upstream.provider, adapted))
      const call =
        adapted === undefined
          ? whole
          : { request: adapted as unknown as Wire.EmbeddingsRequest, model: whole.model, traced: whole.traced }
      return json<Wire.EmbeddingsResponse>(
        upstream,
        "/embeddings",
        payloadOf(call, undefined),
        isEmbeddings,
        call.traced
      )
    }

    const chatStream: Provider.Service["chatStream"] = (upstream, call) => {
      return Effect.flatMap(
        client.stream(
          {
            upstream,
            path: "/chat/completions",
            payload: payloadOf(clean(call), { stream: true }),
            traced: call.traced,
            openTimeoutMs: call.openTimeoutMs
          },
          streamDecoder(upstream)
        ),
        (answer) => opened(upstream, answer)
      )
    }

    // Legacy completions and the Responses API: passed through as the client wrote them.
    const forward: Provider.Service["forward"] = (upstream, call) =>
      json<unknown>(
        upstream,
        `/${call.request.endpoint}`,
        Forwarding.payload(call, false),
        Forwarding.isAnswer(call.request.endpoint),
        call.traced
      )

    const forwardStream: Provider.Service["forwardStream"] = (upstream, call) =>
      Effect.flatMap(
        client.stream(
          {
            upstream,
            path: `/${call.request.endpoint}`,
            payload: Forwarding.payload(call, true),
            traced: call.traced,
            openTimeoutMs: call.openTimeoutMs
          },
          Forwarding.streamDecoder(upstream, call.request.endpoint)
        ),
        (answer) => opened(upstream, answer)
      )

    return { chat, chatStream, embeddings, forward, forwardStream, enforcesTimeout: () => true }
  })
