import { Effect } from "effect"
const n = 200_000
const answer = { value: 1 }
const call = () => Effect.async<typeof answer>((resume) => void setImmediate(() => resume(Effect.succeed(answer))))
const run = (label: string, f: () => Effect.Effect<unknown>) => Effect.gen(function* () {
  const each = n / 50
  const worker = Effect.gen(function* () { for (let i = 0; i < each; i++) yield* f() })
  for (let r = 0; r < 2; r++) {
  const cpu = process.cpuUsage()
  yield* Effect.all(Array.from({ length: 50 }, () => worker), { concurrency: "unbounded", discard: true })
  const u = process.cpuUsage(cpu)
  if (r === 1) console.log(label.padEnd(40), ((u.user + u.system) / n).toFixed(2), "cpu µs")
  }
})
const noop = () => Effect.void
Effect.runPromise(Effect.gen(function* () {
  for (let i = 0; i < 2; i++) {
    yield* run("floor", call)
    yield* run("onExit", () => Effect.onExit(call(), noop))
    yield* run("2x onExit", () => Effect.onExit(Effect.onExit(call(), noop), noop))
    yield* run("mask+matchCause", () => Effect.uninterruptibleMask((restore) => Effect.matchCauseEffect(restore(call()), { onSuccess: Effect.succeed, onFailure: Effect.failCause })))
    yield* run("matchCause", () => Effect.matchCauseEffect(call(), { onSuccess: Effect.succeed, onFailure: Effect.failCause }))
    yield* run("withFiberRuntime", () => Effect.withFiberRuntime(() => call()))
    yield* run("suspend", () => Effect.suspend(() => call()))
    yield* run("catchAll", () => Effect.catchAll(call(), Effect.fail))
    yield* run("flatMap", () => Effect.flatMap(call(), Effect.succeed))
    yield* run("map", () => Effect.map(call(), (x) => x))
    yield* run("ensuring", () => Effect.ensuring(call(), Effect.void))
  }
}))
