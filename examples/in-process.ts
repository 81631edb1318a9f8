/**
 * Sluice in-process: compose the routing pipeline from layers and call it as a library — no HTTP
 * server. Two simulated upstreams stand in for real providers; swap `Topology.layerPools` for
 * `Topology.layer(config)` to route to real ones.
 *
 * Run it compiled: `npm run build && node examples/dist/in-process.js`
 */
import { Guard, Matcher, Router, StateStore, TokenCounter, Topology } from "@sluice/core"
import { Providers, Simulator } from "@sluice/providers"
import { Weighted } from "@sluice/strategies"
import { Console, Effect, Layer, Stream } from "effect"

/** The pipeline: every stage is a layer; leaving one out is a compile error at `Effect.provide`. */
export const makeRouterLayer = (pools: ReadonlyArray<Topology.Pool>) =>
  Router.layer.pipe(
    Layer.provide(
      Layer.mergeAll(
        Matcher.layer, // model name -> pool
        TokenCounter.layer, // prompt tokens with tiktoken
        Weighted.layer, // smooth weighted round robin; try RoundRobin.layer or your own
        Providers.layer(), // OpenAI-compatible translation for every built-in kind
        Guard.none // resilience stages (rate limits, breakers, health) plug in here
      )
    ),
    Layer.provide(Layer.mergeAll(Topology.layerPools(pools), StateStore.layerMemory))
  )

/** Sends one chat request and one streamed request; returns what it saw. */
export const program = Effect.gen(function* () {
  const primary = yield* Simulator.start({ name: "primary", completionTokens: 6 })
  const secondary = yield* Simulator.start({ name: "secondary", completionTokens: 6 })
  const pools = [
    Topology.pool({
      id: "chat",
      models: ["gpt-4o-mini"],
      upstreams: [
        Topology.upstream({ id: "primary", provider: "openai-compatible", baseUrl: `${primary.url}/v1`, weight: 3 }),
        Topology.upstream({ id: "secondary", provider: "openai-compatible", baseUrl: `${secondary.url}/v1` })
      ]
    })
  ]
  return yield* Effect.gen(function* () {
    const router = yield* Router.Router
    const served: Array<string> = []
    for (let i = 0; i < 4; i++) {
      const { response, decision } = yield* router.chat({
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: `Hello #${i}` }]
      })
      served.push(decision.upstream ?? "none")
      yield* Console.log(`${decision.upstream} answered: ${response.choices[0]?.message.content}`)
    }
    const stream = yield* router.chatStream({
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "Stream to me" }]
    })
    const text = yield* stream.events.pipe(
      Stream.map((event) => JSON.parse(event.data) as { choices: Array<{ delta: { content?: string } }> }),
      Stream.map((chunk) => chunk.choices[0]?.delta.content ?? ""),
      Stream.runFold("", (acc, piece) => acc + piece)
    )
    const decision = yield* stream.decision
    yield* Console.log(`streamed from ${decision.upstream}: ${text} (${decision.outputTokens} tokens)`)
    return { served, streamed: text, streamDecision: decision }
  }).pipe(Effect.provide(makeRouterLayer(pools)))
}).pipe(Effect.scoped)

if (import.meta.url === `file://${process.argv[1]}`) {
  Effect.runPromise(program).then(
    () => process.exit(0),
    (error: unknown) => {
      console.error(error)
      process.exit(1)
    }
  )
}
