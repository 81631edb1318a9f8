/** Weight arithmetic shared by the weighted strategies. */

/**
 * The weights a strategy draws with: a finite positive `weight` counts as is, anything else as 0
 * (never picked). When no candidate has a usable weight, every candidate counts as 1, so a pick
 * always exists.
 */
export const effectiveWeights = (candidates: ReadonlyArray<{ readonly weight: number }>): Array<number> => {
  const weights = candidates.map((c) => (Number.isFinite(c.weight) && c.weight > 0 ? c.weight : 0))
  return weights.some((w) => w > 0) ? weights : weights.map(() => 1)
}

/** The sum of `weights`. */
export const sum = (weights: ReadonlyArray<number>): number => weights.reduce((acc, w) => acc + w, 0)

/**
 * The 0-based slot of the `n`th pick (counters start at 1) in a cycle of `length`. Safe for any
 * integer `n`, so a counter reset or tampered with in a shared store still yields a valid slot.
 */
export const slot = (n: number, length: number): number => (((n - 1) % length) + length) % length
