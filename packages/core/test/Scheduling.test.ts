import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Runtime } from "effect"
import { Scheduling } from "../src/index.js"

const onBatched = <A, E>(effect: Effect.Effect<A, E>) => Effect.withScheduler(effect, Scheduling.batched)

describe("Scheduling.batched", () => {
  it.effect("runs concurrent fibers that resume asynchronously to their end, results in order", () =>
    onBatched(
      Effect.gen(function* () {
        const results = yield* Effect.forEach(
          Array.from({ length: 200 }, (_, i) => i),
          (i) =>
            Effect.async<number>((resume) => void setImmediate(() => resume(Effect.succeed(i * 2)))).pipe(
              Effect.zipLeft(Effect.yieldNow())
            ),
          { concurrency: 50 }
        )
        expect(results).toEqual(Array.from({ length: 200 }, (_, i) => i * 2))
      })
    )
  )

  it.effect("interrupts a waiting fiber and runs its finalizer", () =>
    onBatched(
      Effect.gen(function* () {
        const finalized = yield* Deferred.make<void>()
        const fiber = yield* Effect.fork(Effect.never.pipe(Effect.ensuring(Deferred.succeed(finalized, undefined))))
        yield* Effect.yieldNow()
        yield* Fiber.interrupt(fiber)
        yield* Deferred.await(finalized)
        expect(yield* Deferred.isDone(finalized)).toBe(true)
      })
    )
  )

  it("lets I/O in while fibers keep yielding: a fiber that never waits does not starve a timer", async () => {
    // A busy fiber yields every few operations; with only microtask drains a timer would never fire.
    const runtime = Runtime.defaultRuntime
    let spins = 0
    let stop = false
    const busy = Runtime.runFork(runtime)(
      onBatched(
        Effect.whileLoop({
          while: () => !stop,
          body: () => Effect.yieldNow(),
          step: () => void spins++
        })
      )
    )
    const fired = await new Promise<number>((resolve) => setTimeout(() => resolve(spins), 5))
    stop = true
    await Runtime.runPromise(runtime)(Fiber.join(busy))
    expect(fired).toBeGreaterThan(0)
  })

  it("a task that throws does not keep the other fibers from running", async () => {
    const runtime = Runtime.defaultRuntime
    const errors: Array<unknown> = []
    const onError = (error: unknown) => void errors.push(error)
    process.on("uncaughtException", onError)
    try {
      Scheduling.batched.scheduleTask(() => {
        throw new Error("a broken task")
      }, 0)
      const value = await Runtime.runPromise(runtime)(onBatched(Effect.as(Effect.yieldNow(), 42)))
      expect(value).toBe(42)
      await new Promise((resolve) => setImmediate(resolve))
      expect(errors.map((e) => (e as Error).message)).toEqual(["a broken task"])
    } finally {
      process.off("uncaughtException", onError)
    }
  })
})
