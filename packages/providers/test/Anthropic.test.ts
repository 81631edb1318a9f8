/** The Anthropic provider against an Anthropic-shaped simulated upstream and stand-in servers. */
import { describe, expect, it } from "@effect/vitest"
import type { Wire } from "@sluice/core"
import { Provider, StreamEvent, Topology } from "@sluice/core"
import { Chunk, Effect, Option, Redacted, Stream } from "effect"
import { Providers, Simulator } from "@sluice/providers"

const upstreamOf = (sim: Simulator.Simulator) =>
  Topology.upstream({
    id: "claude",
    provider: "anthropic",
    baseUrl: `${sim.url}/v1`,
    apiKey: Option.some(Redacted.make("sk-ant-test-0123456789")),
    timeoutMs: 5_000
  })

const ask = (request: Readonly<Record<string, unknown>>) =>
  ({
    request: { model: "claude-sonnet-4-5", messages: [{ role: "user", content: "Hi" }], ...request },
    model: "claude-sonnet-4-5"
  }) as Provider.Call<Wire.ChatCompletionRequest>

/** Every chunk of a stream, parsed. */
const collect = (opened: Provider.Opened) =>
  Effect.map(Stream.runCollect(StreamEvent.toStream(opened.events)), (events) =>
    Chunk.toArray(events).map((e) => JSON.parse(e.data) as Wire.ChatCompletionChunk)
  )

const contentOf = (chunks: ReadonlyArray<Wire.ChatCompletionChunk>) =>
  chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")

describe("Anthropic provider", () => {
  it.scopedLive("calls POST /messages with x-api-key and anthropic-version, and translates the answer", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "anthropic", completionTokens: 3 })
      const provider = yield* Provider.Provider
      const answer = yield* provider.chat(
        upstreamOf(sim),
        ask({
          messages: [
            { role: "system", content: "Be brief" },
            { role: "user", content: "Hi" }
          ]
        })
      )
      expect(answer.value.choices[0]).toMatchObject({
        message: { role: "assistant", content: "[sim] lorem ipsum" },
        finish_reason: "stop"
      })
      expect(answer.value.usage).toMatchObject({ completion_tokens: 3 })
      const [recorded] = sim.requests()
      expect(recorded?.path).toBe("/v1/messages")
      expect(recorded?.headers["x-api-key"]).toBe("sk-ant-test-0123456789")
      expect(recorded?.headers["anthropic-version"]).toBe("2023-06-01")
      expect(recorded?.headers["authorization"]).toBeUndefined()
      expect(recorded?.body).toEqual({
        model: "claude-sonnet-4-5",
        max_tokens: 4096,
        system: "Be brief",
        messages: [{ role: "user", content: "Hi" }]
      })
    }).pipe(Effect.provide(Providers.layer()))
  )

  it.scopedLive("streams the answer as OpenAI chunks ending with a finish reason and usage", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "anthropic", completionTokens: 4 })
      const provider = yield* Provider.Provider
      const chunks = yield* Effect.flatMap(provider.chatStream(upstreamOf(sim), ask({ stream: true })), collect)
      expect(contentOf(chunks)).toBe("[sim] lorem ipsum dolor")
      expect(chunks.at(-2)?.choices[0]?.finish_reason).toBe("stop")
      expect(chunks.at(-1)?.usage).toMatchObject({ completion_tokens: 4 })
    }).pipe(Effect.provide(Providers.layer()))
  )

  it.scopedLive("makes a tool call, then answers the tool's result with text", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "anthropic", completionTokens: 2 })
      const provider = yield* Provider.Provider
      const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }]
      const first = yield* provider.chat(upstreamOf(sim), ask({ tools }))
      const call = first.value.choices[0]?.message["tool_calls"] as ReadonlyArray<{ id: string }>
      expect(first.value.choices[0]?.finish_reason).toBe("tool_calls")
      expect(call).toEqual([
        { id: expect.any(String), type: "function", function: { name: "get_weather", arguments: "{}" } }
      ])
      const second = yield* provider.chat(
        upstreamOf(sim),
        ask({
          tools,
          messages: [
            { role: "user", content: "Weather?" },
            first.value.choices[0]!.message,
            { role: "tool", tool_call_id: call[0]!.id, content: "sunny" }
          ]
        })
      )
      expect(second.value.choices[0]).toMatchObject({ message: { content: "[sim] lorem" }, finish_reason: "stop" })
    }).pipe(Effect.provide(Providers.layer()))
  )

  it.scopedLive("fails a 529 overloaded_error retryably, and reports anthropic-ratelimit-* headers", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "anthropic", rpm: 10 })
      const provider = yield* Provider.Provider
      const ok = yield* provider.chat(upstreamOf(sim), ask({}))
      expect(ok.rateLimits).toMatchObject({ limitRequests: 10, remainingRequests: 9 })
      expect(ok.rateLimits?.resetRequestsMs).toBeGreaterThan(0)
      sim.setOptions({ failureRate: 1, failureStatus: 529 })
      const error = yield* Effect.flip(provider.chat(upstreamOf(sim), ask({})))
      expect(error).toMatchObject({ kind: "http", status: 529, retryable: true })
      expect(error.message).toBe("HTTP 529: overloaded_error: Overloaded")
      const streamed = yield* Effect.flip(provider.chatStream(upstreamOf(sim), ask({ stream: true })))
      expect(streamed).toMatchObject({ status: 529, retryable: true })
    }).pipe(Effect.provide(Providers.layer()))
  )

  it.scopedLive("fails a stream that breaks off before message_stop, retryably", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "anthropic", completionTokens: 8, midStreamCutRate: 1 })
      const provider = yield* Provider.Provider
      const opened = yield* provider.chatStream(upstreamOf(sim), ask({ stream: true }))
      const error = yield* Effect.flip(collect(opened))
      expect(error).toMatchObject({ kind: "connection", retryable: true })
      expect(error.message).toContain("broke off")
    }).pipe(Effect.provide(Providers.layer()))
  )

  it.scopedLive("refuses embeddings and n > 1 with a 400 naming the feature, without calling the upstream", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "anthropic" })
      const provider = yield* Provider.Provider
      const many = yield* Effect.flip(provider.chat(upstreamOf(sim), ask({ n: 3 })))
      expect(many).toMatchObject({ status: 400, retryable: false })
      expect(many.message).toContain("(n)")
      const embeddings = yield* Effect.flip(
        provider.embeddings(upstreamOf(sim), { request: { model: "m", input: "x" }, model: "m" })
      )
      expect(embeddings.message).toContain("embeddings")
      expect(sim.stats().requests).toBe(0)
    }).pipe(Effect.provide(Providers.layer()))
  )
})
