/**
 * TokenCounter: prompt tokens of a chat request, for budgets and context-window checks.
 *
 * Counting follows OpenAI's published rule for chat models: 3 tokens of framing per message, the
 * encoded role, content and name (+1 for a name), and 3 tokens that prime the reply. Models of OpenAI
 * families are counted exactly with their tiktoken encoding (`o200k_base` for gpt-4o, gpt-4.1, gpt-5,
 * o-series; `cl100k_base` for gpt-4, gpt-3.5 and embeddings); other models (Claude, Llama, Mistral,
 * Gemini...) use `o200k_base` as an estimate and report `exact: false`. An upstream whose provider
 * counts by other rules is counted by those ({@link Rules}, {@link estimateAs}). Beyond the message texts:
 *
 * - images as the providers document them: OpenAI's tiles (`detail: "low"` 85 tokens; `high` and
 *   `auto` 85 + 170 per 512 px tile, and gpt-4o-mini's 2833 + 5667), Anthropic's `w × h / 750` for
 *   Claude. The size is read from a data URL's image header (PNG, GIF, WebP, JPEG); an image of unknown
 *   size (an `https` URL) counts the most its detail can cost — 1445 tokens for gpt-4o at `high` or
 *   `auto`. Models that meter images in 32 px patches (gpt-4.1-mini and -nano, o4-mini) are counted
 *   by tiles too, which may fall short of their usage;
 * - tool definitions (and legacy `functions`) by OpenAI's cookbook rule, which matches the API's
 *   counts for gpt-4o and gpt-4, with nested schemas counted as their JSON text;
 * - assistant `tool_calls` and `function_call` as their JSON text, a tool result's `tool_call_id` and
 *   the name of the function it answers, and `response_format.json_schema` as its JSON text.
 *
 * Counting must not become the bottleneck (tiktoken costs ~0.3 ms per KB of prompt on one core;
 * a bare proxy spends ~60 µs per request), so the counter of {@link make}:
 *
 * - counts each distinct text once: multi-turn chats resend their history, and only the new message
 *   of a request is encoded (a bounded LRU memo by text, per encoding);
 * - offers {@link Service.estimate}, a synchronous chars-per-token estimate calibrated online from
 *   the exact counts it performs, so a caller can count exactly only near a limit
 *   (see {@link needsExact});
 * - counts exactly in a worker thread (by default), so neither a huge prompt nor building an encoder
 *   ever stalls the event loop;
 * - loads an encoding's tables only on its first exact count, in the thread that counts: a gateway
 *   whose models never come near a limit never loads one, and one that serves gpt-4o loads
 *   `o200k_base` alone (~70 MB resident), never `cl100k_base` or tiktoken's other encoders.
 */
import type { Scope } from "effect"
import { Context, Effect, Layer } from "effect"
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import type * as TiktokenLite from "tiktoken/lite"
import { jsonText } from "./internal/deepJson.js"
import * as TokenWorkerPool from "./internal/tokenWorkerPool.js"
import type { ChatCompletionRequest, ChatMessage } from "./Wire.js"

/** A prompt token count. */
export interface Count {
  /** Prompt tokens. */
  readonly tokens: number
  /** True when counted with the model's own tokenizer; false for an estimate. */
  readonly exact: boolean
}

/** The tiktoken encodings the counter knows. */
export type Encoding = "o200k_base" | "cl100k_base"

/** What a counter has done since it was built, for tests, benchmarks and diagnostics. */
export interface Stats {
  /** Texts encoded with tiktoken (on the event loop or in a worker); memo hits are not encodes. */
  readonly encodes: number
  /** Characters of those texts. */
  readonly encodedChars: number
  /** Texts whose count came from the memo. */
  readonly memoHits: number
  /** Requests counted in a worker thread. */
  readonly offThreadCounts: number
  /** Worker threads alive now. */
  readonly workers: number
  /**
   * The encodings loaded now: on the event loop (`inline`), and in the worker threads alive now
   * (`workers`). Each loads on its first exact count in that thread; none at start.
   */
  readonly encoders: {
    readonly inline: ReadonlyArray<Encoding>
    readonly workers: ReadonlyArray<Encoding>
  }
  /** The calibrated characters per token of each encoding, as {@link Service.estimate} uses it. */
  readonly charsPerToken: Readonly<Record<Encoding, number>>
}

