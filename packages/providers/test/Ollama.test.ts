/** The native Ollama provider over HTTP: its errors as the router must see them. */
import { describe, expect, it } from "@effect/vitest"
import type { Wire } from "@sluice/core"
import { Provider, Topology } from "@sluice/core"
import { Effect } from "effect"
import { Providers } from "@sluice/providers"
import type { Answer } from "./standIn.js"
import { startStandIn } from "./standIn.js"

const ask = (model: string) =>
  ({
    request: { model, messages: [{ role: "user", content: "Hi" }] },
    model
  }) as Provider.Call<Wire.ChatCompletionRequest>

describe("Ollama provider", () => {
  it.scopedLive(
    "maps a missing model (404) as not retryable and a busy server (503) or a crash (500) as retryable",
    () =>
      Effect.gen(function* () {
        const answers: Record<string, Answer> = {
          llama9: { status: 404, body: JSON.stringify({ error: "model 'llama9' not found, try pulling it first" }) },
          busy: {
            status: 503,
            body: JSON.stringify({ error: "server busy, please try again.  maximum pending requests exceeded" })
          },
          crashing: {
            status: 500,
            body: JSON.stringify({ error: "llama runner process has terminated: signal: killed" })
          }
        }
        const standIn = yield* startStandIn((received) => {
          const model = (JSON.parse(received.body) as { model: string }).model
          return answers[model] ?? { status: 500, body: "" }
        })
        const provider = yield* Provider.Provider
        const upstream = Topology.upstream({ id: "local", provider: "ollama", baseUrl: standIn.url, timeoutMs: 5_000 })
        const missing = yield* Effect.flip(provider.chat(upstream, ask("llama9")))
        expect(missing).toMatchObject({ upstream: "local", status: 404, retryable: false })
        expect(missing.message).toContain("model 'llama9' not found")
        const busy = yield* Effect.flip(provider.chatStream(upstream, ask("busy")))
        expect(busy).toMatchObject({ status: 503, retryable: true })
        expect(busy.message).toContain("server busy")
        const crashed = yield* Effect.flip(provider.chat(upstream, ask("crashing")))
        expect(crashed).toMatchObject({ status: 500, retryable: true })
        expect(crashed.message).toContain("llama runner process has terminated")
        expect(standIn.received.map((r) => r.path)).toEqual(["/api/chat", "/api/chat", "/api/chat"])
      }).pipe(Effect.provide(Providers.layer()))
  )
})
