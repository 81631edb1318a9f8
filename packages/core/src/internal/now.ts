/**
 * The current time for hot paths: one `Clock` read inside the effect it feeds, instead of the
 * `flatMap(Clock.currentTimeMillis, ...)` pair. Still Effect's `Clock`, so `TestClock` drives it.
 */
import { Effect } from "effect"

/** Runs `f` with the current time in epoch milliseconds from the fiber's `Clock`. */
export const withNow = <A, E, R>(f: (now: number) => Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.clockWith((clock) => f(clock.unsafeCurrentTimeMillis()))
