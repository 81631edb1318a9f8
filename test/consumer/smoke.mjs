// Run by test/pack.test.ts with plain `node`, in a fresh project where the packed @sluice/* tarballs
// are installed: it uses something real from every package and prints what it saw as one JSON line.
import { Errors, Guard, Matcher, Router, StateStore, TokenCounter, Topology } from "@sluice/core"
import * as TopologyModule from "@sluice/core/Topology"
import { Providers, Simulator } from "@sluice/providers"
import { RoundRobin, Strategies } from "@sluice/strategies"
import { Cli, ConfigFile } from "@sluice/server"
import { Effect, Layer } from "effect"
import { existsSync } from "node:fs"

const seen = {}

// core: a pool with its defaults, a model matched by wildcard, an error in OpenAI's envelope.
const pool = Topology.pool({
  id: "chat",
  models: ["gpt-4o-mini", "sim-*"],
  upstreams: [Topology.upstream({ id: "nowhere", provider: "openai-compatible", baseUrl: "http://127.0.0.1:9/v1" })]
})
seen.pool = {
  strategy: pool.strategy,
  maxAttempts: pool.maxAttempts,
  sameModule: TopologyModule.pool === Topology.pool
}
seen.matched = (await Effect.runPromise(Matcher.make([pool]).match("sim-large"))).pool.id
const envelope = Errors.toOpenAI(new Errors.ModelNotFound({ model: "gpt-5", known: ["gpt-4o-mini"] }))
seen.error = { status: envelope.status, code: envelope.body.error.code, message: envelope.body.error.message }
seen.internal = await import("@sluice/core/internal/now.js").then(
  () => "importable",
  (error) => error.code
)

// core: an exact count by tiktoken in the worker thread (dist/internal/tokenWorker.mjs).
seen.tokens = await Effect.runPromise(
  Effect.scoped(
    Effect.gen(function* () {
      const counter = yield* TokenCounter.make({ workerThreshold: 0 })
      const request = { model: "gpt-4o", messages: [{ role: "user", content: "Hello, world" }] }
      const count = yield* counter.count(request, "gpt-4o")
      return { ...count, offThread: counter.stats?.().offThreadCounts }
    })
  )
)

// strategies: the registry builds the built-ins and refuses an unknown name by its path.
const strategyFor = (strategy) =>
  Strategies.make().pipe(
    Effect.provide(Layer.mergeAll(Topology.layerPools([{ ...pool, strategy }]), StateStore.layerMemory))
  )
seen.strategies = {
  names: Strategies.names,
  weighted: await Effect.runPromise(strategyFor("weighted").pipe(Effect.as("built"))),
  unknown: (await Effect.runPromise(Effect.flip(strategyFor("fastest")))).problems
}

// providers with core and strategies: an in-process router over a simulated upstream.
seen.routed = await Effect.runPromise(
  Effect.scoped(
    Effect.gen(function* () {
      const upstream = yield* Simulator.start({ name: "sim", completionTokens: 3 })
      const pools = [
        Topology.pool({
          id: "chat",
          models: ["gpt-4o-mini"],
          upstreams: [Topology.upstream({ id: "sim", provider: "openai-compatible", baseUrl: `${upstream.url}/v1` })]
        })
      ]
      const RouterLive = Router.layer.pipe(
        Layer.provide(
          Layer.mergeAll(Matcher.layer, TokenCounter.layer, RoundRobin.layer, Providers.layer(), Guard.none)
        ),
        Layer.provide(Layer.mergeAll(Topology.layerPools(pools), StateStore.layerMemory))
      )
      const { response, decision } = yield* Effect.flatMap(Router.Router, (router) =>
        router.chat({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] })
      ).pipe(Effect.provide(RouterLive))
      return {
        upstream: decision.upstream,
        outcome: decision.outcome,
        content: response.choices[0]?.message.content
      }
    })
  )
)

// server: the CLI's usage and the embedded default config, found next to the compiled code.
seen.server = { usage: Cli.usage.split("\n")[0], defaultConfig: existsSync(ConfigFile.defaultPath) }

console.log(JSON.stringify(seen))