/** Counts prompt tokens. */
export interface Service {
  /**
   * Prompt tokens of `request` as `model` counts them: exact where the model's tokenizer is known.
   * Very large prompts are counted off the event loop; the effect never fails.
   */
  readonly count: (request: ChatCompletionRequest, model: string) => Effect.Effect<Count>
  /**
   * A fast synchronous estimate (`exact: false`): characters divided by a chars-per-token ratio of
   * the model's encoding, calibrated from the exact counts this counter has performed. Costs a pass
   * over the messages, no encoding. Trust it far from a limit; count exactly near one
   * ({@link needsExact}).
   */
  readonly estimate: (request: ChatCompletionRequest, model: string) => Count
  /** What the counter has done so far, where the implementation keeps track. */
  readonly stats?: () => Stats
}

/** Counts prompt tokens. */
export class TokenCounter extends Context.Tag("@sluice/core/TokenCounter")<TokenCounter, Service>() {}

const PER_MESSAGE = 3
const REPLY_PRIMING = 3

/** The width and height of an image, in pixels. */
interface Size {
  readonly width: number
  readonly height: number
}

/** An image part of a message: its `detail` (`auto` when absent) and its size, when the request holds the image. */
interface ImageInput {
  readonly detail: string
  readonly size: Size | undefined
}

/**
 * OpenAI's tile rule, for `base` and `tile` tokens: `detail: "low"` costs `base`; `high` and `auto`
 * (the model's choice between the two, so `high` bounds it) cost `base + tile × n`,
 * where `n` counts the 512 px tiles covering the image once scaled (never up) to fit 2048 × 2048, then
 * so its shortest side is 768 px. Then neither side exceeds 2048 (4 tiles) nor does the shorter one
 * exceed 768 (2 tiles): at most 8 tiles, reached by a 2048 × 768 image. So an image whose size the
 * request does not show (an `https` URL) counts `base + 8 × tile` — for gpt-4o 1445 tokens, not the
 * 1105 of OpenAI's 2048 × 4096 example, whose 1:2 shape needs only 6 tiles.
 */
const openAITiles =
  (base: number, tile: number) =>
  (image: ImageInput): number => {
    if (image.detail === "low") return base
    if (image.size === undefined) return base + tile * 8
    let { height, width } = image.size
    const fit = Math.min(1, 2048 / Math.max(width, height))
    width *= fit
    height *= fit
    const shortest = Math.min(1, 768 / Math.min(width, height))
    width *= shortest
    height *= shortest
    // Scaled sides are rounded up, so that a rounding error can only add a tile.
    return base + tile * Math.ceil(Math.ceil(width - 1e-6) / 512) * Math.ceil(Math.ceil(height - 1e-6) / 512)
  }

/**
 * Anthropic's rule for Claude: `width × height / 750` tokens, after scaling (never up) so the long
 * side is at most 1568 px, and about 1600 at most (larger images are scaled down until they fit);
 * `detail` does not apply. An image of unknown size counts that ceiling, 1600.
 */
const anthropicImage = (image: ImageInput): number => {
  if (image.size === undefined) return 1600
  const scale = Math.min(1, 1568 / Math.max(image.size.width, image.size.height))
  return Math.min(1600, Math.ceil((image.size.width * scale * (image.size.height * scale)) / 750))
}

/** How a model family meters what is not plain text. */
interface Metering {
  /** Tokens of an image part. */
  readonly image: (image: ImageInput) => number
  /** Framing tokens per function definition (`func_init` of OpenAI's cookbook). */
  readonly functionInit: number
}

const gpt4oTiles = openAITiles(85, 170)
const meterings = {
  // OpenAI's figures for gpt-4o-mini: 33⅓ times gpt-4o's tokens, at a fraction of the price.
  gpt4oMini: { image: openAITiles(2833, 5667), functionInit: 7 },
  o200k: { image: gpt4oTiles, functionInit: 7 },
  cl100k: { image: gpt4oTiles, functionInit: 10 },
  claude: { image: anthropicImage, functionInit: 7 }
} satisfies Record<string, Metering>

