import { describe, expect, it } from "@effect/vitest"
import { Provider, Topology } from "@sluice/core"
import { Effect, Either } from "effect"
import * as Providers from "../src/Providers.js"
import * as Simulator from "../src/Simulator.js"

const upstreamOf = (sim: Simulator.Simulator, timeoutMs: number) =>
  Topology.upstream({ id: "slow", provider: "openai-compatible", baseUrl: `${sim.url}/v1`, timeoutMs })

describe("OpenAI-compatible provider", () => {
  it.scopedLive("fails a whole answer that takes longer than timeoutMs with a retryable timeout, on its own", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ stallRate: 1 })
      const provider = yield* Provider.Provider
      const upstream = upstreamOf(sim, 150)
      expect(provider.enforcesTimeout?.(upstream)).toBe(true)
      const started = Date.now()
      const result = yield* Effect.either(
        provider.chat(upstream, { model: "m", messages: [{ role: "user", content: "hi" }] })
      )
      const elapsed = Date.now() - started
      expect(Either.isLeft(result)).toBe(true)
      if (Either.isLeft(result)) {
        expect(result.left).toMatchObject({ upstream: "slow", kind: "timeout", retryable: true })
        expect(result.left.message).toBe("no response within 150 ms")
      }
      // Bounded by the deadline, not by the stalled upstream (which never answers).
      expect(elapsed).toBeGreaterThanOrEqual(140)
      expect(elapsed).toBeLessThan(5_000)
    }).pipe(Effect.provide(Providers.layer()))
  )

  it.scopedLive("answers within timeoutMs as usual", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ completionTokens: 2 })
      const provider = yield* Provider.Provider
      const completion = yield* provider.chat(upstreamOf(sim, 2_000), {
        model: "m",
        messages: [{ role: "user", content: "hi" }]
      })
      expect(completion.choices[0]?.message.content).toBe("[sim] lorem")
    }).pipe(Effect.provide(Providers.layer()))
  )

  it("reports no deadline of its own for a kind it does not know", () => {
    const dispatch = Providers.dispatch({})
    const upstream = Topology.upstream({ id: "x", provider: "openai-compatible", baseUrl: "http://127.0.0.1:1/v1" })
    expect(dispatch.enforcesTimeout?.(upstream)).toBe(false)
  })
})
