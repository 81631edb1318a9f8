/**
 * A hash ring over a pool's upstreams for consistent hashing: each upstream owns points on a 32-bit
 * circle in proportion to its weight, and a key belongs to the owner of the first point at or after
 * its hash. Adding an upstream takes over only the arcs its new points cut, about 1/n of the keys.
 */
import { Strategy } from "@sluice/core"
import type { Topology } from "@sluice/core"
import { usableWeight } from "./weights.js"

/** Points per upstream of average weight: enough that arcs stay within a few percent of even. */
export const POINTS = 160

/** The most points a ring holds: large pools get fewer points per upstream. */
const MAX_POINTS = 1 << 20

/** A ring: sorted points, their owners (indices into `upstreams`), and each upstream's index. */
export interface Ring {
  readonly upstreams: ReadonlyArray<Topology.Upstream>
  readonly points: Uint32Array
  readonly owners: Uint32Array
  readonly index: ReadonlyMap<Topology.Upstream, number>
  /** Scratch marks for one pick (`stamp` is moved per pick, so they are never cleared). */
  readonly candidate: Uint32Array
  readonly visited: Uint32Array
  stamp: number
}

/** Builds the ring of `upstreams`. Points are keyed by upstream id, so a ring rebuilt after a reload agrees. */
export const build = (upstreams: ReadonlyArray<Topology.Upstream>): Ring => {
  const weights = upstreams.map((u) => usableWeight(u.weight) || 1)
  const mean = weights.reduce((a, b) => a + b, 0) / Math.max(1, weights.length)
  const perUnit = Math.max(1, Math.min(POINTS, Math.floor(MAX_POINTS / Math.max(1, upstreams.length))))
  const counts = weights.map((w) => Math.max(1, Math.round((perUnit * w) / mean)))
  const total = counts.reduce((a, b) => a + b, 0)
  // Hash and owner packed in one float (hash × 2^20 + owner): a plain numeric sort orders both.
  const packed = new Float64Array(total)
  let at = 0
  upstreams.forEach((upstream, owner) => {
    for (let k = 0; k < counts[owner]!; k++) packed[at++] = Strategy.hash(`${upstream.id}#${k}`) * 1_048_576 + owner
  })
  packed.sort()
  const points = new Uint32Array(total)
  const owners = new Uint32Array(total)
  for (let i = 0; i < total; i++) {
    points[i] = Math.floor(packed[i]! / 1_048_576)
    owners[i] = packed[i]! % 1_048_576
  }
  return {
    upstreams,
    points,
    owners,
    index: new Map(upstreams.map((u, i) => [u, i])),
    candidate: new Uint32Array(upstreams.length),
    visited: new Uint32Array(upstreams.length),
    stamp: 0
  }
}

/** The position of the first point at or after `hash` (wrapping to 0). */
export const seek = (ring: Ring, hash: number): number => {
  const points = ring.points
  let lo = 0
  let hi = points.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (points[mid]! < hash) lo = mid + 1
    else hi = mid
  }
  return lo === points.length ? 0 : lo
}
