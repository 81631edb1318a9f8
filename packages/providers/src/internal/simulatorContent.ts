/**
 * What the simulated upstream says: deterministic completion words, the prompt token estimate,
 * embedding vectors and the seeded dice. Plain functions, called on the request hot path.
 */

const WORDS = [
  "lorem",
  "ipsum",
  "dolor",
  "sit",
  "amet",
  "consectetur",
  "adipiscing",
  "elit",
  "sed",
  "do",
  "eiusmod",
  "tempor",
  "incididunt",
  "ut",
  "labore",
  "et",
  "dolore",
  "magna",
  "aliqua"
]

/** Tokens counted for each image part of a message (OpenAI's low-detail figure). */
export const IMAGE_TOKENS = 85

/** Tokens of framing counted for each message. */
export const PER_MESSAGE_TOKENS = 3

/**
 * The prompt token estimate: `ceil(characters of all text content / 4) + 3 per message + 85 per
 * image part` (OpenAI's `image_url` / `input_image`, Anthropic's `image`). Only message `content` is
 * counted (a string, or the `text` of text parts); tool definitions, names and tool calls are not.
 */
export const estimatePromptTokens = (messages: ReadonlyArray<unknown>): number => {
  let characters = 0
  let images = 0
  for (const message of messages) {
    if (typeof message !== "object" || message === null) continue
    const content = (message as { readonly content?: unknown }).content
    if (typeof content === "string") characters += content.length
    else if (Array.isArray(content)) {
      for (const part of content as ReadonlyArray<unknown>) {
        if (typeof part !== "object" || part === null) continue
        const p = part as { readonly type?: unknown; readonly text?: unknown }
        if (typeof p.text === "string") characters += p.text.length
        else if (p.type === "image_url" || p.type === "input_image" || p.type === "image") images++
      }
    }
  }
  return Math.ceil(characters / 4) + PER_MESSAGE_TOKENS * messages.length + IMAGE_TOKENS * images
}

/** Tokens of an embeddings input text: `ceil(characters / 4)`. */
export const estimateTextTokens = (text: string): number => Math.ceil(text.length / 4)

/** A completion of `n` tokens, ready to send whole or streamed. */
export interface Completion {
  /** The whole message content. */
  readonly content: string
  /** One `{"content":"..."}` delta object (JSON text) per streamed chunk; they concatenate to `content`. */
  readonly deltas: ReadonlyArray<string>
  /** The text of each streamed piece, in order (what `deltas` carry). */
  readonly pieces: ReadonlyArray<string>
}

const MAX_CACHED = 512

/**
 * Builds and caches completions: `[<name>] lorem ipsum ...` with exactly `n` words (one word, one
 * token), or in JSON mode `{"simulated":true,"upstream":"<name>","text":"<the same words>"}` streamed
 * in `n` pieces (one piece when `n` is 0) so that the concatenation is always valid JSON.
 */
export class Completions {
  private readonly text = new Map<number, Completion>()
  private readonly json = new Map<number, Completion>()
  private readonly words: Array<string>

  constructor(readonly name: string) {
    this.words = [`[${name}]`]
  }

  /** The completion of `n` tokens, plain text or JSON. */
  get(n: number, json: boolean): Completion {
    const cache = json ? this.json : this.text
    const cached = cache.get(n)
    if (cached !== undefined) return cached
    const made = json ? this.makeJson(n) : this.makeText(n)
    if (cache.size >= MAX_CACHED) cache.clear()
    cache.set(n, made)
    return made
  }

  private word(i: number): string {
    while (this.words.length <= i) this.words.push(WORDS[(this.words.length - 1) % WORDS.length]!)
    return this.words[i]!
  }

  private pieces(n: number): Array<string> {
    return Array.from({ length: n }, (_, i) => (i === 0 ? this.word(0) : " " + this.word(i)))
  }

  private makeText(n: number): Completion {
    const pieces = this.pieces(n)
    return { content: pieces.join(""), deltas: pieces.map(delta), pieces }
  }

  private makeJson(n: number): Completion {
    const open = `{"simulated":true,"upstream":${JSON.stringify(this.name)},"text":"`
    const close = `"}`
    // JSON escaping works character by character, so escaping each piece equals escaping the whole.
    const escaped = this.pieces(n).map((piece) => JSON.stringify(piece).slice(1, -1))
    if (escaped.length === 0) escaped.push("")
    escaped[0] = open + escaped[0]
    escaped[escaped.length - 1] = escaped[escaped.length - 1] + close
    return { content: escaped.join(""), deltas: escaped.map(delta), pieces: escaped }
  }
}

