/**
 * `POST /v1/responses` passed through to upstreams that serve the Responses API themselves
 * (capability `responses`), translated only for the others: whole and streamed with the `openai`
 * SDK, failover from one to the other, and `previous_response_id` / `store` / built-in tools, which
 * only an upstream that serves the API can take.
 */
import { describe, expect, it } from "@effect/vitest"
import { Gemini } from "@sluice/providers"
import { Effect } from "effect"
import type OpenAI from "openai"
import { BadRequestError } from "openai"
import { simulatedConfig, startGateway, startUpstream, streamedResponse } from "./harness.js"

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

/** A simulated OpenAI-compatible server that declares the Responses API (and what else it takes). */
const native = (id: string, fields: Record<string, unknown> = {}) => ({
  id,
  capabilities: ["tools", "json_schema", "completions", "responses"],
  ...fields
})

const gatewayWith = (upstreams: ReadonlyArray<Record<string, unknown>>) =>
  startGateway(
    simulatedConfig(upstreams, [
      { id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: upstreams.map((u) => u["id"]) }
    ])
  )

const failure = (f: () => Promise<unknown>) =>
  promise(() =>
    f().then(
      () => undefined,
      (error: unknown) => error
    )
  )

describe("POST /v1/responses passed through", () => {
  it.live("relays the upstream's own response where it serves the API, and translates where it does not", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith([
        native("native", { priority: 0, simulate: { completionTokens: 3 } }),
        { id: "plain", priority: 1, simulate: { completionTokens: 2 } }
      ])
      const { data, response } = yield* promise(() =>
        gateway.client.responses
          .create({ model: "gpt-4o-mini", instructions: "Be brief.", input: "Hi", metadata: { run: "1" } })
          .withResponse()
      )
      expect(data).toMatchObject({ object: "response", status: "completed", output_text: "[native] lorem ipsum" })
      expect(data.id).toMatch(/^resp_msg_native_/)
      expect(data.usage?.output_tokens).toBe(3)
      expect(response.headers.get("x-sluice-upstream")).toBe("native")
      // As the client wrote it: no translation to messages.
      expect(gateway.simulator("native").requests().at(-1)).toMatchObject({
        path: "/v1/responses",
        body: { model: "gpt-4o-mini", instructions: "Be brief.", input: "Hi", metadata: { run: "1" } }
      })
      gateway.simulator("native").setOptions({ failureRate: 1 })
      const translated = yield* promise(() => gateway.client.responses.create({ model: "gpt-4o-mini", input: "Hi" }))
      expect(translated.output_text).toBe("[plain] lorem")
      expect(gateway.simulator("plain").requests().at(-1)?.path).toBe("/v1/chat/completions")
    }).pipe(Effect.scoped)
  )

  it.live("streams the upstream's own events, which the SDK accumulates", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith([native("native", { simulate: { completionTokens: 4 } })])
      const { events, final, text } = yield* streamedResponse(gateway.client)
      expect(text).toBe("[native] lorem ipsum dolor")
      expect(final.output_text).toBe("[native] lorem ipsum dolor")
      expect(final.usage?.output_tokens).toBe(4)
      expect(events[0]).toBe("response.created")
      expect(events.at(-1)).toBe("response.completed")
      expect(gateway.simulator("native").requests().at(-1)).toMatchObject({
        path: "/v1/responses",
        body: { stream: true }
      })
    }).pipe(Effect.scoped)
  )

  it.live("ends a native stream that breaks off after content with the error event, which the SDK rejects with", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith([native("native", { simulate: { completionTokens: 8, midStreamCutRate: 1 } })])
      const error = yield* failure(() =>
        gateway.client.responses.stream({ model: "gpt-4o-mini", input: "Hi" }).finalResponse()
      )
      // The SDK rejects with the error event itself.
      expect(error).toMatchObject({ type: "error", message: expect.stringContaining("native") })
    }).pipe(Effect.scoped)
  )

  it.live("ends a passed-through stream whose upstream reports response.failed with an error event", () =>
    Effect.gen(function* () {
      const event = (type: string, fields: Record<string, unknown>) =>
        `event: ${type}\ndata: ${JSON.stringify({ type, ...fields })}\n\n`
      const failing = yield* startUpstream((_req, _body, res) => {
        res.writeHead(200, { "content-type": "text/event-stream" })
        res.end(
          event("response.created", {
            response: { id: "resp_1", object: "response", status: "in_progress", output: [] }
          }) +
            event("response.output_item.added", {
              output_index: 0,
              item: { type: "message", id: "m", status: "in_progress", role: "assistant", content: [] }
            }) +
            event("response.content_part.added", {
              item_id: "m",
              output_index: 0,
              content_index: 0,
              part: { type: "output_text", text: "", annotations: [] }
            }) +
            event("response.output_text.delta", { item_id: "m", output_index: 0, content_index: 0, delta: "Hi" }) +
            event("response.failed", {
              response: { id: "resp_1", error: { code: "server_error", message: "model crashed" } }
            })
        )
      })
      const gateway = yield* gatewayWith([
        native("failing", { provider: "openai-compatible", baseUrl: failing.baseUrl })
      ])
      const events = yield* promise(async () => {
        const seen: Array<string> = []
        const stream = gateway.client.responses.stream({ model: "gpt-4o-mini", input: "Hi" })
        stream.on("event", (e) => seen.push(e.type))
        const error = await stream.finalResponse().then(
          () => undefined,
          (e: unknown) => e
        )
        return { seen, error }
      })
      expect(events.seen.slice(-2)).toEqual(["response.output_text.delta", "error"])
      expect(events.error).toMatchObject({ type: "error", message: expect.stringContaining("model crashed") })
    }).pipe(Effect.scoped)
  )

  it.live("sends previous_response_id, store and built-in tools only to an upstream that serves the API", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith([
        // Preferred, but it cannot take what has no chat translation.
        { id: "plain", priority: 0 },
        native("native", { priority: 1 })
      ])
      const requests: ReadonlyArray<OpenAI.Responses.ResponseCreateParamsNonStreaming> = [
        { model: "gpt-4o-mini", input: "And then?", previous_response_id: "resp_1" },
        { model: "gpt-4o-mini", input: "Hi", store: true },
        { model: "gpt-4o-mini", input: "News?", tools: [{ type: "web_search_preview" }] }
      ]
      for (const request of requests) {
        const { response } = yield* promise(() => gateway.client.responses.create(request).withResponse())
        expect(response.headers.get("x-sluice-upstream")).toBe("native")
        expect(gateway.simulator("native").requests().at(-1)?.body).toMatchObject(request)
      }
      expect(gateway.simulator("plain").stats().requests).toBe(0)
    }).pipe(Effect.scoped)
  )

  it.live(
    "gives an upstream that serves the API the plain call ids of a history whose calls a Gemini upstream made",
    () =>
      Effect.gen(function* () {
        const gateway = yield* gatewayWith([native("native")])
        // A real signature runs to hundreds of characters; folded into the id, OpenAI refuses it past 64.
        const signature = Buffer.from("s".repeat(600)).toString("base64")
        const callId = Gemini.foldedId({ id: "call_0", ...Gemini.signatureFields(signature) }) as string
        expect(callId.length).toBeGreaterThan(64)
        const input: OpenAI.Responses.ResponseInput = [
          { role: "user", content: "Weather?" },
          { type: "function_call", call_id: callId, name: "get_weather", arguments: "{}" },
          { type: "function_call_output", call_id: callId, output: "sunny" }
        ]
        yield* promise(() => gateway.client.responses.create({ model: "gpt-4o-mini", input }))
        const sent = gateway.simulator("native").requests().at(-1)?.body as { input: Array<Record<string, unknown>> }
        expect(sent.input.map((item) => item["call_id"])).toEqual([undefined, "call_0", "call_0"])
        expect(sent.input[0]).toEqual({ role: "user", content: "Weather?" })
      }).pipe(Effect.scoped)
  )

  it.live("answers 400 saying why when no upstream of the pool serves the API", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith([{ id: "plain" }])
      const error = yield* failure(() =>
        gateway.client.responses.create({
          model: "gpt-4o-mini",
          input: "News?",
          tools: [{ type: "web_search_preview" }]
        })
      )
      expect(error).toBeInstanceOf(BadRequestError)
      expect((error as BadRequestError).message).toContain(
        "built-in tools need an upstream that serves the Responses API"
      )
      expect((error as BadRequestError).param).toBe("tools[0]")
      expect(gateway.simulator("plain").stats().requests).toBe(0)
    }).pipe(Effect.scoped)
  )
})
