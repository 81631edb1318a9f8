/**
 * How a lab upstream behaves over time: its latency distribution (a base, a uniform jitter, a long
 * tail), a degradation from a moment on, its prompt cache and its prices. Plain functions over the
 * upstream's model and a draw in [0, 1); the lab draws from Effect's `Random`.
 */
import type { Wire } from "@sluice/core"
import { estimatePromptTokens, estimateTextTokens } from "./simulatorContent.js"

/** A prompt cache: a repeated prefix answers sooner and its tokens cost less. Every field is optional. */
export interface CacheModel {
  /** The shortest prefix, in prompt tokens, the upstream caches. Default 256. */
  readonly minPrefixTokens?: number
  /** How long an entry lives since it was last used, in milliseconds. Default 300,000 (5 minutes). */
  readonly ttlMs?: number
  /** Prefixes it holds at once; the least recently used goes first (a KV cache is memory). Default 10,000. */
  readonly maxEntries?: number
  /** Time to first token of a hit, as a share of a miss's. Default 0.3. */
  readonly latencyFactor?: number
  /** Price of a cached input token, as a share of an input token's. Default 0.1. */
  readonly priceFactor?: number
}

/** From `atMs` after the lab was made, the upstream degrades. */
export interface DegradeModel {
  /** Milliseconds after the lab was made. */
  readonly atMs: number
  /** Its latency is multiplied by this from then on. Default 1. */
  readonly latencyMultiplier?: number
  /** Its failure rate from then on (replacing `failureRate`). Default: unchanged. */
  readonly failureRate?: number
}

/** US dollars per million tokens. */
export interface PriceModel {
  readonly inputPerMillion: number
  readonly outputPerMillion: number
}

/** The latency and failure fields of an upstream's model. */
export interface TimingModel {
  readonly latencyMs?: number
  readonly jitterMs?: number
  readonly tail?: { readonly probability: number; readonly multiplier: number }
  readonly perTokenMs?: number
  readonly failureRate?: number
  readonly degrade?: DegradeModel
  readonly cache?: CacheModel
}

const DEFAULT_MIN_PREFIX_TOKENS = 256
const DEFAULT_CACHE_TTL_MS = 300_000
const DEFAULT_CACHE_ENTRIES = 10_000
const DEFAULT_CACHE_LATENCY_FACTOR = 0.3
const DEFAULT_CACHE_PRICE_FACTOR = 0.1

/** Whether the upstream has degraded by `now` (`elapsed` ms after the lab was made). */
const degraded = (model: TimingModel, elapsed: number): DegradeModel | undefined =>
  model.degrade !== undefined && elapsed >= model.degrade.atMs ? model.degrade : undefined

/** The failure rate `elapsed` ms after the lab was made. */
export const failureRateAt = (model: TimingModel, elapsed: number): number =>
  degraded(model, elapsed)?.failureRate ?? model.failureRate ?? 0

/**
 * Milliseconds to the first content of an answer `elapsed` ms after the lab was made, from two
 * draws in [0, 1): the jitter's and the tail's. A cache hit takes `latencyFactor` of it.
 */
export const firstTokenMs = (
  model: TimingModel,
  elapsed: number,
  hit: boolean,
  jitter: number,
  tail: number
): number => {
  let ms = (model.latencyMs ?? 0) + jitter * (model.jitterMs ?? 0)
  if (model.tail !== undefined && tail < model.tail.probability) ms *= model.tail.multiplier
  ms *= degraded(model, elapsed)?.latencyMultiplier ?? 1
  if (hit) ms *= model.cache?.latencyFactor ?? DEFAULT_CACHE_LATENCY_FACTOR
  return Math.round(ms)
}

/** Milliseconds from the first content to the end of an answer of `completion` tokens. */
export const generationMs = (model: TimingModel, elapsed: number, completion: number): number =>
  Math.round((model.perTokenMs ?? 0) * Math.max(0, completion - 1) * (degraded(model, elapsed)?.latencyMultiplier ?? 1))

/** The cacheable prefix of a request: its tools and every message but the last, and its tokens. */
export interface Prefix {
  readonly key: string
  readonly tokens: number
}

/** The request's cacheable prefix, or undefined when it is shorter than the cache's minimum. */
export const prefixOf = (cache: CacheModel, request: Wire.ChatCompletionRequest): Prefix | undefined => {
  const head = request.messages.slice(0, -1)
  const tools = request.tools === undefined ? "" : JSON.stringify(request.tools)
  const tokens = estimatePromptTokens(head) + estimateTextTokens(tools)
  if (head.length === 0 || tokens < (cache.minPrefixTokens ?? DEFAULT_MIN_PREFIX_TOKENS)) return undefined
  return { key: tools + JSON.stringify(head), tokens }
}

/** An upstream's prompt cache: prefixes, least recently used first, and when each expires. */
export class PromptCache {
  private readonly entries = new Map<string, number>()
  constructor(private readonly model: CacheModel) {}

  /** Looks `prefix` up at `now` and (re)writes it as the most recently used: true on a hit. */
  use(prefix: Prefix, now: number): boolean {
    const expires = this.entries.get(prefix.key)
    const hit = expires !== undefined && expires > now
    this.entries.delete(prefix.key)
    this.entries.set(prefix.key, now + (this.model.ttlMs ?? DEFAULT_CACHE_TTL_MS))
    if (this.entries.size > (this.model.maxEntries ?? DEFAULT_CACHE_ENTRIES)) {
      this.entries.delete(this.entries.keys().next().value!)
    }
    return hit
  }
}

/** The price of an answer: cached prompt tokens at the cache's share of the input price. */
export const costOf = (
  pricing: PriceModel | undefined,
  cache: CacheModel | undefined,
  prompt: number,
  cached: number,
  completion: number
): number => {
  if (pricing === undefined) return 0
  const factor = cache?.priceFactor ?? DEFAULT_CACHE_PRICE_FACTOR
  const input = (prompt - cached + cached * factor) * pricing.inputPerMillion
  return (input + completion * pricing.outputPerMillion) / 1_000_000
}
