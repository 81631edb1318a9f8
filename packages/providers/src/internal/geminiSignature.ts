/**
 * Where a Gemini thought signature travels outside Gemini. Inside the pipeline a tool call carries
 * it as `extra_content.google.thought_signature` (as Google's OpenAI-compatible API writes it).
 * Clients of the Anthropic Messages and Responses endpoints keep no such field when they replay a
 * call — what every one of them sends back is the call's id (`tool_use.id` / `tool_use_id`,
 * `call_id`) — so there the signature is folded into the id.
 */

type Json = Record<string, unknown>

const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

/** Between a call's own id and its folded signature; no id Sluice or a provider writes contains it. */
const SEPARATOR = "__thought__"

/** Standard base64, padded: what Gemini writes for the signature's bytes. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/** The thought signature an OpenAI tool call carries, if any. */
export const signatureOf = (call: unknown): string | undefined => {
  const extra = isObject(call) ? call["extra_content"] : undefined
  const google = isObject(extra) ? extra["google"] : undefined
  const signature = isObject(google) ? google["thought_signature"] : undefined
  return typeof signature === "string" && signature !== "" ? signature : undefined
}

/**
 * What Gemini takes in place of a thought signature on a function call it did not make — a history
 * begun on another provider (a failover), or a call injected by the application: Google documents
 * this value as skipping the validation that otherwise refuses the request with a 400.
 */
export const SKIP_VALIDATION = "skip_thought_signature_validator"

/**
 * Gemini 3 and later validate the signatures of function calls (2.x models do not). The moving
 * aliases (`gemini-flash-latest`, `gemini-pro-latest`...) name whichever model Google points them at,
 * a Gemini 3 one by now: they are treated as validating, since the stand-in is only a value Google
 * documents as accepted in place of a signature, where a missing one is a 400.
 */
export const validatesSignatures = (model: string): boolean =>
  /^(?:models\/)?gemini-(?:[3-9]|\d{2,}|[a-z-]*latest$)/.test(model)

/** The fields that carry `signature` on an OpenAI tool call. */
export const signatureFields = (signature: string): Json => ({
  extra_content: { google: { thought_signature: signature } }
})

/**
 * The id a client of the Messages or Responses endpoint gets for an OpenAI tool call: its own id,
 * with its thought signature folded in when it has one (base64url, so that the id keeps to the
 * `[a-zA-Z0-9_-]` Anthropic's tool ids allow). A signature that is not padded standard base64 is
 * not folded: it could not be given back exactly.
 */
export const foldedId = (call: unknown): unknown => {
  const id = isObject(call) ? call["id"] : undefined
  const signature = signatureOf(call)
  if (typeof id !== "string" || signature === undefined || !BASE64.test(signature)) return id
  return `${id}${SEPARATOR}${signature.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")}`
}

/**
 * A replayed id split into the call's own id and the thought signature folded into it (see
 * {@link foldedId}); an id without one is returned as it is. The pipeline sees only the call's own
 * id, so an upstream other than Gemini gets the ids it gave or expects.
 */
export const unfoldId = (id: unknown): { readonly id: unknown; readonly signature: string | undefined } => {
  if (typeof id !== "string") return { id, signature: undefined }
  const at = id.indexOf(SEPARATOR)
  if (at < 0) return { id, signature: undefined }
  const tail = id.slice(at + SEPARATOR.length)
  if (!/^[A-Za-z0-9_-]+$/.test(tail) || tail.length % 4 === 1) return { id, signature: undefined }
  const folded = tail.replace(/-/g, "+").replace(/_/g, "/")
  return { id: id.slice(0, at), signature: folded + "=".repeat((4 - (folded.length % 4)) % 4) }
}
