/**
 * A pool's waiting line for requests that no upstream can take now. Highest priority first, FIFO
 * within a priority. Only the head waits for capacity; the others wait for their turn, so capacity
 * that frees goes to the head first and nobody polls.
 */
import { Deferred, Effect } from "effect"

interface Waiter {
  readonly priority: number
  readonly seq: number
  /** Completed when this waiter becomes the head of the line; replaced when it is displaced. */
  turn: Deferred.Deferred<void>
}

/** One pool's line. */
export interface AdmissionQueue {
  /** Requests waiting now. */
  readonly size: () => number
  /**
   * Joins the line (fails with `"full"` when it holds `maxSize` already) and returns a ticket. The
   * ticket's `turn` completes when it is the head; `leave` must be called exactly once.
   */
  readonly join: (priority: number) => Effect.Effect<Ticket, "full">
}

/** A place in the line. */
export interface Ticket {
  /** Completes when this ticket is at the head of the line. */
  readonly turn: Effect.Effect<void>
  /** Whether this ticket is at the head now (only the head may take freed capacity). */
  readonly isHead: () => boolean
  /** Leaves the line (served, refused or interrupted); the next waiter becomes the head. */
  readonly leave: Effect.Effect<void>
}

/** Makes a line holding at most `maxSize` waiters. */
export const make = (maxSize: number): AdmissionQueue => {
  const line: Array<Waiter> = []
  let seq = 0
  const promoteHead = Effect.suspend(() => {
    const head = line[0]
    return head === undefined ? Effect.void : Deferred.succeed(head.turn, undefined).pipe(Effect.asVoid)
  })
  return {
    size: () => line.length,
    join: (priority) =>
      Effect.gen(function* () {
        if (line.length >= maxSize) return yield* Effect.fail("full" as const)
        const waiter: Waiter = { priority, seq: seq++, turn: yield* Deferred.make<void>() }
        // Insert after every waiter of the same or higher priority: FIFO within a priority.
        let at = line.length
        while (at > 0 && line[at - 1]!.priority < priority) at--
        // A new head (higher priority than everyone) displaces the old head, whose turn is re-armed:
        // it waits again until it is the head once more.
        if (at === 0 && line[0] !== undefined) line[0].turn = yield* Deferred.make<void>()
        line.splice(at, 0, waiter)
        if (at === 0) yield* promoteHead
        let left = false
        return {
          turn: Effect.suspend(() => Deferred.await(waiter.turn)),
          isHead: () => line[0] === waiter,
          leave: Effect.suspend(() => {
            if (left) return Effect.void
            left = true
            const index = line.indexOf(waiter)
            if (index !== -1) line.splice(index, 1)
            return index === 0 ? promoteHead : Effect.void
          })
        }
      })
  }
}
