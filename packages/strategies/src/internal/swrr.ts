/** Smooth weighted round robin (nginx) schedules, precomputed so a shared counter can index them. */
import { sum } from "./weights.js"

/**
 * Longest schedule built. Larger weight sums are scaled down to about this many slots (see
 * {@link scheduleWeights}), which bounds the memory and the time to build one schedule.
 */
export const maxScheduleLength = 10_000

const gcd = (a: number, b: number): number => {
  let x = a
  let y = b
  while (y !== 0) [x, y] = [y, x % y]
  return x
}

const reduce = (weights: ReadonlyArray<number>): Array<number> => {
  const divisor = weights.reduce(gcd, 0)
  return divisor > 1 ? weights.map((w) => w / divisor) : [...weights]
}

/**
 * Non-negative integer weights in the proportions of `weights`, summing to at most about
 * {@link maxScheduleLength}. Integer weights are divided by their greatest common divisor, which
 * keeps proportions exact (1000:3000 becomes 1:3). Weights still summing to more than the limit,
 * or not integers, are scaled to the limit and rounded, keeping every positive weight at least 1;
 * proportions then hold to within about one part in {@link maxScheduleLength}.
 */
export const scheduleWeights = (weights: ReadonlyArray<number>): Array<number> => {
  const integral = weights.every(Number.isInteger)
  const reduced = integral ? reduce(weights) : [...weights]
  const total = sum(reduced)
  if (integral && total <= maxScheduleLength) return reduced
  return reduce(reduced.map((w) => (w === 0 ? 0 : Math.max(1, Math.round((w * maxScheduleLength) / total)))))
}

/**
 * One full cycle of smooth weighted round robin over integer `weights`, as candidate indices: at
 * each pick every candidate's current value grows by its weight, the largest (first on ties) is
 * picked and loses the total. A cycle has `sum(weights)` picks, each index appears exactly its
 * weight times, and picks of a heavy candidate are spread evenly (5,1,1 gives 0,0,1,0,2,0,0).
 */
export const schedule = (weights: ReadonlyArray<number>): Uint32Array => {
  const total = sum(weights)
  const current = weights.map(() => 0)
  const picks = new Uint32Array(total)
  for (let k = 0; k < total; k++) {
    let best = -1
    for (let i = 0; i < weights.length; i++) {
      const weight = weights[i]!
      if (weight === 0) continue
      current[i]! += weight
      if (best < 0 || current[i]! > current[best]!) best = i
    }
    current[best]! -= total
    picks[k] = best
  }
  return picks
}
