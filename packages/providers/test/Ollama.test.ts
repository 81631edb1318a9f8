/** The native Ollama provider over HTTP: its errors as the router must see them. */
import { describe, expect, it } from "@effect/vitest"
import type { Wire } from "@sluice/core"
import { Provider, StreamEvent, Topology } from "@sluice/core"
import { Effect, Stream } from "effect"
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

  it.scopedLive(
    "ends a stream that breaks off after content (an error line, or no done line) with an UpstreamError, never a clean end",
    () =>
      Effect.gen(function* () {
        const line = (value: unknown) => JSON.stringify(value) + "\n"
        const content = (text: string) =>
          line({ model: "m", message: { role: "assistant", content: text }, done: false })
        const bodies: Record<string, string> = {
          failing: content("The") + content(" sky") + line({ error: "llama runner process has terminated" }),
          truncated: content("The") + content(" sky")
        }
        const standIn = yield* startStandIn((received) => ({
          status: 200,
          headers: { "content-type": "application/x-ndjson" },
          body: bodies[(JSON.parse(received.body) as { model: string }).model] ?? ""
        }))
        const provider = yield* Provider.Provider
        const upstream = Topology.upstream({ id: "local", provider: "ollama", baseUrl: standIn.url, timeoutMs: 5_000 })
        const read = (model: string) =>
          Effect.gen(function* () {
            const opened = yield* provider.chatStream(upstream, ask(model))
            const texts: Array<string> = []
            const end = yield* StreamEvent.toStream(opened.events).pipe(
              Stream.runForEach((event) =>
                Effect.sync(() => {
                  const chunk = JSON.parse(event.data) as { choices: Array<{ delta?: { content?: string } }> }
                  texts.push(chunk.choices[0]?.delta?.content ?? "")
                })
              ),
              Effect.either
            )
            return { text: texts.join(""), end }
          })
        const failing = yield* read("failing")
        expect(failing.text).toBe("The sky")
        expect(failing.end).toMatchObject({
          _tag: "Left",
          left: {
            _tag: "UpstreamError",
            upstream: "local",
            retryable: true,
            message: "stream error: llama runner process has terminated"
          }
        })
        const truncated = yield* read("truncated")
        expect(truncated.text).toBe("The sky")
        expect(truncated.end).toMatchObject({
          _tag: "Left",
          left: {
            _tag: "UpstreamError",
            retryable: true,
            message: "the stream ended without a done line: the upstream broke off"
          }
        })
      }).pipe(Effect.provide(Providers.layer()))
  )
})
