/**
 * A custom strategy: route each request to the cheapest candidate for its prompt. A strategy is
 * just a Layer providing the `Strategy` service; the router hands it the live candidates (already
 * filtered by health, context window and the other stages) and records its name in every decision.
 *
 * Run it compiled: `npm run build && node examples/dist/custom-strategy.js`
 */
import { Guard, Matcher, Router, StateStore, Strategy, TokenCounter, Topology } from "@sluice/core"
import { Providers, Simulator } from "@sluice/providers"
import { Console, Effect, Layer } from "effect"

/**
 * Picks the candidate with the lowest input price; unpriced upstreams count as free. `select` runs
 * on every request, so it is a plain synchronous function: randomness comes from
 * `selection.random()`, time from `selection.now`, and state from `StateStore.local`.
 */
export const cheapest: Strategy.Service = Strategy.make("cheapest", (selection) =>
  selection.candidates.reduce((best, u) =>
    (u.pricing?.inputPerMillion ?? 0) < (best.pricing?.inputPerMillion ?? 0) ? u : best
  )
)

/** The cheapest-first strategy as a Layer: provide it where a built-in strategy would go. */
export const CheapestLive = Strategy.layer(cheapest)

/** Routes three requests; the cheap upstream serves while it is up, the dear one when it is down. */
export const program = Effect.gen(function* () {
  const cheap = yield* Simulator.start({ name: "cheap" })
  const dear = yield* Simulator.start({ name: "dear" })
  const pools = [
    Topology.pool({
      id: "chat",
      models: ["*"],
      upstreams: [
        Topology.upstream({
          id: "dear",
          provider: "openai-compatible",
          baseUrl: `${dear.url}/v1`,
          pricing: { inputPerMillion: 5, outputPerMillion: 15 }
        }),
        Topology.upstream({
          id: "cheap",
          provider: "openai-compatible",
          baseUrl: `${cheap.url}/v1`,
          pricing: { inputPerMillion: 0.15, outputPerMillion: 0.6 }
        })
      ]
    })
  ]
  const RouterLive = Router.layer.pipe(
    Layer.provide(
      Layer.mergeAll(Matcher.layer, TokenCounter.layerEstimate, CheapestLive, Providers.layer(), Guard.none)
    ),
    Layer.provide(Layer.mergeAll(Topology.layerPools(pools), StateStore.layerMemory))
  )
  return yield* Effect.gen(function* () {
    const router = yield* Router.Router
    const ask = router.chat({ model: "any-model", messages: [{ role: "user", content: "Hi" }] })
    const first = yield* ask
    cheap.setOptions({ failureRate: 1 }) // the cheap upstream starts failing: the router fails over
    const second = yield* ask
    cheap.setOptions({ failureRate: 0 })
    const third = yield* ask
    const decisions = [first.decision, second.decision, third.decision]
    for (const d of decisions) {
      yield* Console.log(`${d.strategy}: ${d.attempts.map((a) => `${a.upstream}=${a.outcome}`).join(" -> ")}`)
    }
    return decisions
  }).pipe(Effect.provide(RouterLive))
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
