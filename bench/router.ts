/**
 * The router's own cost per request, in-process: the full pipeline the gateway runs (matcher, token
 * estimate, strategy, health, circuit breaker and rate limiter guards, memory state store) against a
 * provider that answers at once. No HTTP anywhere, so what is measured is routing.
 *
 * Run it: `node --import tsx bench/router.ts` (BENCH_ROUTER_REQUESTS, BENCH_ROUTER_CONCURRENCY).
 */
import type { Wire } from "@sluice/core"
import {
  Guard,
  Matcher,
  Provider,
  Resilience,
  Router,
  StateStore,
  StreamEvent,
  TokenCounter,
  Topology
} from "@sluice/core"
import { RoundRobin } from "@sluice/strategies"
import { NodeHttpClient } from "@effect/platform-node"
import { Effect, Layer, Stream } from "effect"

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

const instant = Layer.succeed(
  Provider.Provider,
  Provider.Provider.of({
    chat: () =>
      asyncProvider
        ? Effect.async<Provider.Answer<Wire.ChatCompletion>>(
            (resume) => void setImmediate(() => resume(Effect.succeed(answer)))
          )
        : Effect.succeed(answer),
    chatStream: () => Effect.map(StreamEvent.fromStream(Stream.empty), (events) => ({ events })),
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

/** BENCH_ROUTER_GUARDS=none measures the router without its resilience stages. */
const guards = process.env["BENCH_ROUTER_GUARDS"] === "none" ? Guard.none : Resilience.layer
const RouterLive = Router.layer.pipe(
  Layer.provide(Layer.mergeAll(Matcher.layer, TokenCounter.layer, RoundRobin.layer, guards)),
  Layer.provide(Layer.mergeAll(Topology.layerPools(pools), StateStore.layerMemory, instant, NodeHttpClient.layerUndici))
)

const request: Wire.ChatCompletionRequest = {
  model: "bench-model",
  messages: [{ role: "user", content: "Hello there, how are you today?" }]
}

const run = (label: string, n: number) =>
  Effect.gen(function* () {
    const router = yield* Router.Router
    const start = process.hrtime.bigint()
    const cpu = process.cpuUsage()
    yield* Effect.forEach(
      Array.from({ length: n }),
      () => router.chat(fresh ? { ...request, messages: request.messages.map((m) => ({ ...m })) } : request),
      { concurrency, discard: true }
    )
    const ns = Number(process.hrtime.bigint() - start)
    const used = process.cpuUsage(cpu)
    console.log(
      `${label}: ${n} requests, ${(ns / n / 1000).toFixed(2)} µs wall and ${((used.user + used.system) / n).toFixed(2)} µs CPU per request`
    )
  })

Effect.runPromise(
  Effect.gen(function* () {
    yield* run("warm-up", Math.min(20_000, requests))
    yield* run("measured", requests)
  }).pipe(Effect.provide(RouterLive), Effect.scoped)
)
