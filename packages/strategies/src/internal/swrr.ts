/** Smooth weighted round robin (nginx) schedules, precomputed so a counter can index them, and their cache. */
import { effectiveWeights, sum } from "./weights.js"

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

/** What a schedule is built from: a candidate's id and weight. */
interface Member {
  readonly id: string
  readonly weight: number
}

/** The schedule a pool used last, with the candidates it was for. */
interface Recent {
  readonly members: ReadonlyArray<Member>
  readonly cycle: Uint32Array
}

const sameMembers = (a: ReadonlyArray<Member>, b: ReadonlyArray<Member>): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/**
 * Schedules for candidate sets, built on first use. Each pool's last schedule is remembered with
 * its candidates, so a pick among the same candidates as the pool's last one only compares
 * references and allocates nothing. Any other set is looked up by candidate ids and weights among
 * at most `capacity` schedules, least recently looked up evicted first.
 */
export const scheduleCache = (capacity: number) => {
  const byKey = new Map<string, Uint32Array>()
  const recent = new WeakMap<object, Recent>()

  const lookup = (members: ReadonlyArray<Member>): Uint32Array => {
    const key = JSON.stringify(members.map((m) => [m.id, m.weight]))
    const hit = byKey.get(key)
    if (hit !== undefined) {
      byKey.delete(key)
      byKey.set(key, hit)
      return hit
    }
    const built = schedule(scheduleWeights(effectiveWeights(members)))
    if (byKey.size >= capacity) {
      const oldest = byKey.keys().next()
      if (oldest.done !== true) byKey.delete(oldest.value)
    }
    byKey.set(key, built)
    return built
  }

  return (pool: object, members: ReadonlyArray<Member>): Uint32Array => {
    const last = recent.get(pool)
    if (last !== undefined && sameMembers(last.members, members)) return last.cycle
    const cycle = lookup(members)
    recent.set(pool, { members: [...members], cycle })
    return cycle
  }
}
