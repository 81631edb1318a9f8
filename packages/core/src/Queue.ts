/**
 * Queue: the stage where a request that no upstream can take now waits for capacity — in its first
 * pool's bounded line, by priority then FIFO — until a guard signals freed capacity, the earliest
 * `retryAfterMs` of its exclusions passes, or the pool's `queue.maxWaitMs` runs out. A request that
 * cannot wait (queueing off, the line full, capacity further away than the wait limit) is refused
 * with an honest `Retry-After`. No polling.
 */
import { Duration, Effect, Option } from "effect"
import type { Exclusion } from "./Errors.js"
import { RateLimited } from "./Errors.js"
import * as Guard from "./Guard.js"
import * as AdmissionQueue from "./internal/admissionQueue.js"
import type { Request } from "./internal/request.js"
import type { Pool } from "./Topology.js"

/** The stage. */
export interface Service {
  /** True when the request must wait before trying: others wait before it, or it was displaced. */
  readonly mustWait: (request: Request) => boolean
  /**
   * Waits for capacity the `waitable` exclusions say may come (none: for the request's turn), or
   * fails with {@link RateLimited} when waiting cannot help in time. `versions` are the guards'
   * versions read when the exclusions were found.
   */
  readonly wait: (
    request: Request,
    waitable: ReadonlyArray<Exclusion>,
    versions: ReadonlyArray<number>
  ) => Effect.Effect<void, RateLimited>
  /** Leaves the line, if the request is in it (served, refused or interrupted). */
  readonly leave: (request: Request) => Effect.Effect<void>
  /** The guards' versions now, to wait with later. */
  readonly versions: () => ReadonlyArray<number>
  /** Requests waiting in a pool's line now (0 for a pool nobody waited in). */
  readonly depth: (poolId: string) => number
}

/** Makes the stage; `soonestFree` tells a refusal when some upstream is expected back. */
export const make = (
  guards: ReadonlyArray<Guard.Guard>,
  soonestFree: (request: Request) => number | undefined
): Service => {
  const lines = new Map<string, AdmissionQueue.AdmissionQueue>()
  const lineOf = (pool: Pool) => {
    let line = lines.get(pool.id)
    if (line === undefined) {
      line = AdmissionQueue.make(pool.queue.maxSize)
      lines.set(pool.id, line)
    }
    return line
  }
  const signalling = guards.filter((g) => g.changed !== undefined && g.version !== undefined)
  const versions = () => Guard.versions(guards)

  const leave = (request: Request): Effect.Effect<void> =>
    Effect.suspend(() => {
      const ticket = request.ticket
      request.ticket = undefined
      return ticket === undefined ? Effect.void : ticket.leave
    })

  const mustWait = (request: Request): boolean => {
    const pool = request.match.pool
    if (request.ticket !== undefined) return !request.ticket.isHead()
    // Requests already waiting keep their order: a newcomer joins the line behind them.
    return pool.queue.maxSize > 0 && lines.get(pool.id) !== undefined && lines.get(pool.id)!.size() > 0
  }

  const wait: Service["wait"] = (request, waitable, seen) =>
    Effect.suspend(() => {
      const pool = request.match.pool
      const now = request.clock.unsafeCurrentTimeMillis()
      const startedAt = (request.waitStartedAt ??= now)
      let soonest: number | undefined
      for (const e of waitable) {
        if (e.retryAfterMs !== undefined && (soonest === undefined || e.retryAfterMs < soonest))
          soonest = e.retryAfterMs
      }
      const left = pool.queue.maxWaitMs - (now - startedAt)
      // A refusal's Retry-After: the wait this request learned, else when the stages expect some
      // upstream back (a window sliding, a hold expiring). Only capacity that frees on a release
      // (a concurrency limit) has no known time: then 1 s.
      const refuse = (reason: string, retryAfterMs: number | undefined) => {
        const ms = retryAfterMs ?? soonestFree(request.tick())
        return Effect.zipRight(
          leave(request),
          Effect.fail(
            new RateLimited({
              pool: pool.id,
              reason,
              retryAfterSeconds: Math.max(1, Math.ceil((ms ?? 1000) / 1000))
            })
          )
        )
      }
      if (pool.queue.maxSize === 0 || pool.queue.maxWaitMs === 0) {
        return refuse("no upstream has capacity now and queueing is off", soonest)
      }
      // Capacity that comes back when requests in flight finish has no known time: wait for it.
      const releaseBound = waitable.some((e) => e.retryAfterMs === undefined || e.mayFreeSooner === true)
      if (!releaseBound && soonest !== undefined && soonest > left) {
        return refuse(
          `no upstream has capacity for ${Math.ceil(soonest / 1000)}s, longer than the queue's wait limit`,
          soonest
        )
      }
      if (left <= 0) return refuse(`waited ${pool.queue.maxWaitMs}ms in the queue`, soonest)
      const waitTurn = (): Effect.Effect<void, RateLimited> => {
        const ticket = request.ticket!
        // Not at the head: wait for our turn, then try at once (the one before us may have left
        // capacity). At the head: wait for freed capacity or the earliest retry time. Both bounded by
        // the deadline. Only the head tries after a capacity signal, so priority order holds.
        const signals = signalling.map((g, i) => g.changed!(seen[i] ?? g.version!()))
        const wake = !ticket.isHead()
          ? ticket.turn
          : signals.length === 0 && soonest === undefined
            ? Effect.never
            : Effect.raceAll([
                ...signals,
                ...(soonest === undefined ? [] : [Effect.sleep(Duration.millis(Math.max(1, soonest)))])
              ])
        return Effect.flatMap(Effect.option(Effect.timeout(wake, Duration.millis(left))), (waited) => {
          const after = request.clock.unsafeCurrentTimeMillis()
          request.decision.queueWaitMs = after - startedAt
          return Option.isNone(waited)
            ? refuse(
                `waited ${pool.queue.maxWaitMs}ms in the queue`,
                soonest === undefined ? undefined : Math.max(0, soonest - (after - now))
              )
            : Effect.void
        })
      }
      if (request.ticket !== undefined) return waitTurn()
      return Effect.flatMap(Effect.either(lineOf(pool).join(request.priority)), (joined) => {
        if (joined._tag === "Left") return refuse(`the queue is full (${pool.queue.maxSize} waiting)`, soonest)
        request.ticket = joined.right
        // A newcomer that has not tried yet and lands at the head tries at once.
        if (waitable.length === 0 && joined.right.isHead()) return Effect.void
        return waitTurn()
      })
    })

  const depth = (poolId: string) => lines.get(poolId)?.size() ?? 0
  return { mustWait, wait, leave, versions, depth }
}
