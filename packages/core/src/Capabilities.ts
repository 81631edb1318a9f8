/**
 * Capabilities: what a request needs of an upstream (images, audio, tools, structured output, more
 * than one choice, embeddings) and the guard that never sends it where that is missing. An upstream's
 * capabilities are its provider kind's, narrowed by its own `capabilities` list (`Topology`). An
 * upstream that lacks one is excluded with the reason; when every upstream of the pool and its
 * fallbacks is excluded for it, the answer is a 400 naming the feature and the upstreams
 * ({@link unsupported}) — never a request sent somewhere that would drop the feature silently.
 */
import { Effect } from "effect"
import type { Capability } from "./Config.js"
import { OPT_IN_CAPABILITIES } from "./Config.js"
import type { Exclusion, NoUpstreamAvailable } from "./Errors.js"
import type { Guard, Release } from "./Guard.js"
import type { ChatCompletionRequest } from "./Wire.js"

/** The stage name of a capability exclusion. */
export const STAGE = "capabilities"

/** What an embeddings request needs. */
export const NEEDS_EMBEDDINGS: ReadonlyArray<Capability> = ["embeddings"]

/** What an embeddings request of a chosen size (`dimensions`) needs: an API that can shorten its vectors. */
export const NEEDS_EMBEDDINGS_DIMENSIONS: ReadonlyArray<Capability> = ["embeddings", "dimensions"]

const IMAGE_PARTS = new Set(["image_url", "input_image", "image"])

/** True when an image part points at a URL rather than carrying its data inline (`data:`). */
const byUrl = (part: { readonly [key: string]: unknown }): boolean => {
  const image = part["image_url"]
  const url =
    typeof image === "string"
      ? image
      : typeof image === "object" && image !== null
        ? (image as { url?: unknown }).url
        : undefined
  return typeof url === "string" && !url.startsWith("data:")
}

/**
 * The capabilities a chat request needs: `vision` for an image part (and `image_url` when it is a
 * URL), `file` for a file part, `audio` for audio input, `tools` when it offers tools (and
 * `tool_choice` when it forces one), `json_schema` for structured output with a schema, `n` for more
 * than one choice, `logprobs` for `logprobs` / `top_logprobs`. Undefined when it needs none (most
 * requests): nothing to check then.
 */
export const needsOf = (request: ChatCompletionRequest): ReadonlyArray<Capability> | undefined => {
  let needs: Array<Capability> | undefined
  const add = (capability: Capability) => {
    if (needs === undefined) needs = [capability]
    else if (!needs.includes(capability)) needs.push(capability)
  }
  for (const message of request.messages) {
    const content = message.content
    if (!Array.isArray(content)) continue
    for (const part of content) {
      if (IMAGE_PARTS.has(part.type)) {
        add("vision")
        if (byUrl(part)) add("image_url")
      } else if (part.type === "input_audio") add("audio")
      else if (part.type === "file" || part.type === "input_file") add("file")
    }
  }
  if (request.tools !== undefined && request.tools.length > 0) {
    add("tools")
    const choice = request["tool_choice"]
    if (choice === "required" || (typeof choice === "object" && choice !== null)) add("tool_choice")
  }
  if (request.response_format?.type === "json_schema") add("json_schema")
  const n = request["n"]
  if (typeof n === "number" && n > 1) add("n")
  if (request["logprobs"] === true || typeof request["top_logprobs"] === "number") add("logprobs")
  return needs
}

/** What a legacy completions request needs. */
export const NEEDS_COMPLETIONS: ReadonlyArray<Capability> = ["completions"]

/** What a Responses request that relies on stored responses (`previous_response_id`, `store`) needs. */
export const NEEDS_RESPONSES: ReadonlyArray<Capability> = ["responses"]

/**
 * True when an upstream with capabilities `has` (undefined: every capability but the opt-in ones,
 * see `Config.OPT_IN_CAPABILITIES`) has `capability`.
 */
export const has = (has: ReadonlyArray<string> | undefined, capability: string): boolean =>
  has === undefined ? !OPT_IN_CAPABILITIES.includes(capability as Capability) : has.includes(capability)

const admitted: Release = () => {}

/**
 * The guard: excludes an upstream whose capabilities lack one the request needs (not waitable:
 * waiting gives no upstream a capability). Reserves nothing.
 */
export const guard: Effect.Effect<Guard> = Effect.succeed({
  name: STAGE,
  check: (upstream, request) => {
    const needs = request.needs
    if (needs === undefined) return undefined
    for (const need of needs) {
      if (!has(upstream.capabilities, need)) {
        return { upstream: upstream.id, stage: STAGE, reason: `${upstream.provider} upstream without ${need}` }
      }
    }
    return undefined
  },
  admit: () => admitted
})

/** True when every exclusion of a refusal is for a missing capability: the request, not the load, is the cause. */
export const unsupported = (error: NoUpstreamAvailable): boolean =>
  error.exclusions.length > 0 && error.exclusions.every((e: Exclusion) => e.stage === STAGE)
