/**
 * The simulated upstream's rate limits: a sliding log of what was admitted in the last window, and
 * durations in the format OpenAI's `x-ratelimit-reset-*` headers use.
 */

/** A sliding window over admitted amounts (requests or tokens), in real milliseconds. */
export class SlidingWindow {
  private times: Array<number> = []
  private amounts: Array<number> = []
  private head = 0
  private total = 0

  constructor(readonly windowMs: number) {}

  /** What was admitted within the window ending at `now`. */
  used(now: number): number {
    this.prune(now)
    return this.total
  }

  /**
   * Milliseconds until `amount` more fits under `limit`: 0 when it fits now, `Infinity` when it can
   * never fit (`amount > limit`).
   */
  waitMs(now: number, amount: number, limit: number): number {
    this.prune(now)
    if (this.total + amount <= limit) return 0
    if (amount > limit) return Infinity
    let freed = 0
    for (let i = this.head; i < this.times.length; i++) {
      freed += this.amounts[i]!
      if (this.total - freed + amount <= limit) return this.times[i]! + this.windowMs - now
    }
    return this.windowMs
  }

  /** Records `amount` admitted at `now`. */
  add(now: number, amount: number): void {
    this.times.push(now)
    this.amounts.push(amount)
    this.total += amount
  }

  /** Milliseconds until everything admitted so far has left the window. */
  resetMs(now: number): number {
    this.prune(now)
    const last = this.times.length - 1
    return last >= this.head ? this.times[last]! + this.windowMs - now : 0
  }

  /** Forgets everything admitted. */
  clear(): void {
    this.times = []
    this.amounts = []
    this.head = 0
    this.total = 0
  }

  private prune(now: number): void {
    const cutoff = now - this.windowMs
    const times = this.times
    let head = this.head
    while (head < times.length && times[head]! <= cutoff) {
      this.total -= this.amounts[head]!
      head++
    }
    if (head > 1024 && head * 2 >= times.length) {
      this.times = times.slice(head)
      this.amounts = this.amounts.slice(head)
      head = 0
    }
    this.head = head
  }
}

/**
 * A duration the way OpenAI's `x-ratelimit-reset-*` headers write it (Go's format): `"0s"`,
 * `"250ms"`, `"12.5s"`, `"1m0s"`. Rounded up to the millisecond.
 */
export const formatDuration = (ms: number): string => {
  const total = Math.ceil(ms)
  if (total <= 0) return "0s"
  if (total < 1000) return `${total}ms`
  const minutes = Math.floor(total / 60_000)
  const seconds = (total - minutes * 60_000) / 1000
  return minutes > 0 ? `${minutes}m${seconds}s` : `${seconds}s`
}
