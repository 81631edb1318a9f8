/** Weight and counter arithmetic shared by the strategies. */

/** The weight a candidate is drawn with: a finite positive `weight` as is, anything else 0 (never picked). */
export const usableWeight = (weight: number): number => (Number.isFinite(weight) && weight > 0 ? weight : 0)

/**
 * The weights a strategy draws with (see {@link usableWeight}). When no candidate has a usable
 * weight, every candidate counts as 1, so a pick always exists.
 */
export const effectiveWeights = (candidates: ReadonlyArray<{ readonly weight: number }>): Array<number> => {
  const weights = candidates.map((c) => usableWeight(c.weight))
  return weights.some((w) => w > 0) ? weights : weights.map(() => 1)
}

/** The sum of `weights`. */
export const sum = (weights: ReadonlyArray<number>): number => weights.reduce((acc, w) => acc + w, 0)

/**
 * Advances a pick counter kept with `StateStore.local.modify`: the next count is both the result
 * and the new state (a missing counter starts at 0, so the first pick is 1). Module-level, so a pick
 * builds no closure.
 */
export const advance = (current: number | undefined): readonly [number, number] => {
  const next = (current ?? 0) + 1
  return [next, next]
}

/**
 * The 0-based slot of the `n`th pick (counters start at 1) in a cycle of `length`. Safe for any
 * integer `n`, so a counter reset or tampered with in a shared store still yields a valid slot.
 */
export const slot = (n: number, length: number): number => (((n - 1) % length) + length) % length
