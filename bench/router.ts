/**
 * The router's own cost per request, in-process: the full pipeline the gateway runs (matcher, token
 * estimate, strategy, health, circuit breaker and rate limiter guards, memory state store) against a
 * provider that answers at once. No HTTP anywhere, so what is measured is routing.
 *
 * `BENCH_ROUTER_CONCURRENCY` workers each send requests one after another (a closed loop, as the
 * gateway's keep-alive connections do), `BENCH_ROUTER_REQUESTS` in all. Three pipelines run side by
 * side, each after a warm-up, in one process: the harness alone calling the provider (the floor),
 * the router with no guards, and the router with health, breaker and rate limiter.
 *
 * Run it: `node --import tsx bench/router.ts` (after `npm run build`).
 *
 * `BENCH_ROUTER_ALLOC=1` also samples what the measured calls allocate (V8's sampling heap profiler,
 * counting objects the GC has already collected too) and prints bytes per call with the sites that
 * allocate most: a figure that moves far less than CPU time on a busy machine.
 */
import type { Wire } from "@sluice/core"
import {
  Guard,
  Matcher,
  Provider,
  Resilience,
  Router,
  Scheduling,
  StateStore,
  StreamEvent,
  TokenCounter,
  Topology
} from "@sluice/core"
import { RoundRobin } from "@sluice/strategies"
import { NodeHttpClient } from "@effect/platform-node"
import { Context, Effect, Layer, Option } from "effect"
import { Session } from "node:inspector"
import { setFlagsFromString } from "node:v8"

/**
 * V8's allocation-site pretenuring is off, as in the gateway's process (see `packages/server/bin/sluice.js`):
 * with it, this process's requests came to be born in the old generation (a literal's site, once
 * pretenured, stays so), which the gateway's do not. BENCH_ROUTER_PRETENURING=1 keeps V8's default,
 * as an application embedding the router gets unless it turns it off too.
 */
const pretenuring = process.env["BENCH_ROUTER_PRETENURING"] !== undefined
if (!pretenuring) setFlagsFromString("--no-allocation-site-pretenuring")

const requests = Number(process.env["BENCH_ROUTER_REQUESTS"] ?? 100_000)
const concurrency = Number(process.env["BENCH_ROUTER_CONCURRENCY"] ?? 50)
/** A new request object per call, as the gateway parses one per HTTP request (nothing cached by identity). */
const fresh = process.env["BENCH_ROUTER_SAME_REQUEST"] === undefined
/** The provider answers on a later turn of the event loop, as a real upstream call does. */
const asyncProvider = process.env["BENCH_ROUTER_SYNC_PROVIDER"] === undefined

const completion: Wire.ChatCompletion = {
  id: "chatcmpl-1",
  object: "chat.completion",
  created: 0,
  model: "bench-model",
  choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 5, completion_tokens: 1, total_tokens: 6 }
} as unknown as Wire.ChatCompletion
const answer: Provider.Answer<Wire.ChatCompletion> = { value: completion }

const chunk = (content: string) =>
  JSON.stringify({
    id: "chatcmpl-1",
    object: "chat.completion.chunk",
    created: 0,
    model: "bench-model",
    choices: [{ index: 0, delta: { content }, finish_reason: null }]
  })
const streamed: ReadonlyArray<StreamEvent.StreamEvent> = [
  ...Array.from({ length: 16 }, (_, i) => ({ data: chunk(`word${i} `) })),
  {
    data: "{}",
    usage: { prompt_tokens: 5, completion_tokens: 16, total_tokens: 21 },
    usageOnly: true
  }
]

/** A source that receives every event and its end on the next turn of the event loop. */
const arrivingSource = (): StreamEvent.Source => {
  let arrived = false
  let read = false
  let ready: (() => void) | undefined
  setImmediate(() => {
    arrived = true
    const go = ready
    ready = undefined
    go?.()
  })
  return {
    poll: () => {
      if (!arrived) return undefined
      if (read) return Option.none()
      read = true
      return streamed
    },
    onReady: (r) => {
      ready = r
    }
  }
}