/** How `model` meters images and tools; `encoding` is its {@link encodingFor}, which callers already have. */
const meteringFor = (model: string, encoding: Encoding): Metering => {
  const name = model.includes("/") ? model.slice(model.lastIndexOf("/") + 1) : model
  if (name.startsWith("gpt-4o-mini")) return meterings.gpt4oMini
  if (name.includes("claude")) return meterings.claude
  return encoding === "cl100k_base" ? meterings.cl100k : meterings.o200k
}

// ---------------------------------------------------------------------------------------------
// Image sizes, read from the image itself when a data URL carries it: PNG, GIF, WebP and JPEG
// headers. Only the first bytes are decoded.

/** Decodes base64 `text` (whole 4-character groups only) into bytes; undefined if it is not base64. */
const base64Bytes = (text: string): Uint8Array | undefined => {
  try {
    const binary = atob(text.slice(0, text.length - (text.length % 4)))
    const bytes = new Uint8Array(binary.length)
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
    return bytes
  } catch {
    return undefined
  }
}

/**
 * Base64 characters decoded to find a size: 64 (48 bytes) hold a PNG, GIF or WebP header; a JPEG's
 * frame header comes after its other segments, so a JPEG is searched further, up to 64 KiB (past a
 * larger EXIF block its size counts as unknown).
 */
const HEADER_CHARS = [64, 4096, Math.ceil((64 * 1024 * 4) / 3)]

const sizeOfBytes = (b: Uint8Array): Size | undefined => {
  const u16be = (i: number) => (b[i]! << 8) | b[i + 1]!
  const u16le = (i: number) => b[i]! | (b[i + 1]! << 8)
  const u24le = (i: number) => b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16)
  const u32be = (i: number) => ((b[i]! << 24) >>> 0) + ((b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!)
  const ascii = (i: number, n: number) => String.fromCharCode(...b.subarray(i, i + n))
  if (b.length >= 24 && b[0] === 0x89 && ascii(1, 3) === "PNG") return { width: u32be(16), height: u32be(20) }
  if (b.length >= 10 && ascii(0, 3) === "GIF") return { width: u16le(6), height: u16le(8) }
  if (b.length >= 30 && ascii(0, 4) === "RIFF" && ascii(8, 4) === "WEBP") {
    const chunk = ascii(12, 4)
    if (chunk === "VP8X") return { width: u24le(24) + 1, height: u24le(27) + 1 }
    if (chunk === "VP8 ") return { width: u16le(26) & 0x3fff, height: u16le(28) & 0x3fff }
    if (chunk === "VP8L") {
      const bits = (b[21]! | (b[22]! << 8) | (b[23]! << 16) | (b[24]! << 24)) >>> 0
      return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 }
    }
    return undefined
  }
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    // Segments until a start-of-frame marker (C0-CF but C4 DHT, C8 JPG, CC DAC), which holds the size.
    let i = 2
    while (i + 9 < b.length) {
      if (b[i] !== 0xff) return undefined
      const marker = b[i + 1]!
      if (marker === 0xff) {
        i++
        continue
      }
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
        return { width: u16be(i + 7), height: u16be(i + 5) }
      }
      i += 2 + u16be(i + 2)
    }
  }
  return undefined
}

/** The size of the image a data URL holds, if it is base64 PNG, GIF, WebP or JPEG with a readable header. */
const sizeOfDataUrl = (url: string): Size | undefined => {
  if (!url.startsWith("data:")) return undefined
  const comma = url.indexOf(",")
  if (comma < 0 || !url.slice(0, comma).endsWith(";base64")) return undefined
  for (const chars of HEADER_CHARS) {
    const bytes = base64Bytes(url.slice(comma + 1, comma + 1 + chars))
    if (bytes === undefined) return undefined
    const size = sizeOfBytes(bytes)
    if (size !== undefined) return size.width > 0 && size.height > 0 ? size : undefined
    // Only a JPEG may need more bytes, and only if the URL has them.
    if (bytes[0] !== 0xff || bytes[1] !== 0xd8 || comma + 1 + chars >= url.length) return undefined
  }
  return undefined
}

/** The image of a content part (`image_url`, or the Responses API's `input_image`), or undefined. */
const imageOf = (part: { readonly type: string; readonly [key: string]: unknown }): ImageInput | undefined => {
  if (part.type !== "image_url" && part.type !== "input_image") return undefined
  const ref = part["image_url"]
  const url =
    typeof ref === "string" ? ref : typeof ref === "object" && ref !== null ? (ref as { url?: unknown }).url : undefined
  const detail =
    (typeof ref === "object" && ref !== null ? (ref as { detail?: unknown }).detail : undefined) ?? part["detail"]
  return {
    detail: typeof detail === "string" ? detail : "auto",
    size: typeof url === "string" ? sizeOfDataUrl(url) : undefined
  }
}

