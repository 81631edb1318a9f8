/**
 * TokenCounter: prompt tokens of a chat request, for budgets and context-window checks.
 *
 * Counting follows OpenAI's published rule for chat models: 3 tokens of framing per message, the
 * encoded role, content and name (+1 for a name), and 3 tokens that prime the reply. Image parts count
 * 85 tokens each (OpenAI's low-detail figure; a conservative floor); tool definitions count as their
 * JSON text. Models of OpenAI families are counted exactly with their tiktoken encoding (`o200k_base`
 * for gpt-4o, gpt-4.1, gpt-5, o-series; `cl100k_base` for gpt-4, gpt-3.5 and embeddings); other models
 * (Claude, Llama, Mistral, Gemini...) use `o200k_base` as an estimate and report `exact: false`.
 *
 * Counting must not become the bottleneck (tiktoken costs ~0.3 ms per KB of prompt on one core;
 * a bare proxy spends ~60 µs per request), so the counter of {@link make}:
 *
 * - counts each distinct text once: multi-turn chats resend their history, and only the new message
 *   of a request is encoded (a bounded LRU memo by text, per encoding);
 * - offers {@link Service.estimate}, a synchronous chars-per-token estimate calibrated online from
 *   the exact counts it performs, so a caller can count exactly only near a limit
 *   (see {@link needsExact});
 * - counts very large prompts (64 KiB of not-yet-counted text by default) in a worker thread, so one
 *   huge request never stalls the others.
 */
import type { Scope } from "effect"
import { Context, Effect, Layer } from "effect"
import type { Tiktoken } from "tiktoken"
import { get_encoding } from "tiktoken"
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

const IMAGE_TOKENS = 85
const PER_MESSAGE = 3
const REPLY_PRIMING = 3

const textOf = (message: ChatMessage): { text: string; images: number } => {
  const content = message.content
  if (typeof content === "string") return { text: content, images: 0 }
  if (content === null || content === undefined) return { text: "", images: 0 }
  let text = ""
  let images = 0
  for (const part of content) {
    const p = part as { readonly type: string; readonly text?: unknown }
    if (p.type === "text" && typeof p.text === "string") text += p.text
    else if (p.type === "image_url" || p.type === "input_image") images++
  }
  return { text, images }
}

const extrasOf = (message: ChatMessage): string => {
  // Assistant tool calls and tool results are part of the prompt too.
  const calls = message["tool_calls"]
  return calls === undefined ? "" : JSON.stringify(calls)
}

const countWith = (request: ChatCompletionRequest, measure: (text: string) => number): number => {
  let tokens = REPLY_PRIMING
  for (const message of request.messages) {
    const { text, images } = textOf(message)
    tokens += PER_MESSAGE + measure(message.role) + measure(text) + images * IMAGE_TOKENS
    const extras = extrasOf(message)
    if (extras !== "") tokens += measure(extras)
    if (message.name !== undefined) tokens += 1 + measure(message.name)
  }
  if (request.tools !== undefined && request.tools.length > 0) tokens += measure(JSON.stringify(request.tools))
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

const estimateRequest = (request: ChatCompletionRequest): Count => ({
  tokens: countWith(request, estimateText),
  exact: false
})

/** Counts with the ~4 characters per token estimate only. Never exact; costs no WASM. */
export const layerEstimate = Layer.succeed(
  TokenCounter,
  TokenCounter.of({
    count: (request) => Effect.sync(() => estimateRequest(request)),
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
   * counted in a worker thread. Memoized texts do not count towards it, so a long conversation
   * resent with one more turn stays on the event loop. Default 65 536 (64 KiB); `Infinity` counts
   * everything inline.
   */
  readonly workerThreshold?: number
  /** Worker threads counting large prompts, started lazily. Default 1; 0 counts everything inline. */
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

/**
 * Counts with tiktoken. The WASM encoders are acquired when the layer is built and freed when its
 * scope closes; the worker threads (see {@link Options}) start on the first large prompt and are
 * terminated when the scope closes. Counts of texts are memoized (bounded), because multi-turn chats
 * resend their history with every request.
 */
export const make = (options: Options = {}): Effect.Effect<Service, never, Scope.Scope> =>
  Effect.gen(function* () {
    const threshold = options.workerThreshold ?? 65_536
    const size = options.workers ?? 1
    // Built now, not on the first request: building an encoder stalls the event loop for hundreds
    // of milliseconds.
    const encoders = yield* Effect.acquireRelease(
      Effect.sync(
        () =>
          new Map<Encoding, Tiktoken>([
            ["o200k_base", get_encoding("o200k_base")],
            ["cl100k_base", get_encoding("cl100k_base")]
          ])
      ),
      (map) => Effect.sync(() => map.forEach((e) => e.free()))
    )
    const encoder = (name: Encoding): Tiktoken => {
      let e = encoders.get(name)
      if (e === undefined) {
        e = get_encoding(name)
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
        const known = countWith(request, (text) => {
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
      const perChar = tokensPerChar[encodingFor(model).encoding]
      return { tokens: countWith(request, (text) => Math.ceil(text.length * perChar)), exact: false }
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
        charsPerToken: {
          o200k_base: 1 / tokensPerChar.o200k_base,
          cl100k_base: 1 / tokensPerChar.cl100k_base
        }
      })
    })
  })

/** Counts with tiktoken and default {@link Options} (see {@link make}). */
export const layer: Layer.Layer<TokenCounter> = Layer.scoped(TokenCounter, make())

/** Counts with tiktoken and the given {@link Options} (see {@link make}). */
export const layerWith = (options: Options): Layer.Layer<TokenCounter> => Layer.scoped(TokenCounter, make(options))