const delta = (content: string): string => `{"content":${JSON.stringify(content)}}`

/** A seeded uniform generator in [0, 1) (mulberry32): the same seed gives the same sequence. */
export const dice = (seed: number): (() => number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const fnv1a = (text: string): number => {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash >>> 0
}

/**
 * A deterministic unit-length embedding of `dimensions` float32 values derived from `text`. The
 * values are exactly representable as float32, so `float` and `base64` encodings decode alike.
 */
export const embed = (text: string, dimensions: number): Float32Array => {
  const next = dice(fnv1a(text))
  const vector = new Float32Array(dimensions)
  let norm = 0
  for (let i = 0; i < dimensions; i++) {
    const value = next() * 2 - 1
    vector[i] = value
    norm += value * value
  }
  norm = Math.sqrt(norm) || 1
  for (let i = 0; i < dimensions; i++) vector[i] = vector[i]! / norm
  return vector
}

/** `vector` as OpenAI's `encoding_format: "base64"`: little-endian float32 bytes, base64. */
export const toBase64 = (vector: Float32Array): string => {
  const bytes = Buffer.allocUnsafe(vector.length * 4)
  for (let i = 0; i < vector.length; i++) bytes.writeFloatLE(vector[i]!, i * 4)
  return bytes.toString("base64")
}

type Schema = Readonly<Record<string, unknown>>

const isSchema = (u: unknown): u is Schema => typeof u === "object" && u !== null && !Array.isArray(u)

/** Whether a JSON schema says more than "an object" (so an answer must be built to match it). */
export const isSpecific = (schema: unknown): schema is Schema =>
  isSchema(schema) && (schema["type"] !== "object" || schema["properties"] !== undefined)

/**
 * A value valid against a JSON schema (the subset structured output uses: `type`, `properties`,
 * `required`, `items`, `enum`, `const`, `anyOf` / `oneOf` / `allOf`, `minItems`, `minimum`), with
 * `text` in its strings. Every property is filled, required or not. Deeper than 16 levels, `null`.
 */
export const instanceOf = (schema: unknown, text: string, depth = 16): unknown => {
  if (!isSchema(schema) || depth === 0) return null
  if (schema["const"] !== undefined) return schema["const"]
  if (Array.isArray(schema["enum"]) && schema["enum"].length > 0) return schema["enum"][0]
  for (const key of ["anyOf", "oneOf", "allOf"]) {
    const options = schema[key]
    if (Array.isArray(options) && options.length > 0) return instanceOf(options[0], text, depth - 1)
  }
  const type: unknown = Array.isArray(schema["type"]) ? schema["type"][0] : schema["type"]
  // Gemini's own schemas name types in capitals (`STRING`, `OBJECT`).
  switch (typeof type === "string" ? type.toLowerCase() : type) {
    case "string":
      return text
    case "integer":
    case "number":
      return typeof schema["minimum"] === "number" ? schema["minimum"] : 1
    case "boolean":
      return true
    case "null":
      return null
    case "array": {
      const min = typeof schema["minItems"] === "number" ? Math.max(1, schema["minItems"]) : 1
      return Array.from({ length: Math.min(min, 8) }, () => instanceOf(schema["items"], text, depth - 1))
    }
    default: {
      const out: Record<string, unknown> = {}
      const properties = isSchema(schema["properties"]) ? schema["properties"] : {}
      for (const key of Object.keys(properties)) out[key] = instanceOf(properties[key], text, depth - 1)
      return out
    }
  }
}

/** A JSON text in two parts, as a stream splits a tool's arguments. */
export const halves = (text: string): [string, string] => {
  const at = Math.ceil(text.length / 2)
  return [text.slice(0, at), text.slice(at)]
}

/** `text` as a completion streamed in about `n` pieces (at least one). */
export const completionOf = (text: string, n: number): Completion => {
  const size = Math.max(1, Math.ceil(text.length / Math.max(1, n)))
  const pieces: Array<string> = []
  for (let i = 0; i < text.length; i += size) pieces.push(text.slice(i, i + size))
  if (pieces.length === 0) pieces.push("")
  return { content: text, deltas: pieces.map(delta), pieces }
}
