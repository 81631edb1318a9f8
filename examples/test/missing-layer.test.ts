import { describe, expect, it } from "@effect/vitest"
import { Guard, Matcher, Router, TokenCounter, Topology } from "@sluice/core"
import { Effect, Layer } from "effect"

// A pipeline without a Strategy and a Provider: the requirement shows in the layer's type, so running
// it does not compile. `npm test` type-checks this file; the directive fails the build if the error
// ever disappears.
const incomplete = Router.layer.pipe(
  Layer.provide(Layer.mergeAll(Matcher.layer, TokenCounter.layerEstimate, Guard.none)),
  Layer.provide(Topology.layerPools([]))
)
// @ts-expect-error — Strategy and Provider are not provided
const run = () => Effect.runPromise(Effect.provide(Router.Router, incomplete))

describe("pipeline type safety", () => {
  it("a router without a strategy or provider layer is a type error (checked by tsc in npm test)", () => {
    expect(typeof run).toBe("function")
  })
})