// ---------------------------------------------------------------------------------------------
// Tool definitions, counted the way OpenAI's cookbook does (`num_tokens_for_tools`, which matches
// the API's counts for gpt-4o and gpt-4), extended to what the cookbook leaves out.

const withoutFinalPeriod = (text: string): string => (text.endsWith(".") ? text.slice(0, -1) : text)
const stringOf = (value: unknown): string => (typeof value === "string" ? value : jsonText(value))

/** Schema keywords the cookbook's rule accounts for; anything else in a schema counts as its JSON text. */
const FUNCTION_KEYS = new Set(["name", "description", "parameters", "strict"])
const PARAMETERS_KEYS = new Set(["type", "properties", "required", "additionalProperties"])
const PROPERTY_KEYS = new Set(["type", "description", "enum"])

/** JSON text of `record` less `known` keys, or "" when nothing is left. */
const restOf = (record: Readonly<Record<string, unknown>>, known: ReadonlySet<string>): string => {
  let rest: Record<string, unknown> | undefined
  for (const key in record) {
    if (known.has(key)) continue
    rest ??= {}
    rest[key] = record[key]
  }
  return rest === undefined ? "" : jsonText(rest)
}

const isRecord = (value: unknown): value is Readonly<Record<string, unknown>> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/**
 * Tokens of a request's function definitions. Per function: `functionInit`, then
 * `name:description` (a final period dropped); with properties, 3, and per property 3 plus
 * `key:type:description`; an enum adds 3 per item plus the item, less 3; 12 once at the end (the
 * cookbook's constants). Nested schemas (`items`, a property's own `properties`, `anyOf`, `$defs`...),
 * which the cookbook's rule leaves out and OpenAI renders too, count as their JSON text, which is
 * longer than OpenAI's rendering: they are never undercounted. A tool that is not a function counts
 * as its JSON text. Definitions come from requests and may nest arbitrarily deep: their JSON text is
 * written without recursion past 64 levels.
 */
const countTools = (tools: ReadonlyArray<unknown>, functionInit: number, measure: (text: string) => number): number => {
  let tokens = 12
  for (const tool of tools) {
    const fn = isRecord(tool) ? tool["function"] : undefined
    if (!isRecord(tool) || (tool["type"] !== undefined && tool["type"] !== "function") || !isRecord(fn)) {
      tokens += measure(jsonText(tool))
      continue
    }
    tokens += functionInit + measure(`${stringOf(fn["name"])}:${withoutFinalPeriod(stringOf(fn["description"] ?? ""))}`)
    const extra = restOf(fn, FUNCTION_KEYS)
    if (extra !== "") tokens += measure(extra)
    const parameters = fn["parameters"]
    if (!isRecord(parameters)) continue
    const rest = restOf(parameters, PARAMETERS_KEYS)
    if (rest !== "") tokens += measure(rest)
    const properties = parameters["properties"]
    if (!isRecord(properties)) continue
    const keys = Object.keys(properties)
    if (keys.length === 0) continue
    tokens += 3
    for (const key of keys) {
      const property = properties[key]
      const schema = isRecord(property) ? property : {}
      tokens += 3
      const values = schema["enum"]
      if (Array.isArray(values)) {
        tokens -= 3
        for (const value of values) tokens += 3 + measure(stringOf(value))
      }
      const type = schema["type"] === undefined ? "" : stringOf(schema["type"])
      tokens += measure(`${key}:${type}:${withoutFinalPeriod(stringOf(schema["description"] ?? ""))}`)
      const nested = restOf(schema, PROPERTY_KEYS)
      if (nested !== "") tokens += measure(nested)
    }
  }
  return tokens
}