/** Reads a routed stream to its end the way the gateway relays one, then releases it. */
const drain = (stream: Router.RoutedStream) => {
  const loop: Effect.Effect<void> = Effect.matchEffect(StreamEvent.take(stream.source), {
    onSuccess: () => loop,
    onFailure: () => stream.release
  })
  return loop
}

const instant = Layer.succeed(
  Provider.Provider,
  Provider.Provider.of({
    chat: () =>
      asyncProvider
        ? Effect.async<Provider.Answer<Wire.ChatCompletion>>(
            (resume) => void setImmediate(() => resume(Effect.succeed(answer)))
          )
        : Effect.succeed(answer),
    // A stream whose events all arrive on the next turn of the event loop, in one read (as the
    // simulator's do): the router's own cost per stream.
    chatStream: () => Effect.succeed({ events: arrivingSource() }),
    embeddings: () => Effect.die("unused"),
    // It answers at once, so it never needs the router's deadline (as the built-in provider keeps its own).
    enforcesTimeout: () => true
  })
)

const pools = [
  Topology.pool({
    id: "bench",
    models: ["bench-model"],
    upstreams: [Topology.upstream({ id: "u", provider: "openai-compatible", baseUrl: "http://127.0.0.1:1/v1" })]
  })
]

const routerWith = <R>(guards: Layer.Layer<Guard.Guards, never, R>) =>
  Router.layer.pipe(
    Layer.provide(Layer.mergeAll(Matcher.layer, TokenCounter.layer, RoundRobin.layer, guards)),
    Layer.provide(
      Layer.mergeAll(Topology.layerPools(pools), StateStore.layerMemory, instant, NodeHttpClient.layerUndici)
    )
  )

const request: Wire.ChatCompletionRequest = {
  model: "bench-model",
  messages: [{ role: "user", content: "Hello there, how are you today?" }]
}

/** The request a call sends: a new object each time unless BENCH_ROUTER_SAME_REQUEST is set. */
const next = (): Wire.ChatCompletionRequest =>
  fresh ? { ...request, messages: request.messages.map((m) => ({ ...m })) } : request

const allocations = process.env["BENCH_ROUTER_ALLOC"] !== undefined
/**
 * BENCH_ROUTER_ALLOC=surviving samples only what outlives a young-generation collection: what each
 * scavenge copies (and then promotes), the part of the allocation that costs the GC most.
 */
const survivingOnly = process.env["BENCH_ROUTER_ALLOC"] === "surviving"

interface ProfileNode {
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly selfSize: number
  readonly children: ReadonlyArray<ProfileNode>
}

/** Samples allocations (collected ones too) while `body` runs; prints bytes per call and the top sites. */
const sampled = <A, E>(body: Effect.Effect<A, E>, calls: () => number): Effect.Effect<A, E> => {
  if (!allocations) return body
  const session = new Session()
  const post = (method: string, params?: object) =>
    Effect.async<{ readonly profile?: { readonly head: ProfileNode } }>((resume) =>
      session.post(method, params, (error, result) =>
        resume(
          error ? Effect.die(error) : Effect.succeed(result as { readonly profile?: { readonly head: ProfileNode } })
        )
      )
    )
  return Effect.gen(function* () {
    session.connect()
    yield* post("HeapProfiler.enable")
    yield* post("HeapProfiler.startSampling", {
      samplingInterval: 256,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: !survivingOnly
    })
    const result = yield* body
    const { profile } = yield* post("HeapProfiler.stopSampling")
    session.disconnect()
    const sites = new Map<string, number>()
    let total = 0
    const walk = (node: ProfileNode) => {
      if (node.selfSize > 0) {
        const { functionName, url, lineNumber } = node.callFrame
        const site = `${url.replace(/^.*\/(node_modules|packages)\//, "")}:${lineNumber + 1} ${functionName}`
        sites.set(site, (sites.get(site) ?? 0) + node.selfSize)
        total += node.selfSize
      }
      for (const child of node.children) walk(child)
    }
    if (profile !== undefined) walk(profile.head)
    const n = calls()
    console.log(
      `  ${survivingOnly ? "surviving a scavenge" : "allocated"}: ${(total / n).toFixed(0)} bytes per call (sampled); top sites, bytes per call:`
    )
    for (const [site, bytes] of [...sites]
      .sort((a, b) => b[1] - a[1])
      .slice(0, Number(process.env["BENCH_ROUTER_ALLOC_SITES"] ?? 15)))
      console.log(`    ${(bytes / n).toFixed(0).padStart(6)}  ${site}`)
    return result
  })
}

