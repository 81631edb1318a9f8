/**
 * The lab's virtual time: a `Clock` whose sleeps complete in time order, and a driver that runs a
 * program on Effect's `ControlledScheduler` and wakes the next sleeper only once every fiber of the
 * program waits. `TestClock`'s contract and order — one sleeper at a time, the earliest first and,
 * among sleepers of one instant, the one that went to sleep last — so a program runs the same under
 * either; but where `TestClock` polls real timers to learn that all is quiet, this driver knows it
 * (the scheduler has nothing left to run), so hours of simulated traffic run in seconds. No real
 * timer, no promise: with a seeded `Random` a run is exactly reproducible.
 */
import type { Duration } from "effect"
import { Clock, Duration as D, Effect, Exit, FiberId, Runtime, Scheduler } from "effect"

/** A sleeper: when it wakes, the order it went to sleep in (of two for one instant, the later wakes first), and how. */
interface Timer {
  readonly at: number
  readonly seq: number
  resume: (() => void) | undefined
}

const before = (a: Timer, b: Timer): boolean => a.at < b.at || (a.at === b.at && a.seq > b.seq)

/** A binary min-heap of timers. */
class Timers {
  private readonly heap: Array<Timer> = []
  get size(): number {
    return this.heap.length
  }
  peek(): Timer | undefined {
    return this.heap[0]
  }
  push(timer: Timer): void {
    const heap = this.heap
    heap.push(timer)
    for (let i = heap.length - 1; i > 0;) {
      const parent = (i - 1) >> 1
      if (!before(heap[i]!, heap[parent]!)) break
      ;[heap[i], heap[parent]] = [heap[parent]!, heap[i]!]
      i = parent
    }
  }
  pop(): Timer | undefined {
    const heap = this.heap
    const top = heap[0]
    const last = heap.pop()
    if (heap.length === 0 || last === undefined) return top
    heap[0] = last
    for (let i = 0; ;) {
      const l = 2 * i + 1
      const r = l + 1
      let least = i
      if (l < heap.length && before(heap[l]!, heap[least]!)) least = l
      if (r < heap.length && before(heap[r]!, heap[least]!)) least = r
      if (least === i) break
      ;[heap[i], heap[least]] = [heap[least]!, heap[i]!]
      i = least
    }
    return top
  }
}

/** A clock that only the driver moves. */
export class VirtualClock implements Clock.Clock {
  readonly [Clock.ClockTypeId]: Clock.ClockTypeId = Clock.ClockTypeId
  private readonly timers = new Timers()
  private seq = 0

  constructor(private now: number) {}

  unsafeCurrentTimeMillis(): number {
    return this.now
  }
  unsafeCurrentTimeNanos(): bigint {
    return BigInt(this.now) * 1_000_000n
  }
  readonly currentTimeMillis: Effect.Effect<number> = Effect.sync(() => this.now)
  readonly currentTimeNanos: Effect.Effect<bigint> = Effect.sync(() => this.unsafeCurrentTimeNanos())

  sleep(duration: Duration.Duration): Effect.Effect<void> {
    const ms = D.toMillis(duration)
    if (!(ms > 0)) return Effect.void
    return Effect.async<void>((resume) => {
      const timer: Timer = { at: this.now + ms, seq: this.seq++, resume: () => resume(Effect.void) }
      this.timers.push(timer)
      return Effect.sync(() => {
        timer.resume = undefined
      })
    })
  }

  /** Wakes the next sleeper; false when nobody sleeps. */
  advance(): boolean {
    let next = this.timers.pop()
    while (next !== undefined && next.resume === undefined) next = this.timers.pop()
    if (next === undefined) return false
    this.now = Math.max(this.now, next.at)
    next.resume!()
    return true
  }
}

/** Runs every task the scheduler holds, and what those tasks schedule, until none is left. */
const drain = (scheduler: Scheduler.ControlledScheduler): void => {
  while (scheduler.tasks.buckets.length > 0) scheduler.step()
}

/**
 * Runs `effect` in virtual time starting at `startMs` (epoch milliseconds), to its end, in the
 * current fiber's step: its `Clock` is a {@link VirtualClock} and its fibers run on a controlled
 * scheduler. Dies when the program waits for something no clock will bring (a deadlock).
 */
export const simulate = <A, E, R>(effect: Effect.Effect<A, E, R>, startMs = 0): Effect.Effect<A, E, R> =>
  Effect.flatMap(Effect.runtime<R>(), (runtime) => {
    const clock = new VirtualClock(startMs)
    const scheduler = new Scheduler.ControlledScheduler()
    const fiber = Runtime.runFork(runtime)(Effect.withClock(effect, clock), { scheduler, immediate: true })
    for (;;) {
      drain(scheduler)
      const exit = fiber.unsafePoll()
      if (exit !== null) return Exit.isSuccess(exit) ? Effect.succeed(exit.value) : Effect.failCause(exit.cause)
      if (!clock.advance()) {
        // Let it run its finalizers, so nothing it holds (a real timer) outlives it.
        fiber.unsafeInterruptAsFork(FiberId.none)
        drain(scheduler)
        return Effect.dieMessage("the simulation waits for something that never comes: no fiber sleeps")
      }
    }
  })