const countWith = (request: ChatCompletionRequest, metering: Metering, measure: (text: string) => number): number => {
  let tokens = REPLY_PRIMING
  // Function names by tool call id: a tool result is shown to the model under its function's name.
  let callNames: Map<string, string> | undefined
  for (const message of request.messages as ReadonlyArray<ChatMessage>) {
    tokens += PER_MESSAGE + measure(message.role)
    const content = message.content
    if (typeof content === "string") tokens += measure(content)
    else if (content !== null && content !== undefined) {
      let text = ""
      for (const part of content) {
        const p = part as { readonly type: string; readonly text?: unknown; readonly [key: string]: unknown }
        if (p.type === "text" && typeof p.text === "string") text += p.text
        else {
          const image = imageOf(p)
          if (image !== undefined) tokens += metering.image(image)
        }
      }
      tokens += measure(text)
    }
    // Assistant tool calls (and the legacy function call) are part of the prompt too.
    const calls = message["tool_calls"]
    if (Array.isArray(calls) && calls.length > 0) {
      tokens += measure(jsonText(calls))
      for (const call of calls) {
        const fn = isRecord(call) ? call["function"] : undefined
        if (isRecord(call) && typeof call["id"] === "string" && isRecord(fn) && typeof fn["name"] === "string") {
          ;(callNames ??= new Map()).set(call["id"], fn["name"])
        }
      }
    }
    const legacyCall = message["function_call"]
    if (legacyCall !== undefined && legacyCall !== null) tokens += measure(jsonText(legacyCall))
    const callId = message["tool_call_id"]
    if (typeof callId === "string") {
      tokens += measure(callId)
      const name = callNames?.get(callId)
      if (name !== undefined && message.name === undefined) tokens += 1 + measure(name)
    }
    if (message.name !== undefined) tokens += 1 + measure(message.name)
  }
  const tools = request.tools ?? []
  const functions = request["functions"]
  const legacy = Array.isArray(functions) ? functions.map((f: unknown) => ({ type: "function", function: f })) : []
  if (tools.length + legacy.length > 0) {
    tokens += countTools(legacy.length === 0 ? tools : [...tools, ...legacy], metering.functionInit, measure)
  }
  // A JSON schema the answer must follow is shown to the model as well.
  const format = request.response_format as { readonly json_schema?: unknown } | undefined
  if (format?.json_schema !== undefined) tokens += measure(jsonText(format.json_schema))
  return tokens
}

/**
 * Characters per token the estimate starts from, for both encodings: what OpenAI documents for
 * English text (~4). The counter of {@link make} calibrates it from there.
 */
export const DEFAULT_CHARS_PER_TOKEN = 4

/**
 * The bounds of the calibrated chars-per-token ratio. English runs ~4-5, code ~3, CJK ~1-1.5; past
 * these bounds calibration is more likely misled by odd text (long runs of one character, random
 * Unicode) than informed.
 */
export const CHARS_PER_TOKEN_BOUNDS: readonly [min: number, max: number] = [0.5, 8]

/** A fast estimate: about 4 characters a token (what OpenAI documents for English text). */
export const estimateText = (text: string): number => Math.ceil(text.length / DEFAULT_CHARS_PER_TOKEN)

/**
 * True when an estimate is too close to a limit to trust: `estimate ≥ limit × (1 − margin)`. Then
 * count exactly before admitting or rejecting. `margin` is the relative error the estimate may
 * carry (default 0.2: a calibrated estimate of English or code is usually within 10%); an infinite
 * limit never needs an exact count, a limit of 0 always does.
 */
export const needsExact = (estimate: number, limit: number, margin = 0.2): boolean => estimate >= limit * (1 - margin)

/**
 * How an upstream counts prompt tokens, where that is not OpenAI's tiktoken rule for the model's name
 * (the default, see {@link encodingFor}): a provider kind says which (`Config.ProviderKind.tokens`).
 *
 * - `anthropic`: Claude's tokenizer is not published: text is estimated (about 4 characters a
 *   token), images by Anthropic's documented `width × height / 750`. Never exact.
 * - `gemini`: Gemini's documented rule: about 4 characters a token, and 258 tokens per image whose
 *   sides are both at most 384 px, else 258 per 768 × 768 tile. Never exact (the rule is approximate).
 * - `estimate`: the model's own tokenizer is unknown (a local model behind Ollama): the estimate,
 *   marked as one.
 */
export type Rules = "anthropic" | "gemini" | "estimate"