/** Runs `n` calls from `concurrency` closed-loop workers; prints wall and CPU µs per call. */
const run = (label: string, n: number, call: () => Effect.Effect<unknown, unknown>) => {
  const each = Math.ceil(n / concurrency)
  const worker = Effect.gen(function* () {
    for (let i = 0; i < each; i++) yield* call()
  })
  return Effect.gen(function* () {
    const start = process.hrtime.bigint()
    const cpu = process.cpuUsage()
    const total = each * concurrency
    const calls = Effect.all(
      Array.from({ length: concurrency }, () => worker),
      { concurrency: "unbounded", discard: true }
    )
    yield* label.endsWith("(warm-up)") ? calls : sampled(calls, () => total)
    const ns = Number(process.hrtime.bigint() - start)
    const used = process.cpuUsage(cpu)
    const perCall = (used.user + used.system) / total
    console.log(
      `${label}: ${total} calls, ${(ns / total / 1000).toFixed(2)} µs wall and ${perCall.toFixed(2)} µs CPU per call`
    )
    return perCall
  })
}

const measure = (label: string, call: () => Effect.Effect<unknown, unknown>) =>
  Effect.gen(function* () {
    yield* run(`${label} (warm-up)`, Math.min(20_000, requests), call)
    return yield* run(label, requests, call)
  })

/** BENCH_ROUTER_STREAMS=1 routes streams (read to their end like the gateway does) instead of whole answers. */
const streams = process.env["BENCH_ROUTER_STREAMS"] !== undefined

/**
 * BENCH_ROUTER_GUARDS=none or =all runs only that pipeline, without the floor (for instruction
 * counts under `valgrind --tool=callgrind`, one pipeline per process); both and the floor by default.
 */
const which = process.env["BENCH_ROUTER_GUARDS"]

const program = Effect.gen(function* () {
  const provider = yield* Effect.provide(Provider.Provider, instant)
  const floor =
    which === "none" || which === "all"
      ? 0
      : yield* measure("floor: the harness calling the provider", () =>
          provider.chat(pools[0]!.upstreams[0]!, { request: next(), model: "bench-model" })
        )
  const results: Array<string> = []
  for (const [name, guards] of [
    ["no guards", Guard.none],
    ["health, breaker, rate limiter", Resilience.layer]
  ] as const) {
    if (which === "none" && guards !== Guard.none) continue
    if (which === "all" && guards === Guard.none) continue
    const cpu = yield* Effect.scoped(
      Effect.flatMap(Layer.build(routerWith(guards)), (context) => {
        const router = Context.get(context, Router.Router)
        if (streams) return measure(`router, streams, ${name}`, () => Effect.flatMap(router.chatStream(next()), drain))
        return measure(`router, ${name}`, () => router.chat(next()))
      })
    )
    results.push(`${name} ${cpu.toFixed(2)} µs (${(cpu - floor).toFixed(2)} over the floor)`)
  }
  console.log(
    `SUMMARY: CPU per routed call: ${results.join("; ")}; floor ${floor.toFixed(2)} µs` +
      (pretenuring ? " (V8's allocation-site pretenuring on)" : "")
  )
})

// The gateway's scheduler (see `Scheduling`), as the pipeline the gateway runs.
Effect.runPromise(Effect.withScheduler(program, Scheduling.batched))
