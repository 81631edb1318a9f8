/** The Gemini provider over HTTP: its key header, and its errors as the router must see them. */
import { describe, expect, it } from "@effect/vitest"
import type { Errors, Wire } from "@sluice/core"
import { Provider, Topology } from "@sluice/core"
import { Effect, Option, Redacted } from "effect"
import type { Scope } from "effect"
import { Providers, Simulator } from "@sluice/providers"
import type { Answer } from "./standIn.js"
import { startStandIn } from "./standIn.js"

const KEY = "AIza-test-0123456789"

const upstreamAt = (url: string) =>
  Topology.upstream({
    id: "gemini",
    provider: "gemini",
    baseUrl: `${url}/v1beta`,
    apiKey: Option.some(Redacted.make(KEY)),
    timeoutMs: 5_000
  })

const ask = {
  request: { model: "gemini-2.5-flash", messages: [{ role: "user", content: "Hi" }] },
  model: "gemini-2.5-flash"
} as Provider.Call<Wire.ChatCompletionRequest>

/** A Google API error body as Gemini writes it. */
const googleError = (code: number, status: string, message: string, details: ReadonlyArray<unknown> = []): Answer => ({
  status: code,
  body: JSON.stringify({ error: { code, message, status, details } })
})

describe("Gemini provider", () => {
  it.scopedLive("sends the key as x-goog-api-key (never in the URL or as a bearer token)", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "gemini", completionTokens: 2 })
      const provider = yield* Provider.Provider
      yield* provider.chat(upstreamAt(sim.url), ask)
      const [recorded] = sim.requests()
      expect(recorded?.path).toBe("/v1beta/models/gemini-2.5-flash:generateContent")
      expect(recorded?.headers["x-goog-api-key"]).toBe(KEY)
      expect(recorded?.headers["authorization"]).toBeUndefined()
    }).pipe(Effect.provide(Providers.layer()))
  )

  it.scopedLive(
    "maps 429 RESOURCE_EXHAUSTED (with its RetryInfo delay as the retry-after) and 503 as retryable, 400 as not",
    () =>
      Effect.gen(function* () {
        const answers: Record<string, Answer> = {
          "quota-model": googleError(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", [
            { "@type": "type.googleapis.com/google.rpc.QuotaFailure", violations: [] },
            { "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "37s" }
          ]),
          "busy-model": googleError(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
          "bad-model": googleError(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        }
        const standIn = yield* startStandIn((received) => {
          const model = /models\/([^:]+):/.exec(received.path)?.[1] ?? ""
          return answers[model] ?? { status: 500, body: "" }
        })
        const provider = yield* Provider.Provider
        const upstream = upstreamAt(standIn.url)
        const failure = (model: string, stream = false) =>
          Effect.flip(
            Effect.asVoid<unknown, Errors.UpstreamError, Scope.Scope>(
              stream ? provider.chatStream(upstream, { ...ask, model }) : provider.chat(upstream, { ...ask, model })
            )
          )
        const quota = yield* failure("quota-model")
        expect(quota).toMatchObject({ status: 429, retryable: true, retryAfterMs: 37_000 })
        expect(quota.message).toContain("You exceeded your current quota.")
        expect(yield* failure("quota-model", true)).toMatchObject({
          status: 429,
          retryable: true,
          retryAfterMs: 37_000
        })
        const busy = yield* failure("busy-model", true)
        expect(busy).toMatchObject({ status: 503, retryable: true })
        expect(busy.message).toContain("The model is overloaded.")
        expect(yield* failure("bad-model")).toMatchObject({ status: 400, retryable: false })
        expect(standIn.received.every((r) => r.headers["x-goog-api-key"] === KEY)).toBe(true)
      }).pipe(Effect.provide(Providers.layer()))
  )
})