/** Gemini's documented image rule: 258 tokens up to 384 px on both sides, else 258 per 768 px tile. */
const geminiImage = (image: ImageInput): number => {
  // Unknown size: a 1536 × 1536 image's 4 tiles, as a bound for common sizes.
  if (image.size === undefined) return 258 * 4
  const { height, width } = image.size
  if (width <= 384 && height <= 384) return 258
  return 258 * Math.ceil(width / 768) * Math.ceil(height / 768)
}

const ruleMeterings: Record<Rules, Metering | undefined> = {
  anthropic: meterings.claude,
  gemini: { image: geminiImage, functionInit: 7 },
  estimate: undefined
}

/**
 * The prompt tokens of `request` as an upstream that counts by `rules` would count them, for
 * `model` (the model it is called with): never exact (see {@link Rules}). Synchronous, no encoding.
 */
export const estimateAs = (request: ChatCompletionRequest, model: string, rules: Rules): Count => ({
  tokens: countWith(request, ruleMeterings[rules] ?? meteringFor(model, "o200k_base"), estimateText),
  exact: false
})

const estimateRequest = (request: ChatCompletionRequest, model: string): Count => ({
  tokens: countWith(request, meteringFor(model, encodingFor(model).encoding), estimateText),
  exact: false
})

/** Counts with the ~4 characters per token estimate only. Never exact; costs no WASM. */
export const layerEstimate = Layer.succeed(
  TokenCounter,
  TokenCounter.of({
    count: (request, model) => Effect.sync(() => estimateRequest(request, model)),
    estimate: estimateRequest
  })
)

const o200kFamilies = /^(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4|chatgpt-4o|gpt-oss)/
const cl100kFamilies = /^(gpt-4|gpt-3\.5|text-embedding-|ft:gpt-3\.5|ft:gpt-4)/

/** Which encoding counts a model, and whether that count is exact. */
export const encodingFor = (model: string): { readonly encoding: Encoding; readonly exact: boolean } => {
  const name = model.includes("/") ? model.slice(model.lastIndexOf("/") + 1) : model
  if (o200kFamilies.test(name)) return { encoding: "o200k_base", exact: true }
  if (cl100kFamilies.test(name)) return { encoding: "cl100k_base", exact: true }
  return { encoding: "o200k_base", exact: false }
}

/** Options of {@link make}. */
export interface Options {
  /**
   * Characters (UTF-16 code units; bytes for ASCII) of not-yet-counted text from which a request is
   * counted in a worker thread; smaller ones are counted on the event loop. Memoized texts do not
   * count towards it. Default 0: every exact count runs in the worker, and the event loop never
   * builds an encoder (building `o200k_base` blocks its thread for ~0.5-1 s and keeps ~70 MB). Above
   * 0, the event loop builds an encoding on its first count below the threshold. `Infinity` counts
   * everything inline.
   */
  readonly workerThreshold?: number
  /** Worker threads counting exactly, started lazily. Default 1; 0 counts everything inline. */
  readonly workers?: number
  /**
   * The worker script. Default: `internal/tokenWorker.mjs` next to this module; set it when a
   * bundler moves files. A script that fails to start makes the counter count inline (one warning).
   */
  readonly workerScript?: URL
}

/** Texts memoized at most, over both encodings. */
const MEMO_ENTRIES = 50_000
/** Characters of memoized texts at most (the memo keeps them alive): 32 Mi, 32-64 MB. */
const MEMO_CHARS = 32 * 1024 * 1024
/** Texts shorter than this do not calibrate the estimate: roles and names are all framing. */
const CALIBRATION_MIN_CHARS = 32
/** How far each KiB of exactly counted text moves the ratio towards its own (a half-life of ~34 KiB). */
const CALIBRATION_ALPHA_PER_KIB = 0.02
/** How far one text moves the ratio at most, so one odd huge prompt cannot pin it. */
const CALIBRATION_MAX_WEIGHT = 0.25

/** Tokens per character, within {@link CHARS_PER_TOKEN_BOUNDS}. */
const clampTokensPerChar = (tokensPerChar: number): number =>
  Math.min(1 / CHARS_PER_TOKEN_BOUNDS[0], Math.max(1 / CHARS_PER_TOKEN_BOUNDS[1], tokensPerChar))

interface MemoEntry {
  readonly tokens: number
  /** Hit since it was last considered for eviction. */
  used: boolean
}

