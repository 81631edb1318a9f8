/**
 * What one client key has used: its requests and tokens over a sliding minute (one bucket per
 * second), and its spend this UTC day and month. Pure reducers over a small JSON record, run through
 * `StateStore.local.modify` like the guards' state, so a shared store can hold it too.
 */

/** Milliseconds of the sliding window of a key's `rpm` / `tpm`. */
export const WINDOW_MS = 60_000

/** `[second start, requests, tokens]`. */
type Bucket = readonly [start: number, requests: number, tokens: number]

/** A key's usage, as stored. */
export interface Usage {
  readonly window: ReadonlyArray<Bucket>
  /** UTC day (`2026-01-31`) and month (`2026-01`) the spends are for. */
  readonly day: string
  readonly daySpend: number
  readonly month: string
  readonly monthSpend: number
}

/** The limits {@link admit} enforces. */
export interface Limits {
  readonly rpm?: number | undefined
  readonly tpm?: number | undefined
  readonly dailyUsd?: number | undefined
  readonly monthlyUsd?: number | undefined
}

/** Why a request was refused, and when to come back (ms from now). */
export interface Over {
  readonly limit: "rpm" | "tpm" | "dailyUsd" | "monthlyUsd"
  readonly retryAfterMs: number
}

const dayOf = (now: number) => new Date(now).toISOString().slice(0, 10)
const monthOf = (now: number) => new Date(now).toISOString().slice(0, 7)

/** The usage with buckets older than the window dropped and spends of past days and months reset. */
export const settle = (current: Usage | undefined, now: number): Usage => {
  const day = dayOf(now)
  const month = monthOf(now)
  if (current === undefined) return { window: [], day, daySpend: 0, month, monthSpend: 0 }
  const from = now - WINDOW_MS
  const window =
    current.window.length > 0 && current.window[0]![0] <= from
      ? current.window.filter(([s]) => s > from)
      : current.window
  return {
    window,
    day,
    daySpend: current.day === day ? current.daySpend : 0,
    month,
    monthSpend: current.month === month ? current.monthSpend : 0
  }
}

const sum = (window: ReadonlyArray<Bucket>, at: 1 | 2) => {
  let total = 0
  for (const bucket of window) total += bucket[at]
  return total
}

/** Milliseconds until the oldest bucket with something at `at` leaves the window. */
const untilFreed = (window: ReadonlyArray<Bucket>, at: 1 | 2, now: number) => {
  const oldest = window.find((bucket) => bucket[at] > 0)
  return oldest === undefined ? 0 : Math.max(1, oldest[0] + WINDOW_MS - now)
}

const nextDay = (now: number) => {
  const d = new Date(now)
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1) - now
}
const nextMonth = (now: number) => {
  const d = new Date(now)
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) - now
}

/** Adds to the bucket of the current second. */
const add = (window: ReadonlyArray<Bucket>, now: number, requests: number, tokens: number): ReadonlyArray<Bucket> => {
  const start = now - (now % 1000)
  const last = window[window.length - 1]
  if (last !== undefined && last[0] === start)
    return [...window.slice(0, -1), [start, last[1] + requests, last[2] + tokens]]
  return [...window, [start, requests, tokens]]
}

/**
 * Admits one request against `limits`, counting it toward `rpm`, or says which limit it is over.
 * Tokens are counted when the answer reports them ({@link record}): a key over its `tpm` is refused
 * until the minute slides past them.
 */
export const admit = (current: Usage | undefined, limits: Limits, now: number): readonly [Over | undefined, Usage] => {
  const usage = settle(current, now)
  if (limits.dailyUsd !== undefined && usage.daySpend >= limits.dailyUsd)
    return [{ limit: "dailyUsd", retryAfterMs: nextDay(now) }, usage]
  if (limits.monthlyUsd !== undefined && usage.monthSpend >= limits.monthlyUsd)
    return [{ limit: "monthlyUsd", retryAfterMs: nextMonth(now) }, usage]
  if (limits.rpm !== undefined && sum(usage.window, 1) >= limits.rpm)
    return [{ limit: "rpm", retryAfterMs: untilFreed(usage.window, 1, now) }, usage]
  if (limits.tpm !== undefined && sum(usage.window, 2) >= limits.tpm)
    return [{ limit: "tpm", retryAfterMs: untilFreed(usage.window, 2, now) }, usage]
  return [undefined, { ...usage, window: add(usage.window, now, 1, 0) }]
}

/** Records what an answered request used: its tokens and its cost in US dollars. */
export const record = (current: Usage | undefined, tokens: number, costUsd: number, now: number): Usage => {
  const usage = settle(current, now)
  return {
    ...usage,
    window: tokens > 0 ? add(usage.window, now, 0, tokens) : usage.window,
    daySpend: usage.daySpend + costUsd,
    monthSpend: usage.monthSpend + costUsd
  }
}

/** What a key has used now, for the admin API. */
export const summary = (current: Usage | undefined, now: number) => {
  const usage = settle(current, now)
  return {
    requestsLastMinute: sum(usage.window, 1),
    tokensLastMinute: sum(usage.window, 2),
    spentTodayUsd: usage.daySpend,
    spentThisMonthUsd: usage.monthSpend
  }
}
