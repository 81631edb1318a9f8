import { describe, expect, it } from "@effect/vitest"
import { Provider, Topology } from "@sluice/core"
import { Effect, Either, Option, Redacted } from "effect"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
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

  it.scopedLive("scrubs the upstream's credentials from the message and the body of an error that repeats them", () =>
    Effect.gen(function* () {
      const key = "sk-echo-0123456789abcdef"
      const token = "tok-configured-header-99"
      // An upstream that answers 500 with the headers it received, in its message and deep in its body.
      const server = createServer((request, response) => {
        const seen = JSON.stringify(`${request.headers["authorization"]} ${request.headers["x-auth-token"]}`)
        const deep = `${"[".repeat(100_000)}{"seen":${seen}}${"]".repeat(100_000)}`
        response.writeHead(500, { "content-type": "application/json" })
        response.end(`{"error":{"message":${seen.slice(0, 1)}failed for ${seen.slice(1)},${seen}:${deep}}}`)
      })
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () =>
          Effect.async<void>((resume) => {
            server.close(() => resume(Effect.void))
            server.closeAllConnections()
          })
      )
      const provider = yield* Provider.Provider
      const upstream = Topology.upstream({
        id: "echo",
        provider: "openai-compatible",
        baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
        apiKey: Option.some(Redacted.make(key)),
        headers: { "x-auth-token": token }
      })
      const error = yield* Effect.flip(
        provider.chat(upstream, { model: "m", messages: [{ role: "user", content: "hi" }] })
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