/**
 * Token counts by text, one map per encoding, bounded in entries and characters together. Eviction
 * is second-chance (CLOCK): the oldest entry goes unless it was hit since, in which case it moves to
 * the back. A hit only sets a flag: moving entries on every hit (a strict LRU) churns the maps'
 * hash tables and costs more than the lookups.
 */
const makeMemo = () => {
  const maps: Record<Encoding, Map<string, MemoEntry>> = { o200k_base: new Map(), cl100k_base: new Map() }
  let entries = 0
  let chars = 0
  const evictFrom = (map: Map<string, MemoEntry>): boolean => {
    // Each pass either evicts or clears a flag, so this ends within two sweeps of the map.
    for (;;) {
      const oldest = map.entries().next()
      if (oldest.done === true) return false
      const [text, entry] = oldest.value
      map.delete(text)
      if (entry.used) {
        entry.used = false
        map.set(text, entry)
        continue
      }
      entries--
      chars -= text.length
      return true
    }
  }
  return {
    get: (encoding: Encoding, text: string): number | undefined => {
      const entry = maps[encoding].get(text)
      if (entry === undefined) return undefined
      entry.used = true
      return entry.tokens
    },
    set: (encoding: Encoding, text: string, tokens: number): void => {
      if (text.length > MEMO_CHARS / 4) return
      const map = maps[encoding]
      if (map.has(text)) return
      const other = maps[encoding === "o200k_base" ? "cl100k_base" : "o200k_base"]
      while (entries >= MEMO_ENTRIES || chars + text.length > MEMO_CHARS) {
        if (!evictFrom(map) && !evictFrom(other)) break
      }
      map.set(text, { tokens, used: false })
      entries++
      chars += text.length
    }
  }
}

const require = createRequire(import.meta.url)

/** An encoding's tables as tiktoken ships them (`tiktoken/encoders/<name>.json`). */
interface EncoderTables {
  readonly bpe_ranks: string
  readonly special_tokens: Record<string, number>
  readonly pat_str: string
}

/**
 * Builds the encoder of one encoding on this thread: tiktoken's "lite" WASM, which holds no tables
 * (~6 MB once), and that encoding's tables alone, read as JSON so no module keeps their text alive.
 * tiktoken's main entry point would instead put every encoder's tables in its WASM at import.
 * Blocks for hundreds of milliseconds (o200k_base); see {@link Options.workerThreshold}.
 */
const buildEncoder = (encoding: Encoding): TiktokenLite.Tiktoken => {
  const { Tiktoken } = require("tiktoken/lite") as typeof TiktokenLite
  const file = require.resolve(`tiktoken/encoders/${encoding}.json`)
  const tables = JSON.parse(readFileSync(file, "utf8")) as EncoderTables
  return new Tiktoken(tables.bpe_ranks, tables.special_tokens, tables.pat_str)
}

/**
 * Counts with tiktoken. Nothing is loaded when the counter is made: the worker thread (see
 * {@link Options}) starts on the first exact count, and each thread builds an encoding's WASM
 * encoder on its first count of that encoding. Encoders are freed and workers terminated when the
 * scope closes. Counts of texts are memoized (bounded), because multi-turn chats resend their
 * history with every request.
 */
