/**
 * Ejection by lost races: in a pool that hedges, an upstream whose attempts keep losing the race to
 * first content against hedges that started after them is slow, whatever its averages say. After
 * `ejectAfterLosses` such races in a row it gets no new attempt in the pool for `ejectMs` (doubled
 * for each ejection in a row, capped), as Envoy's outlier detection ejects by errors. Strategies that
 * do not rank by latency would otherwise keep sending it their share of first attempts, more than a
 * hedge budget can rescue.
 *
 * Pure reducers over one JSON record per pool and upstream in the state store's `local` state
 * (`hedge-eject:<pool>:<upstream>`), so a shared store can serve it; time is handed in (the
 * request's `Clock`).
 */
import type { Exclusion } from "../Errors.js"
import type { Local } from "../StateStore.js"
import type { Pool, Upstream } from "../Topology.js"
import { keyCache } from "./keys.js"

/** The stage named in the exclusion of an ejected upstream. */
export const STAGE = "hedge"

/** Races lost in a row before an ejection, when the pool's `hedge` does not say. */
export const DEFAULT_EJECT_AFTER_LOSSES = 3
/** How long a first ejection lasts, when the pool's `hedge` does not say. */
export const DEFAULT_EJECT_MS = 30_000
/** The most of a pool's enabled upstreams ejected at once, in percent, when its `hedge` does not say. */
export const DEFAULT_MAX_EJECTED_PERCENT = 50

/** An ejection in a row lasts twice the one before, up to this many times `ejectMs`. */
const MAX_EJECT_FACTOR = 10

/** An ejection just made: when it ends (epoch milliseconds), and the races lost in a row that made it. */
export interface Ejected {
  readonly until: number
  readonly losses: number
}

/** One upstream's record in one pool. */
interface Record_ {
  /** Races lost in a row: since its last stream in time, or since its last ejection ended. */
  readonly losses: number
  /** Ejections since its last stream in time: the next lasts twice the last. */
  readonly ejections: number
  /** Epoch milliseconds the current ejection ends; absent when none was made since counting restarted. */
  readonly until?: number
}

const keysOf = new Map<string, (upstreamId: string) => string>()

const keyOf = (pool: Pool, upstreamId: string): string => {
  let keys = keysOf.get(pool.id)
  if (keys === undefined) keysOf.set(pool.id, (keys = keyCache(`hedge-eject:${pool.id}:`)))
  return keys(upstreamId)
}

/** Whether `pool` ejects upstreams that keep losing races (it hedges, and `ejectAfterLosses` is not 0). */
export const ejects = (pool: Pool): boolean =>
  pool.hedge !== undefined && (pool.hedge.ejectAfterLosses ?? DEFAULT_EJECT_AFTER_LOSSES) > 0

/** Whether `upstream` is ejected from `pool` at `now`. A read: allocates nothing. */
export const isEjected = (local: Local, pool: Pool, upstreamId: string, now: number): boolean => {
  const record = local.peek<Record_>(keyOf(pool, upstreamId))
  return record?.until !== undefined && record.until > now
}

/** The exclusion of an ejected upstream from `pool`'s candidates (call when {@link isEjected}). */
export const exclusionOf = (local: Local, pool: Pool, upstream: Upstream): Exclusion => {
  const record = local.peek<Record_>(keyOf(pool, upstream.id))
  return {
    upstream: upstream.id,
    stage: STAGE,
    reason: `lost ${record?.losses ?? 0} races to first content in a row; ejected until ${new Date(record?.until ?? 0).toISOString()}`
  }
}

/**
 * How many upstreams of `pool` may be ejected at once: `maxEjectedPercent` of its enabled ones,
 * rounded down, and never all of them.
 */
const maxEjected = (pool: Pool): number => {
  let enabled = 0
  for (const u of pool.upstreams) if (u.enabled) enabled++
  const percent = pool.hedge?.maxEjectedPercent ?? DEFAULT_MAX_EJECTED_PERCENT
  return Math.min(enabled - 1, Math.floor((enabled * percent) / 100))
}

/** The enabled upstreams of `pool` other than `upstreamId` ejected at `now`. */
const ejectedBesides = (local: Local, pool: Pool, upstreamId: string, now: number): number => {
  let ejected = 0
  for (const u of pool.upstreams) if (u.enabled && u.id !== upstreamId && isEjected(local, pool, u.id, now)) ejected++
  return ejected
}

/**
 * Counts a race to first content that the attempt on `upstreamId` lost to a hedge that started after
 * it. Returns the ejection when this loss made one, else undefined. An
 * upstream already ejected (an attempt admitted before) counts nothing more; one the pool cannot
 * spare now (see `maxEjectedPercent`) keeps counting, and is ejected at its next loss once it can be.
 */
export const lost = (local: Local, pool: Pool, upstreamId: string, now: number): Ejected | undefined => {
  const hedge = pool.hedge!
  const after = hedge.ejectAfterLosses ?? DEFAULT_EJECT_AFTER_LOSSES
  const ejectMs = hedge.ejectMs ?? DEFAULT_EJECT_MS
  // Read before the update, on this instance's state in the same synchronous step: no other request
  // can eject one in between.
  const room = ejectedBesides(local, pool, upstreamId, now) < maxEjected(pool)
  return local.modify<Record_, Ejected | undefined>(keyOf(pool, upstreamId), (current) => {
    if (current?.until !== undefined && current.until > now) return [undefined, current]
    // After an ejection ended, the count starts again: it takes as many losses to eject it again.
    const losses = (current === undefined || current.until !== undefined ? 0 : current.losses) + 1
    const ejections = current?.ejections ?? 0
    if (losses < after || !room) return [undefined, { losses, ejections }]
    const until = now + Math.min(ejectMs * 2 ** ejections, ejectMs * MAX_EJECT_FACTOR)
    const ejected = { losses, ejections: ejections + 1, until }
    return [ejected, ejected]
  })
}

/**
 * Counts a stream on `upstreamId` whose first content came in time (no hedge needed, or it won the
 * race): its losses and its ejections in a row start again. An ejection under way runs its course.
 */
export const inTime = (local: Local, pool: Pool, upstreamId: string, now: number): void => {
  const key = keyOf(pool, upstreamId)
  // Most streams come in time: nothing to write for an upstream without a record.
  if (local.peek<Record_>(key) === undefined) return
  local.modify<Record_, void>(key, (current) => {
    if (current === undefined) return [undefined, current]
    return [undefined, current.until !== undefined && current.until > now ? { ...current, ejections: 0 } : undefined]
  })
}
