import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import type { Provider, Wire } from "../src/index.js"
import { Capabilities, Errors, Guard, Router, Topology } from "../src/index.js"
import { chunk, httpError, opened, provider, routerLayer, streamOf, upstream, usageChunk } from "./fixtures.js"

const capabilities = Guard.layer(Capabilities.guard)

const cut = new Errors.UpstreamError({ upstream: "a", kind: "connection", message: "broke off", retryable: true })

/** The requests each upstream's stream was opened with. */
type Calls = Array<{ readonly upstream: string; readonly request: Wire.ChatCompletionRequest }>

const streams = (
  answers: Record<string, () => Stream.Stream<Provider.StreamEvent, Errors.UpstreamError>>,
  calls: Calls
) =>
  provider({
    chatStream: (u, call) => {
      calls.push({ upstream: u.id, request: call.request })
      const answer = answers[u.id]
      return answer === undefined ? Effect.dieMessage(`no stream for ${u.id}`) : opened(answer())
    }
  })

const pool = (resume: boolean, upstreams: ReadonlyArray<Topology.Upstream>) => [
  Topology.pool({ id: "chat", models: ["gpt-4o"], strategy: "first", upstreams, resume })
]

const request: Wire.ChatCompletionRequest = {
  model: "gpt-4o",
  messages: [{ role: "user", content: "Say hello" }],
  max_tokens: 100
}

const usage = { prompt_tokens: 12, completion_tokens: 2, total_tokens: 14 }
const broken = () => Stream.concat(streamOf(chunk("Hello, "), chunk("wor")), Stream.fail(cut))

const contentOf = (events: ReadonlyArray<string>) =>
  events.map((data) => JSON.parse(data).choices[0]?.delta?.content ?? "").join("")

describe("stream.resume", () => {
  it.effect("continues a stream that broke off after content on an upstream that takes a prefix", () => {
    const calls: Calls = []
    const layer = routerLayer(
      pool(true, [upstream("a"), upstream("plain"), upstream("b", { capabilities: ["prefill"] })]),
      {
        provider: streams({ a: broken, b: () => streamOf(chunk("ld!"), usageChunk(usage)) }, calls),
        guards: capabilities
      }
    )
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const routed = yield* router.chatStream(request, { requestId: "req-r" })
      // A resumable stream has the shape of any routed stream: `events` is its prototype's getter
      // (see `StreamHandle`), not a getter of its own.
      expect(Object.getOwnPropertyDescriptor(routed, "events")).toBeUndefined()
      const events = yield* Router.collect(routed)
      expect(contentOf(events)).toBe("Hello, world!")
      // The continuation: the text sent as the assistant message to continue, the limit left.
      expect(calls.map((c) => c.upstream)).toEqual(["a", "b"])
      expect(calls[1]?.request).toMatchObject({
        messages: [
          { role: "user", content: "Say hello" },
          { role: "assistant", content: "Hello, wor" }
        ],
        continue_final_message: true,
        add_generation_prompt: false,
        max_tokens: 100 - 3
      })
      const decision = yield* routed.decision
      expect(decision).toMatchObject({
        requestId: "req-r",
        upstream: "b",
        outcome: "success",
        outputTokens: 2,
        resumed: [{ upstream: "b", requestId: "req-r-resume-1", afterChars: 10, after: "broke off" }]
      })
      expect(decision.attempts.map((a) => [a.upstream, a.outcome])).toEqual([
        ["a", "failure"],
        ["b", "success"]
      ])
      // `plain` cannot continue a prefix: left out, with the reason.
      expect(decision.excluded).toContainEqual({
        upstream: "plain",
        stage: "capabilities",
        reason: "openai upstream without prefill"
      })
    }).pipe(Effect.provide(layer))
  })

  it.effect(
    "sends the prefix without trailing whitespace, and drops the continuation's leading whitespace once",
    () => {
      const calls: Calls = []
      const layer = routerLayer(pool(true, [upstream("a"), upstream("b", { capabilities: ["prefill"] })]), {
        provider: streams(
          {
            a: () => Stream.concat(streamOf(chunk("Hello, ")), Stream.fail(cut)),
            b: () => streamOf(chunk(""), chunk(" world"), chunk(" again"))
          },
          calls
        ),
        guards: capabilities
      })
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const events = yield* Router.collect(yield* router.chatStream(request))
        expect(contentOf(events)).toBe("Hello, world again")
        expect(calls[1]?.request.messages.at(-1)).toEqual({ role: "assistant", content: "Hello," })
      }).pipe(Effect.provide(layer))
    }
  )

  it.effect("keeps the in-band error where no upstream can continue, or the pool does not resume", () => {
    const run = (resume: boolean, upstreams: ReadonlyArray<Topology.Upstream>) => {
      const calls: Calls = []
      const layer = routerLayer(pool(resume, upstreams), {
        provider: streams({ a: broken, b: () => streamOf(chunk("ld!")) }, calls),
        guards: capabilities
      })
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const routed = yield* router.chatStream(request)
        const error = yield* Effect.flip(Router.collect(routed))
        const decision = yield* routed.decision
        return { error, decision, calls: calls.map((c) => c.upstream) }
      }).pipe(Effect.provide(layer))
    }
    return Effect.gen(function* () {
      const none = yield* run(true, [upstream("a"), upstream("b")])
      expect(none.error).toBe(cut)
      expect(none.calls).toEqual(["a"])
      expect(none.decision.resumed).toBeUndefined()
      expect(none.decision.outcome).toBe("error")
      const off = yield* run(false, [upstream("a"), upstream("b", { capabilities: ["prefill"] })])
      expect(off.error).toBe(cut)
      expect(off.calls).toEqual(["a"])
    })
  })

  it.effect("does not continue a stream that sent a tool call", () => {
    const calls: Calls = []
    const toolCall: Provider.StreamEvent = {
      data: JSON.stringify({
        choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: "{" } }] } }]
      })
    }
    const layer = routerLayer(pool(true, [upstream("a"), upstream("b", { capabilities: ["prefill"] })]), {
      provider: streams(
        { a: () => Stream.concat(streamOf(chunk("Let me check"), toolCall), Stream.fail(httpError("a", 502))) },
        calls
      ),
      guards: capabilities
    })
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const routed = yield* router.chatStream(request)
      const error = yield* Effect.flip(Router.collect(routed))
      expect(error).toMatchObject({ status: 502 })
      expect(calls.map((c) => c.upstream)).toEqual(["a"])
    }).pipe(Effect.provide(layer))
  })
})
