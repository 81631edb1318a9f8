import { describe, expect, it } from "@effect/vitest"
import type { Wire } from "@sluice/core"
import { Provider, Topology } from "@sluice/core"
import { Effect, Either, Option, Redacted } from "effect"
import * as Providers from "../src/Providers.js"
import * as Simulator from "../src/Simulator.js"
import { startStandIn } from "./standIn.js"

const upstreamOf = (sim: Simulator.Simulator, timeoutMs: number) =>
  Topology.upstream({ id: "slow", provider: "openai-compatible", baseUrl: `${sim.url}/v1`, timeoutMs })

/** A call as the router makes it: the upstream's model is the one requested, no raw body. */
const callOf = (request: Wire.ChatCompletionRequest): Provider.Call<Wire.ChatCompletionRequest> => ({
  request,
  model: request.model
})

describe("OpenAI-compatible provider", () => {
  it.scopedLive("fails a whole answer that takes longer than timeoutMs with a retryable timeout, on its own", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ stallRate: 1 })
      const provider = yield* Provider.Provider
      const upstream = upstreamOf(sim, 150)
      expect(provider.enforcesTimeout?.(upstream)).toBe(true)
      const started = Date.now()
      const result = yield* Effect.either(
        provider.chat(upstream, callOf({ model: "m", messages: [{ role: "user", content: "hi" }] }))
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

  it.scopedLive("fails a stream not accepted within the call's openTimeoutMs with a retryable timeout", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ stallRate: 1 })
      const provider = yield* Provider.Provider
      const result = yield* Effect.either(
        Effect.scoped(
          provider.chatStream(upstreamOf(sim, 60_000), {
            ...callOf({ model: "m", messages: [{ role: "user", content: "hi" }], stream: true }),
            openTimeoutMs: 150
          })
        )
      )
      expect(Either.isLeft(result)).toBe(true)
      if (Either.isLeft(result)) {
        expect(result.left).toMatchObject({ upstream: "slow", kind: "timeout", retryable: true })
        expect(result.left.message).toBe("the stream was not accepted within 150 ms")
      }
    }).pipe(Effect.provide(Providers.layer()))
  )

  it.scopedLive("answers within timeoutMs as usual", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ completionTokens: 2 })
      const provider = yield* Provider.Provider
      const answer = yield* provider.chat(
        upstreamOf(sim, 2_000),
        callOf({ model: "m", messages: [{ role: "user", content: "hi" }] })
      )
      expect(answer.value.choices[0]?.message.content).toBe("[sim] lorem")
    }).pipe(Effect.provide(Providers.layer()))
  )

  it.scopedLive("relays the answer's text and reports its rate-limit headers", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ completionTokens: 2, rpm: 10 })
      const provider = yield* Provider.Provider
      const answer = yield* provider.chat(
        upstreamOf(sim, 2_000),
        callOf({ model: "m", messages: [{ role: "user", content: "hi" }] })
      )
      expect(answer.text).toBeDefined()
      expect(JSON.parse(answer.text!)).toEqual(answer.value)
      expect(answer.rateLimits).toMatchObject({ limitRequests: 10, remainingRequests: 9 })
    }).pipe(Effect.provide(Providers.layer()))
  )

  it.scopedLive("fails a 429 with its Retry-After and rate-limit headers", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ rpm: 1 })
      const provider = yield* Provider.Provider
      const upstream = upstreamOf(sim, 2_000)
      const chat = provider.chat(upstream, callOf({ model: "m", messages: [{ role: "user", content: "hi" }] }))
      yield* chat
      const error = yield* Effect.flip(chat)
      expect(error).toMatchObject({ upstream: "slow", kind: "http", status: 429, retryable: true })
      expect(error.retryAfterMs).toBeGreaterThan(0)
      expect(error.rateLimits).toMatchObject({
        limitRequests: 1,
        remainingRequests: 0,
        retryAfterMs: error.retryAfterMs
      })
    }).pipe(Effect.provide(Providers.layer()))
  )

  it.scopedLive("forwards the client's body as received when only the model could change, else re-serializes", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ completionTokens: 1 })
      const provider = yield* Provider.Provider
      const upstream = upstreamOf(sim, 2_000)
      const request: Wire.ChatCompletionRequest = { model: "m", messages: [{ role: "user", content: "hi" }] }
      // A field the parsed request does not have: it reaches the upstream only if the bytes do.
      const body = JSON.stringify({ ...request, x_marker: 1 })
      yield* provider.chat(upstream, { request, model: "m", body })
      yield* provider.chat(upstream, { request, model: "upstream-model", body })
      const [same, renamed] = sim.requests().map((r) => r.body)
      expect(same).toEqual({ ...request, x_marker: 1 })
      expect(renamed).toEqual({ ...request, model: "upstream-model" })
    }).pipe(Effect.provide(Providers.layer()))
  )

  it.scopedLive("scrubs the upstream's credentials from the message and the body of an error that repeats them", () =>
    Effect.gen(function* () {
      const key = "sk-echo-0123456789abcdef"
      const token = "tok-configured-header-99"
      // An upstream that answers 500 with the headers it received, in its message and deep in its body.
      const standIn = yield* startStandIn((request) => {
        const seen = JSON.stringify(`${request.headers["authorization"]} ${request.headers["x-auth-token"]}`)
        const deep = `${"[".repeat(100_000)}{"seen":${seen}}${"]".repeat(100_000)}`
        return {
          status: 500,
          body: `{"error":{"message":${seen.slice(0, 1)}failed for ${seen.slice(1)},${seen}:${deep}}}`
        }
      })
      const provider = yield* Provider.Provider
      const upstream = Topology.upstream({
        id: "echo",
        provider: "openai-compatible",
        baseUrl: `${standIn.url}/v1`,
        apiKey: Option.some(Redacted.make(key)),
        headers: { "x-auth-token": token }
      })
      const error = yield* Effect.flip(
        provider.chat(upstream, { request: { model: "m", messages: [{ role: "user", content: "hi" }] }, model: "m" })
      )
      expect(error.message).toBe("HTTP 500: failed for Bearer <redacted> <redacted>")
      const body = JSON.stringify(error.body, (_, value: unknown) =>
        Array.isArray(value) && Array.isArray(value[0]) ? "[...]" : value
      )
      expect(body).toContain("<redacted>")
      expect(body).not.toContain(key)
      expect(body).not.toContain(token)
      let innermost: unknown = (error.body as { error: Record<string, unknown> }).error["Bearer <redacted> <redacted>"]
      while (Array.isArray(innermost)) innermost = innermost[0]
      expect(innermost).toEqual({ seen: "Bearer <redacted> <redacted>" })
    }).pipe(Effect.provide(Providers.layer()))
  )

  it("reports no deadline of its own for a kind it does not know", () => {
    const dispatch = Providers.dispatch({})
    const upstream = Topology.upstream({ id: "x", provider: "openai-compatible", baseUrl: "http://127.0.0.1:1/v1" })
    expect(dispatch.enforcesTimeout?.(upstream)).toBe(false)
  })
})
