/**
 * Deadlines on the request path. With the live clock a deadline is a plain timer (what `Clock.sleep`
 * would schedule) and one fiber, instead of the fiber pair of `Effect.timeoutFail`; under any other
 * clock (`TestClock`) it is `Effect.timeoutFail`, so tests drive it.
 */
import { Clock, Context, DefaultServices, Duration, Effect, Fiber } from "effect"

/** The clock of the default services. */
export const liveClock = Context.get(DefaultServices.liveServices, Clock.Clock)

/** Fails with `timedOut()` when `effect` has not completed within `ms` on `clock`, interrupting it. */
export const within =
  <E2>(clock: Clock.Clock, ms: number, timedOut: () => E2) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | E2, R> => {
    if (clock !== liveClock) return Effect.timeoutFail(effect, { duration: Duration.millis(ms), onTimeout: timedOut })
    return Effect.flatMap(Effect.fork(effect), (fiber) =>
      Effect.async<A, E | E2>((resume) => {
        let settled = false
        const timer = setTimeout(() => {
          if (settled) return
          settled = true
          resume(Effect.zipRight(Fiber.interrupt(fiber), Effect.fail(timedOut())))
        }, ms)
        fiber.addObserver((exit) => {
          if (settled) return
          settled = true
          clearTimeout(timer)
          resume(exit)
        })
        return Effect.suspend(() => {
          settled = true
          clearTimeout(timer)
          return Fiber.interrupt(fiber)
        })
      })
    )
  }
