/**
 * Scheduling: one scheduler for every fiber of the gateway, in place of Effect's default.
 *
 * Since 3.20 Effect's default scheduler gives each fiber a runner of its own, kept in a `WeakMap`
 * keyed by the fiber, and drains each through a promise of its own. That keeps `AsyncLocalStorage`
 * contexts apart when several runtimes' fibers interleave; its cost is a runner, a map entry and a
 * promise chain per fiber that ever resumes asynchronously — a request's fiber, every fork of a
 * stream — and the ephemeron entries outlive their fibers until a full collection. A gateway of
 * short fibers pays it hundreds of times per second.
 *
 * {@link batched} is the scheduler Effect had before: one queue for all fibers, drained in a
 * microtask, and after {@link MAX_MICROTASK_DRAINS} drains in a row by `setImmediate`, so that I/O
 * is never starved. Sluice reads no `AsyncLocalStorage` context in its fibers. An application that
 * runs the router in-process keeps its own scheduler unless it provides {@link layer}.
 */
import { Layer, Scheduler } from "effect"

/** Drains in a row through microtasks before one goes through `setImmediate`, letting I/O in. */
export const MAX_MICROTASK_DRAINS = 2048

class Batched implements Scheduler.Scheduler {
  private tasks = new Scheduler.PriorityBuckets()
  private running = false
  private drains = 0

  scheduleTask(task: Scheduler.Task, priority: number): void {
    this.tasks.scheduleTask(task, priority)
    if (!this.running) {
      this.running = true
      this.drains = 0
      queueMicrotask(this.drain)
    }
  }

  shouldYield(fiber: Parameters<Scheduler.Scheduler["shouldYield"]>[0]): number | false {
    return Scheduler.defaultShouldYield(fiber)
  }

  private readonly drain = (): void => {
    const buckets = this.tasks.buckets
    this.tasks.buckets = []
    for (const [, tasks] of buckets) {
      for (let i = 0; i < tasks.length; i++) {
        try {
          tasks[i]!()
        } catch (error) {
          // Not the other fibers' problem: the error surfaces as Effect's own scheduler would let it.
          queueMicrotask(() => {
            throw error
          })
        }
      }
    }
    // What the tasks scheduled runs in the next drain.
    if (this.tasks.buckets.length === 0) this.running = false
    else if (++this.drains < MAX_MICROTASK_DRAINS) queueMicrotask(this.drain)
    else {
      this.drains = 0
      setImmediate(this.drain)
    }
  }
}

/** The shared scheduler (one per process: a second would only split the batches). */
export const batched: Scheduler.Scheduler = new Batched()

/** Runs every fiber of the layers it is provided to on {@link batched}. */
export const layer: Layer.Layer<never> = Layer.setScheduler(batched)
