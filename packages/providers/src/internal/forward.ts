/**
 * Endpoints an OpenAI-compatible upstream serves that Sluice passes through rather than translates
 * (see `Provider.Forward`): OpenAI's legacy `POST /completions` and its `POST /responses`. What is
 * sent (the client's body with the upstream's model), what a whole answer must look like, and how
 * each streamed payload is checked: parsed once, usage read into the chat shape, content marked.
 */
import type { Errors, Provider, StreamEvent, Topology } from "@sluice/core"
import { Wire } from "@sluice/core"
import type { StreamDecoder } from "./transport.js"
import { unfoldId } from "./geminiSignature.js"
import { doneDecoder, END, malformedEvent, streamError } from "./transport.js"

type Upstream = Topology.Upstream
type Body = Readonly<Record<string, unknown>>

const isObject = (u: unknown): u is Body => typeof u === "object" && u !== null && !Array.isArray(u)

/**
 * The body to send: the client's with the upstream's model and `stream` as the call is; a streamed
 * completions request always asks for usage (budgets learn the real count; the router drops the
 * usage-only chunk again for a client that did not ask).
 */
export const payload = (call: Provider.Call<Provider.Forward>, stream: boolean): string => {
  const body = call.request.endpoint === "responses" ? withPlainCallIds(call.request.body) : call.request.body
  if (!stream) return Wire.stringify({ ...body, model: call.model, stream: false })
  if (call.request.endpoint === "responses") return Wire.stringify({ ...body, model: call.model, stream: true })
  const options = isObject(body["stream_options"]) ? body["stream_options"] : {}
  return Wire.stringify({
    ...body,
    model: call.model,
    stream: true,
    stream_options: { ...options, include_usage: true }
  })
}

/**
 * A Responses body whose function-call items carry their own call ids: a client of `/v1/responses`
 * sends back the ids the gateway gave it, and a call a Gemini upstream made carries its thought
 * signature folded into its id (see `geminiSignature`) — hundreds of characters, which OpenAI's
 * Responses API refuses past 64. An upstream that serves the API itself gets the plain ids (it has
 * no use for Gemini's signature). The body as it is when no id is folded.
 */
const withPlainCallIds = (body: Body): Body => {
  const input = body["input"]
  if (!Array.isArray(input)) return body
  let items: Array<unknown> | undefined
  for (const [i, item] of input.entries()) {
    if (!isObject(item) || typeof item["call_id"] !== "string") continue
    const { id, signature } = unfoldId(item["call_id"])
    if (signature === undefined) continue
    items ??= [...input]
    items[i] = { ...item, call_id: id }
  }
  return items === undefined ? body : { ...body, input: items }
}

/** Whether a whole answer has the endpoint's shape: choices for completions, a `response` object for Responses. */
export const isAnswer =
  (endpoint: Provider.Forward["endpoint"]) =>
  (value: unknown): boolean =>
    isObject(value) && (endpoint === "completions" ? Array.isArray(value["choices"]) : value["object"] === "response")

const parse = (data: string): Body | undefined => {
  try {
    const value: unknown = JSON.parse(data)
    return isObject(value) ? value : undefined
  } catch {
    return undefined
  }
}

/** A legacy completions chunk: like a chat chunk, but every chunk with a choice is content. */
const completionsEvent = (upstream: Upstream, data: string): StreamEvent.StreamEvent | Errors.UpstreamError => {
  const chunk = parse(data)
  if (chunk === undefined) return malformedEvent(upstream, data)
  if (chunk["error"] !== undefined && chunk["error"] !== null) return streamError(upstream, chunk, data)
  const choices = chunk["choices"]
  const content = Array.isArray(choices) && choices.length > 0
  const usage = isObject(chunk["usage"]) ? Wire.toChatUsage(chunk["usage"]) : undefined
  if (usage === undefined) return { data, content }
  return { data, usage, usageOnly: !content, content }
}

/** The Responses events that open a stream before any content. */
const OPENING = new Set([
  "response.created",
  "response.in_progress",
  "response.queued",
  "response.output_item.added",
  "response.content_part.added"
])

/** The Responses events that end a complete stream (with its usage). */
const FINAL = new Set(["response.completed", "response.incomplete"])

/** A Responses event; its final one ends the stream, `error` and `response.failed` fail it. */
const responsesEvent = (
  upstream: Upstream,
  data: string,
  out: Array<StreamEvent.StreamEvent>
): typeof END | Errors.UpstreamError | undefined => {
  const event = parse(data)
  const type = event?.["type"]
  if (event === undefined || typeof type !== "string") return malformedEvent(upstream, data)
  if (type === "error") return streamError(upstream, event, data)
  const response = isObject(event["response"]) ? event["response"] : undefined
  if (type === "response.failed") return streamError(upstream, response ?? event, data)
  if (!FINAL.has(type)) {
    out.push({ data, content: !OPENING.has(type) })
    return undefined
  }
  const usage = response !== undefined && isObject(response["usage"]) ? Wire.toChatUsage(response["usage"]) : undefined
  out.push(usage === undefined ? { data, content: true } : { data, usage, content: true })
  return END
}

/** The decoder of a forwarded stream of `endpoint`. */
export const streamDecoder = (upstream: Upstream, endpoint: Provider.Forward["endpoint"]): StreamDecoder =>
  endpoint === "completions"
    ? doneDecoder((payload) => completionsEvent(upstream, payload))
    : {
        framing: "sse",
        endMarker: "response.completed",
        decode: (payload, out) => responsesEvent(upstream, payload, out)
      }
