import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import type { Provider } from "../src/index.js"
import { Capabilities, Errors, Guard, Router, Topology } from "../src/index.js"
import {
  answer,
  chatRequest,
  completion,
  httpError,
  opened,
  provider,
  routerLayer,
  streamOf,
  upstream
} from "./fixtures.js"

const capabilities = Layer.effect(
  Guard.Guards,
  Effect.map(Capabilities.guard, (guard) => [guard])
)

/** A Responses answer as an upstream that serves the endpoint sends it. */
const response = (id: string) => ({
  object: "response",
  id: `resp_${id}`,
  output: [],
  usage: { input_tokens: 11, output_tokens: 4, total_tokens: 15 }
})

const body = { model: "gpt-4o", input: "hello" }

describe("Router.forward", () => {
  it.effect("passes the endpoint through where the upstream has it, and records the decision as its operation", () => {
    const calls: Array<string> = []
    const pools = [
      Topology.pool({
        id: "gpt",
        models: ["gpt-4o"],
        upstreams: [upstream("native", { capabilities: ["tools", "responses"] }), upstream("plain")]
      })
    ]
    const stub = provider({
      forward: (u, call) =>
        Effect.sync(() => {
          calls.push(`forward ${u.id} ${call.request.endpoint} ${call.model}`)
          return answer(response(u.id))
        })
    })
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const routed = yield* router.forward({ endpoint: "responses", body, chat: chatRequest() })
      expect(routed.response).toEqual({ native: true, value: response("native") })
      expect(calls).toEqual(["forward native responses gpt-4o"])
      expect(routed.decision).toMatchObject({
        operation: "responses",
        upstream: "native",
        inputTokens: 11,
        outputTokens: 4,
        outcome: "success"
      })
    }).pipe(Effect.provide(routerLayer(pools, { provider: stub, guards: capabilities })))
  })

  it.effect("fails over to an upstream without the endpoint through the request's chat translation", () => {
    const pools = [
      Topology.pool({
        id: "gpt",
        models: ["gpt-4o"],
        upstreams: [upstream("native", { capabilities: ["responses"] }), upstream("plain")]
      })
    ]
    const stub = provider({
      forward: (u) => Effect.fail(httpError(u.id, 503)),
      chat: (u) => Effect.succeed(answer(completion(u.id)))
    })
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const routed = yield* router.forward({ endpoint: "responses", body, chat: chatRequest() })
      expect(routed.response.native).toBe(false)
      expect(routed.decision.attempts.map((a) => [a.upstream, a.outcome])).toEqual([
        ["native", "failure"],
        ["plain", "success"]
      ])
    }).pipe(Effect.provide(routerLayer(pools, { provider: stub, guards: capabilities })))
  })

  it.effect("refuses a request without a translation when no upstream has the endpoint, naming the capability", () => {
    const pools = [
      Topology.pool({
        id: "legacy",
        models: ["gpt-4o"],
        upstreams: [upstream("a", { capabilities: ["tools"] }), upstream("b", { capabilities: ["vision"] })]
      })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* Effect.flip(
        router.forward({ endpoint: "completions", body: { model: "gpt-4o", prompt: "x" } })
      )
      expect(error).toBeInstanceOf(Errors.NoUpstreamAvailable)
      const mapped = Errors.toOpenAI(error)
      expect(mapped.status).toBe(400)
      expect(mapped.body.error.message).toContain("pool 'legacy'")
      expect(mapped.body.error.message).toContain("a (openai upstream without completions)")
    }).pipe(Effect.provide(routerLayer(pools, { provider: provider({}), guards: capabilities })))
  })

  it.effect("keeps opt-in endpoints from upstreams that list no capabilities (responses), not the others", () =>
    Effect.sync(() => {
      expect(Capabilities.has(undefined, "completions")).toBe(true)
      expect(Capabilities.has(undefined, "responses")).toBe(false)
      expect(Capabilities.has(["responses"], "responses")).toBe(true)
      expect(Capabilities.has(["tools"], "completions")).toBe(false)
    })
  )
})

describe("Router.forwardStream", () => {
  const event = (data: Record<string, unknown>, content: boolean): Provider.StreamEvent => ({
    data: JSON.stringify(data),
    content
  })

  it.effect("fails over before the first content and says whether the stream is the endpoint's own", () => {
    const pools = [
      Topology.pool({
        id: "legacy",
        models: ["gpt-4o"],
        upstreams: [upstream("broken"), upstream("good")]
      })
    ]
    const stub = provider({
      forwardStream: (u) =>
        u.id === "broken"
          ? opened(streamOf(event({ choices: [] }, false)))
          : opened(
              streamOf(event({ choices: [{ text: "hi" }] }, true), {
                data: JSON.stringify({ choices: [] }),
                usage: { prompt_tokens: 2, completion_tokens: 1, total_tokens: 3 },
                usageOnly: true,
                content: false
              })
            )
    })
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const { native, stream } = yield* router.forwardStream({
        endpoint: "completions",
        body: { model: "gpt-4o", prompt: "x" }
      })
      expect(native).toBe(true)
      const events = yield* Router.collect(stream)
      // The usage-only chunk is the client's only when it asked for it.
      expect(events).toEqual([JSON.stringify({ choices: [{ text: "hi" }] })])
      const decision = yield* stream.decision
      expect(decision).toMatchObject({ operation: "completions", stream: true, upstream: "good", outputTokens: 1 })
      expect(decision.attempts.map((a) => a.upstream)).toEqual(["broken", "good"])
    }).pipe(Effect.provide(routerLayer(pools, { provider: stub, guards: capabilities })))
  })
})
