/**
 * Decayed latency per upstream: how long its whole answers took, apart from that how long its
 * streams took to their first content, and how long its successful attempts took per output token,
 * as averages that forget with time (half of an old average's weight goes every
 * {@link HALF_LIFE_MS}), kept in the state store beside the guards' state.
 */
import type { Local } from "../StateStore.js"
import { keyCache } from "./keys.js"

/**
 * A decayed average: milliseconds, when it was last updated (epoch ms), how many samples it saw, and
 * its peak: the worst recent sample, jumped to at once and forgotten as the average is (peak-EWMA, as
 * Finagle and tower balance by), so one slow answer counts at once.
 */
export interface Decayed {
  readonly ms: number
  readonly at: number
  readonly samples: number
  readonly peak: number
}

/**
 * What is averaged: a whole answer's latency, a stream's time to its first content, or a successful
 * attempt's latency per output token (answers and streams alike, when the upstream reported usage).
 */
export type Kind = "answer" | "first-content" | "per-output-token"

/** After this long, an old average weighs half of what it did. */
export const HALF_LIFE_MS = 10_000

/** The most an old average keeps against a new sample, however soon after it comes. */
const MAX_KEPT = 0.9

const keys = {
  answer: keyCache("latency:answer:"),
  "first-content": keyCache("latency:first-content:"),
  "per-output-token": keyCache("latency:per-output-token:")
}

const keyOf = (kind: Kind, upstreamId: string): string => keys[kind](upstreamId)

/** The average after one more sample of `ms` at `now`. */
export const decayed = (current: Decayed | undefined, ms: number, now: number): Decayed => {
  if (current === undefined) return { ms, at: now, samples: 1, peak: ms }
  const kept = Math.min(MAX_KEPT, Math.pow(0.5, Math.max(0, now - current.at) / HALF_LIFE_MS))
  return {
    ms: kept * current.ms + (1 - kept) * ms,
    at: now,
    samples: current.samples + 1,
    peak: ms >= current.peak ? ms : kept * current.peak + (1 - kept) * ms
  }
}

/** Records a sample. Synchronous: one state update, no Effect. */
export const record = (local: Local, kind: Kind, upstreamId: string, ms: number, now: number): void =>
  local.modify<Decayed, void>(keyOf(kind, upstreamId), (current) => [undefined, decayed(current, ms, now)])

/**
 * Records an attempt cancelled after `waitedMs` without its answer (a hedge's loser): its real time
 * is unknown, only longer. Counted as `waitedMs` plus the current average, the time still to go
 * when what remains does not depend on what was waited (a memoryless model): the wait alone would
 * teach that an upstream is only as slow as the moment it was cancelled, and a hedge cancels a slow
 * upstream's attempts at about the same moment however slow it is. Each race it loses raises its
 * figure again, as its real answers would. The wait alone when there is no average yet.
 */
export const recordAtLeast = (local: Local, kind: Kind, upstreamId: string, waitedMs: number, now: number): void =>
  local.modify<Decayed, void>(keyOf(kind, upstreamId), (current) => [
    undefined,
    decayed(current, waitedMs + (current?.ms ?? 0), now)
  ])

/**
 * Records a hedge cancelled after `waitedMs` because the attempt it hedged delivered first: it may
 * have lost only by starting later, so its wait says nothing about its speed unless it passed its
 * average. Counted as the larger of the two (the average refreshed when the wait is shorter).
 */
export const recordLowerBound = (local: Local, kind: Kind, upstreamId: string, waitedMs: number, now: number): void =>
  local.modify<Decayed, void>(keyOf(kind, upstreamId), (current) => [
    undefined,
    decayed(current, Math.max(waitedMs, current?.ms ?? 0), now)
  ])

/** The current average, if the upstream has answered at all. */
export const read = (local: Local, kind: Kind, upstreamId: string): Decayed | undefined =>
  local.peek<Decayed>(keyOf(kind, upstreamId))
