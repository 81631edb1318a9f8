import { describe, expect, expectTypeOf, it } from "@effect/vitest"
import { Guard, Matcher, Router, StateStore, Strategy, TokenCounter, Topology } from "@sluice/core"
import type { Provider } from "@sluice/core"
import { Providers } from "@sluice/providers"
import { RoundRobin } from "@sluice/strategies"
import { Effect, Layer } from "effect"

// Each case below builds the router from every layer but one. The missing one shows in the layer's
// type, so running it does not compile: `npm test` type-checks this file, and each `@ts-expect-error`
// fails the build if its error ever disappears. Because only one layer is left out per case, each
// directive proves that this particular layer is required; `complete` proves that nothing else is.
// The `expectTypeOf` lines pin the requirement left over to exactly the omitted service.

const matcher = Matcher.layer
const counter = TokenCounter.layerEstimate
const strategy = RoundRobin.layer
const provider = Providers.layer()
const guards = Guard.none
const topology = Topology.layerPools([])
const store = StateStore.layerMemory

const complete = Router.layer.pipe(
  Layer.provide(Layer.mergeAll(matcher, counter, strategy, provider, guards)),
  Layer.provide(Layer.merge(topology, store))
)
const runComplete = () => Effect.runPromise(Effect.provide(Router.Router, complete))

const withoutStrategy = Router.layer.pipe(
  Layer.provide(Layer.mergeAll(matcher, counter, provider, guards)),
  Layer.provide(Layer.merge(topology, store))
)
expectTypeOf<Layer.Layer.Context<typeof withoutStrategy>>().toEqualTypeOf<Strategy.Strategy>()
// @ts-expect-error — no Strategy layer
const runWithoutStrategy = () => Effect.runPromise(Effect.provide(Router.Router, withoutStrategy))

const withoutProvider = Router.layer.pipe(
  Layer.provide(Layer.mergeAll(matcher, counter, strategy, guards)),
  Layer.provide(Layer.merge(topology, store))
)
expectTypeOf<Layer.Layer.Context<typeof withoutProvider>>().toEqualTypeOf<Provider.Provider>()
// @ts-expect-error — no Provider layer
const runWithoutProvider = () => Effect.runPromise(Effect.provide(Router.Router, withoutProvider))

const withoutStateStore = Router.layer.pipe(
  Layer.provide(Layer.mergeAll(matcher, counter, strategy, provider, guards)),
  Layer.provide(topology)
)
expectTypeOf<Layer.Layer.Context<typeof withoutStateStore>>().toEqualTypeOf<StateStore.StateStore>()
// @ts-expect-error — no StateStore layer
const runWithoutStateStore = () => Effect.runPromise(Effect.provide(Router.Router, withoutStateStore))

const withoutMatcher = Router.layer.pipe(
  Layer.provide(Layer.mergeAll(counter, strategy, provider, guards)),
  Layer.provide(Layer.merge(topology, store))
)
expectTypeOf<Layer.Layer.Context<typeof withoutMatcher>>().toEqualTypeOf<Matcher.Matcher>()
// @ts-expect-error — no Matcher layer
const runWithoutMatcher = () => Effect.runPromise(Effect.provide(Router.Router, withoutMatcher))

const withoutTokenCounter = Router.layer.pipe(
  Layer.provide(Layer.mergeAll(matcher, strategy, provider, guards)),
  Layer.provide(Layer.merge(topology, store))
)
expectTypeOf<Layer.Layer.Context<typeof withoutTokenCounter>>().toEqualTypeOf<TokenCounter.TokenCounter>()
// @ts-expect-error — no TokenCounter layer
const runWithoutTokenCounter = () => Effect.runPromise(Effect.provide(Router.Router, withoutTokenCounter))

const withoutGuards = Router.layer.pipe(
  Layer.provide(Layer.mergeAll(matcher, counter, strategy, provider)),
  Layer.provide(Layer.merge(topology, store))
)
expectTypeOf<Layer.Layer.Context<typeof withoutGuards>>().toEqualTypeOf<Guard.Guards>()
// @ts-expect-error — no Guards layer
const runWithoutGuards = () => Effect.runPromise(Effect.provide(Router.Router, withoutGuards))

const withoutTopology = Router.layer.pipe(
  Layer.provide(Layer.mergeAll(matcher, counter, strategy, provider, guards)),
  Layer.provide(store)
)
expectTypeOf<Layer.Layer.Context<typeof withoutTopology>>().toEqualTypeOf<Topology.Topology>()
// @ts-expect-error — no Topology layer (the Matcher reads the pools from it)
const runWithoutTopology = () => Effect.runPromise(Effect.provide(Router.Router, withoutTopology))

describe("pipeline type safety", () => {
  it("a router with every stage layer compiles and builds", async () => {
    const router = await runComplete()
    expect(await Effect.runPromise(router.models)).toEqual([])
  })

  // The type errors are checked by tsc in `npm test`; at run time, each incomplete pipeline also
  // fails to build, naming the service it lacks.
  it.each([
    ["Strategy", runWithoutStrategy],
    ["Provider", runWithoutProvider],
    ["StateStore", runWithoutStateStore],
    ["Matcher", runWithoutMatcher],
    ["TokenCounter", runWithoutTokenCounter],
    ["Guards", runWithoutGuards],
    ["Topology", runWithoutTopology]
  ] as const)("a router without the %s layer is a type error and does not build", async (service, run) => {
    await expect(run()).rejects.toThrow(`Service not found: @sluice/core/${service}`)
  })
})
