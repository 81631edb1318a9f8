/**
 * Per-minute totals of the last hour, kept on the server for the dashboard's charts (`GET
 * /admin/stats`): requests, errors, tokens, spend, and latency and time-to-first-chunk quantiles.
 *
 * Sixty slots, one per minute of the clock, allocated once: a request's {@link MinuteStats.add} is
 * O(1) and allocates nothing — a slot whose minute has passed is reset in place when a later minute
 * reuses it. Quantiles come from a fixed histogram of log-spaced buckets (four per doubling, about
 * 9% apart), clamped to the minute's smallest and largest value, so a minute whose requests all took
 * the same time shows that time exactly.
 */
import type { Decision } from "@sluice/core"

const MINUTE_MS = 60_000
/** Minutes kept, the current one included. */
export const MINUTES = 60
/** Buckets per doubling of milliseconds. */
const STEPS = 4
/** Buckets: bucket `i` holds values up to `2^(i / STEPS)` ms (above 2^24 ms, about 4.7 hours, all in the last). */
const BUCKETS = 24 * STEPS + 1

/** The bucket of a value in milliseconds. */
const bucketOf = (ms: number): number => (ms <= 1 ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log2(ms) * STEPS - 1e-9)))

/** A fixed histogram of milliseconds, reset in place. */
class Histogram {
  readonly counts = new Uint32Array(BUCKETS)
  count = 0
  min = Infinity
  max = -Infinity
  reset(): void {
    if (this.count === 0) return
    this.counts.fill(0)
    this.count = 0
    this.min = Infinity
    this.max = -Infinity
  }
  add(ms: number): void {
    this.counts[bucketOf(ms)]! += 1
    this.count += 1
    if (ms < this.min) this.min = ms
    if (ms > this.max) this.max = ms
  }
  /** The `q` quantile (0..1), as its bucket's upper bound within [min, max]; null when empty. */
  quantile(q: number): number | null {
    if (this.count === 0) return null
    const rank = Math.max(1, Math.ceil(q * this.count))
    let seen = 0
    let i = 0
    for (; i < BUCKETS - 1; i++) {
      seen += this.counts[i]!
      if (seen >= rank) break
    }
    return Math.min(this.max, Math.max(this.min, 2 ** (i / STEPS)))
  }
}

/** One minute's totals. */
class Slot {
  /** The minute (epoch ms / 60,000) this slot counts; -1 when never used. */
  minute = -1
  requests = 0
  errors = 0
  inputTokens = 0
  outputTokens = 0
  spendUsd = 0
  readonly latency = new Histogram()
  readonly firstChunk = new Histogram()
  reset(minute: number): void {
    this.minute = minute
    this.requests = 0
    this.errors = 0
    this.inputTokens = 0
    this.outputTokens = 0
    this.spendUsd = 0
    this.latency.reset()
    this.firstChunk.reset()
  }
}

/** p50 and p99 of a minute, in milliseconds; null for a minute without samples. */
export interface Quantiles {
  readonly p50: number
  readonly p99: number
}

/** One minute as `GET /admin/stats` shows it. */
export interface Minute {
  /** The minute's start, epoch milliseconds. */
  readonly start: number
  readonly requests: number
  readonly errors: number
  readonly inputTokens: number
  readonly outputTokens: number
  readonly spendUsd: number
  readonly latencyMs: Quantiles | null
  readonly firstChunkMs: Quantiles | null
}

const quantiles = (h: Histogram): Quantiles | null =>
  h.count === 0 ? null : { p50: h.quantile(0.5)!, p99: h.quantile(0.99)! }

/** The totals of the last {@link MINUTES} minutes. */
export class MinuteStats {
  private readonly slots: ReadonlyArray<Slot> = Array.from({ length: MINUTES }, () => new Slot())

  /**
   * Counts a finished request's decision, at the minute it finished (`startedAt + durationMs`), with
   * its cost in US dollars. O(1) and allocation-free; a decision older than the hour is dropped.
   */
  add(d: Decision.Decision, costUsd: number): void {
    const minute = Math.floor((d.startedAt + d.durationMs) / MINUTE_MS)
    const slot = this.slots[((minute % MINUTES) + MINUTES) % MINUTES]!
    if (slot.minute !== minute) {
      if (slot.minute > minute) return
      slot.reset(minute)
    }
    slot.requests += 1
    if (d.outcome === "error") slot.errors += 1
    slot.inputTokens += d.inputTokens ?? 0
    slot.outputTokens += d.outputTokens ?? 0
    slot.spendUsd += costUsd
    slot.latency.add(d.durationMs)
    if (d.firstChunkMs !== undefined) slot.firstChunk.add(d.firstChunkMs)
  }

  /** The last {@link MINUTES} minutes up to the one holding `nowMs`, oldest first; empty minutes as zeros. */
  minutes(nowMs: number): Array<Minute> {
    const current = Math.floor(nowMs / MINUTE_MS)
    const out: Array<Minute> = []
    for (let minute = current - MINUTES + 1; minute <= current; minute++) {
      const slot = this.slots[((minute % MINUTES) + MINUTES) % MINUTES]!
      const kept = slot.minute === minute
      out.push({
        start: minute * MINUTE_MS,
        requests: kept ? slot.requests : 0,
        errors: kept ? slot.errors : 0,
        inputTokens: kept ? slot.inputTokens : 0,
        outputTokens: kept ? slot.outputTokens : 0,
        spendUsd: kept ? slot.spendUsd : 0,
        latencyMs: kept ? quantiles(slot.latency) : null,
        firstChunkMs: kept ? quantiles(slot.firstChunk) : null
      })
    }
    return out
  }
}
