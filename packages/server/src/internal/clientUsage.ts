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
  /** For a budget: what the request may cost at most, and what is left of the budget (US dollars). */
  readonly costUsd?: number
  readonly leftUsd?: number
}

/**
 * What a request holds of its key's `tpm` and budgets from admission until its usage is known: its
 * prompt estimate plus the completion tokens it may use, and what those may cost at most.
 */
export interface Hold {
  readonly tokens: number
  readonly costUsd: number
}

/** A hold as taken at `at` (epoch ms): its bucket, day and month are where a correction goes. */
export interface Reservation extends Hold {
  readonly at: number
}

const NO_HOLD: Hold = { tokens: 0, costUsd: 0 }

/** Rounding of dollar sums must not refuse a request that fits a budget exactly. */
const EPSILON_USD = 1e-9

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

/** Whether `costUsd` more fits a budget of which `spent` is used: spent is below it, and the cost fits what is left. */
const fits = (spent: number, costUsd: number, budget: number) =>
  spent < budget && spent + costUsd <= budget + EPSILON_USD

/**
 * Admits one request against `limits`, counting it toward `rpm` and taking its `hold` on `tpm` and
 * the budgets at once, or says which limit it is over: the hold must fit what is left of each budget,
 * and of `tpm` — except that a request alone in its key's minute is admitted whatever it holds, or a
 * `max_tokens` above the limit would shut the key out for good. Concurrent requests thus never pass
 * a limit together; {@link correct} turns the hold into the real usage when the answer arrives.
 */
export const admit = (
  current: Usage | undefined,
  limits: Limits,
  now: number,
  hold: Hold = NO_HOLD
): readonly [Over | undefined, Usage] => {
  const usage = settle(current, now)
  const cost = hold.costUsd
  if (limits.dailyUsd !== undefined && !fits(usage.daySpend, cost, limits.dailyUsd))
    return [budgetOver("dailyUsd", nextDay(now), cost, limits.dailyUsd - usage.daySpend), usage]
  if (limits.monthlyUsd !== undefined && !fits(usage.monthSpend, cost, limits.monthlyUsd))
    return [budgetOver("monthlyUsd", nextMonth(now), cost, limits.monthlyUsd - usage.monthSpend), usage]
  if (limits.rpm !== undefined && sum(usage.window, 1) >= limits.rpm)
    return [{ limit: "rpm", retryAfterMs: untilFreed(usage.window, 1, now) }, usage]
  if (limits.tpm !== undefined) {
    const used = sum(usage.window, 2)
    if (used >= limits.tpm || (used > 0 && used + hold.tokens > limits.tpm))
      return [{ limit: "tpm", retryAfterMs: untilFreed(usage.window, 2, now) }, usage]
  }
  return [
    undefined,
    {
      ...usage,
      window: add(usage.window, now, 1, hold.tokens),
      daySpend: usage.daySpend + cost,
      monthSpend: usage.monthSpend + cost
    }
  ]
}

const budgetOver = (limit: "dailyUsd" | "monthlyUsd", retryAfterMs: number, costUsd: number, left: number): Over => ({
  limit,
  retryAfterMs,
  costUsd,
  leftUsd: Math.max(0, left)
})

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

/**
 * Turns a request's hold into what it really used (`tokens`, `costUsd`; both 0 to release it): the
 * difference goes to the second the hold was taken in, and to its day and month. A hold whose second
 * has left the window counted for its minute already: only usage beyond it is added, now; one whose
 * day or month is over was reset with it: the real cost counts in the new one.
 */
export const correct = (
  current: Usage | undefined,
  hold: Reservation,
  tokens: number,
  costUsd: number,
  now: number
): Usage => {
  const usage = settle(current, now)
  const start = hold.at - (hold.at % 1000)
  const delta = tokens - hold.tokens
  let window = usage.window
  const at = window.findIndex((bucket) => bucket[0] === start)
  if (at !== -1)
    window = window.map((bucket, i): Bucket => (i === at ? [start, bucket[1], Math.max(0, bucket[2] + delta)] : bucket))
  else if (delta > 0) window = add(window, now, 0, delta)
  const spend = (spent: number, same: boolean) => (same ? Math.max(0, spent + costUsd - hold.costUsd) : spent + costUsd)
  return {
    ...usage,
    window,
    daySpend: spend(usage.daySpend, usage.day === dayOf(hold.at)),
    monthSpend: spend(usage.monthSpend, usage.month === monthOf(hold.at))
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