export const make = (options: Options = {}): Effect.Effect<Service, never, Scope.Scope> =>
  Effect.gen(function* () {
    const threshold = options.workerThreshold ?? 0
    const size = options.workers ?? 1
    /** The encoders built on the event loop: for counts below the threshold, or when no worker can count. */
    const encoders = yield* Effect.acquireRelease(
      Effect.sync(() => new Map<Encoding, TiktokenLite.Tiktoken>()),
      (map) => Effect.sync(() => map.forEach((e) => e.free()))
    )
    const encoder = (name: Encoding): TiktokenLite.Tiktoken => {
      let e = encoders.get(name)
      if (e === undefined) {
        e = buildEncoder(name)
        encoders.set(name, e)
      }
      return e
    }
    const pool =
      size > 0 && threshold < Infinity
        ? yield* TokenWorkerPool.make({
            size,
            script: options.workerScript ?? new URL("./internal/tokenWorker.mjs", import.meta.url)
          })
        : undefined

    const memo = makeMemo()
    // Calibrated as tokens per character: averaged with character weights it converges to
    // Σ tokens / Σ chars, the ratio that gets totals right. (Averaging chars per token instead
    // over-weights the texts that tokenize well, and the estimate would run low.)
    const tokensPerChar: Record<Encoding, number> = {
      o200k_base: 1 / DEFAULT_CHARS_PER_TOKEN,
      cl100k_base: 1 / DEFAULT_CHARS_PER_TOKEN
    }
    let encodes = 0
    let encodedChars = 0
    let memoHits = 0
    let offThreadCounts = 0

    /** Memoizes a fresh exact count and lets it calibrate the estimate. */
    const learn = (encoding: Encoding, text: string, tokens: number) => {
      encodes++
      encodedChars += text.length
      memo.set(encoding, text, tokens)
      if (text.length < CALIBRATION_MIN_CHARS || tokens === 0) return
      const weight = Math.min(CALIBRATION_MAX_WEIGHT, 1 - Math.pow(1 - CALIBRATION_ALPHA_PER_KIB, text.length / 1024))
      const current = tokensPerChar[encoding]
      tokensPerChar[encoding] = clampTokensPerChar(current + weight * (tokens / text.length - current))
    }

    const total = (known: number, missing: ReadonlyMap<string, number>, counts: ReadonlyArray<number>): number => {
      let tokens = known
      let i = 0
      for (const occurrences of missing.values()) tokens += occurrences * counts[i++]!
      return tokens
    }

    const countInline = (encoding: Encoding, texts: Iterable<string>): Array<number> => {
      const enc = encoder(encoding)
      const counts: Array<number> = []
      for (const text of texts) {
        const tokens = enc.encode_ordinary(text).length
        learn(encoding, text, tokens)
        counts.push(tokens)
      }
      return counts
    }

    const countOffThread = (
      workers: TokenWorkerPool.TokenWorkerPool,
      encoding: Encoding,
      missing: ReadonlyMap<string, number>,
      chars: number
    ): Effect.Effect<Array<number>> =>
      workers.count(encoding, [...missing.keys()]).pipe(
        Effect.map((counts) => {
          if (counts === undefined) return countInline(encoding, missing.keys())
          offThreadCounts++
          let i = 0
          for (const text of missing.keys()) learn(encoding, text, counts[i++]!)
          return [...counts]
        }),
        Effect.withSpan("TokenCounter.countOffThread", { attributes: { "sluice.tokens.chars": chars } })
      )

    const count: Service["count"] = (request, model) =>
      Effect.suspend(() => {
        const { encoding, exact } = encodingFor(model)
        // Texts not memoized yet, with how often the request holds each.
        const missing = new Map<string, number>()
        let missingChars = 0
        const known = countWith(request, meteringFor(model, encoding), (text) => {
          if (text.length === 0) return 0
          const hit = memo.get(encoding, text)
          if (hit !== undefined) {
            memoHits++
            return hit
          }
          const seen = missing.get(text)
          if (seen === undefined) missingChars += text.length
          missing.set(text, (seen ?? 0) + 1)
          return 0
        })
        if (missing.size === 0) return Effect.succeed({ tokens: known, exact })
        if (pool === undefined || missingChars < threshold) {
          return Effect.succeed({ tokens: total(known, missing, countInline(encoding, missing.keys())), exact })
        }
        return Effect.map(countOffThread(pool, encoding, missing, missingChars), (counts) => ({
          tokens: total(known, missing, counts),
          exact
        }))
      })

    const estimate: Service["estimate"] = (request, model) => {
      const { encoding } = encodingFor(model)
      const perChar = tokensPerChar[encoding]
      return {
        tokens: countWith(request, meteringFor(model, encoding), (text) => Math.ceil(text.length * perChar)),
        exact: false
      }
    }

    return TokenCounter.of({
      count,
      estimate,
      stats: () => ({
        encodes,
        encodedChars,
        memoHits,
        offThreadCounts,
        workers: pool?.running() ?? 0,
        encoders: { inline: [...encoders.keys()], workers: pool?.encodings() ?? [] },
        charsPerToken: {
          o200k_base: 1 / tokensPerChar.o200k_base,
          cl100k_base: 1 / tokensPerChar.cl100k_base
        }
      })
    })
  })

/** Counts with tiktoken and default {@link Options} (see {@link make}). */
export const layer: Layer.Layer<TokenCounter> = Layer.scoped(TokenCounter, make())
