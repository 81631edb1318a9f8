/**
 * `POST /v1/responses` with the `openai` SDK's Responses API (`client.responses`), through pools of
 * OpenAI- and Anthropic-shaped simulated upstreams: text, streams, a function-call round trip,
 * structured output, and the stateless refusals.
 */
import { describe, expect, it } from "@effect/vitest"
import { Simulator } from "@sluice/providers"
import { Effect } from "effect"
import type OpenAI from "openai"
import { BadRequestError } from "openai"
import { simulatedConfig, startGateway, streamedResponse } from "./harness.js"

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

const gatewayWith = (upstreams: ReadonlyArray<Record<string, unknown>>) =>
  startGateway(
    simulatedConfig(upstreams, [
      { id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: upstreams.map((u) => u["id"]) }
    ])
  )

const weather: OpenAI.Responses.FunctionTool = {
  type: "function",
  name: "get_weather",
  description: "Weather of a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: [] },
  strict: false
}

describe("POST /v1/responses with the openai SDK", () => {
  it.live("answers a response from an OpenAI-shaped upstream and from an Anthropic one", () =>
    Effect.gen(function* () {
      const claude = yield* Simulator.start({ dialect: "anthropic", name: "claude", completionTokens: 2 })
      const gateway = yield* gatewayWith([
        { id: "gpt", simulate: { completionTokens: 3 } },
        { id: "claude", provider: "anthropic", baseUrl: `${claude.url}/v1` }
      ])
      const response = yield* promise(() =>
        gateway.client.responses.create({ model: "gpt-4o-mini", instructions: "Be brief.", input: "Hi" })
      )
      expect(response).toMatchObject({
        object: "response",
        status: "completed",
        model: "gpt-4o-mini",
        output_text: "[gpt] lorem ipsum",
        output: [{ type: "message", role: "assistant", content: [{ type: "output_text", text: "[gpt] lorem ipsum" }] }],
        usage: { output_tokens: 3 }
      })
      expect(gateway.simulator("gpt").requests().at(-1)?.body).toMatchObject({
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "Hi" }
        ]
      })
      gateway.simulator("gpt").setOptions({ failureRate: 1 })
      const fromClaude = yield* promise(() => gateway.client.responses.create({ model: "gpt-4o-mini", input: "Hi" }))
      expect(fromClaude.output_text).toBe("[claude] lorem")
    }).pipe(Effect.scoped)
  )

  it.live("streams a response the SDK accumulates, with events in the Responses order", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith([{ id: "gpt", simulate: { completionTokens: 4 } }])
      const { events, final, text } = yield* streamedResponse(gateway.client)
      expect(text).toBe("[gpt] lorem ipsum dolor")
      expect(final.output_text).toBe("[gpt] lorem ipsum dolor")
      expect(final.status).toBe("completed")
      expect(final.usage?.output_tokens).toBe(4)
      expect(events.slice(0, 4)).toEqual([
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added"
      ])
      expect(events.slice(-4)).toEqual([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed"
      ])
    }).pipe(Effect.scoped)
  )

  it.live("runs a function-call round trip, streamed and not", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith([{ id: "gpt", simulate: { completionTokens: 2 } }])
      const first = yield* promise(() =>
        gateway.client.responses.create({ model: "gpt-4o-mini", input: "Weather in Paris?", tools: [weather] })
      )
      const call = first.output.find(
        (item): item is OpenAI.Responses.ResponseFunctionToolCall => item.type === "function_call"
      )
      // The simulated model fills the tool's parameters (`city`, a string) with its name.
      expect(call).toMatchObject({ type: "function_call", name: "get_weather", arguments: '{"city":"gpt"}' })
      const streamed = yield* promise(() =>
        gateway.client.responses
          .stream({ model: "gpt-4o-mini", input: "Weather in Paris?", tools: [weather] })
          .finalResponse()
      )
      expect(streamed.output.find((item) => item.type === "function_call")).toMatchObject({
        name: "get_weather",
        arguments: '{"city":"gpt"}'
      })
      const second = yield* promise(() =>
        gateway.client.responses.create({
          model: "gpt-4o-mini",
          tools: [weather],
          input: [
            { role: "user", content: "Weather in Paris?" },
            { type: "function_call", call_id: call!.call_id, name: "get_weather", arguments: "{}" },
            { type: "function_call_output", call_id: call!.call_id, output: "18C" }
          ]
        })
      )
      expect(second.output_text).toBe("[gpt] lorem")
      expect(gateway.simulator("gpt").requests().at(-1)?.body).toMatchObject({
        messages: [
          { role: "user", content: "Weather in Paris?" },
          { role: "assistant", tool_calls: [{ id: call!.call_id, function: { name: "get_weather" } }] },
          { role: "tool", tool_call_id: call!.call_id, content: "18C" }
        ]
      })
    }).pipe(Effect.scoped)
  )

  it.live(
    "carries a Gemini 3 thought signature through a function-call loop in the call_id the SDK replays, whole and streamed, back into Gemini's functionCall part",
    () =>
      Effect.gen(function* () {
        const gateway = yield* gatewayWith([{ id: "gemini", simulate: { dialect: "gemini", completionTokens: 2 } }])
        const sim = gateway.simulator("gemini")
        const question: OpenAI.Responses.ResponseInputItem = { role: "user", content: "Weather in Paris?" }
        const ask = { model: "gpt-4o-mini", tools: [weather] }
        const first = yield* promise(() => gateway.client.responses.create({ ...ask, input: [question] }))
        const streamed = yield* promise(() =>
          gateway.client.responses.stream({ ...ask, input: [question] }).finalResponse()
        )
        for (const answer of [first, streamed]) {
          const output = answer.output as Array<OpenAI.Responses.ResponseOutputItem>
          const call = output.find(
            (item): item is OpenAI.Responses.ResponseFunctionToolCall => item.type === "function_call"
          )!
          expect(call).toMatchObject({ name: "get_weather", arguments: '{"city":"gemini"}' })
          // The output items go back as the next input, as the SDK's agent loops send them.
          const second = yield* promise(() =>
            gateway.client.responses.create({
              ...ask,
              input: [
                question,
                ...(output as unknown as Array<OpenAI.Responses.ResponseInputItem>),
                { type: "function_call_output", call_id: call.call_id, output: "18C" }
              ]
            })
          )
          // The simulated Gemini 3 refuses a call whose signature is missing or changed: this answer proves it came back.
          expect(second.output_text).toBe("[gemini] lorem")
          expect(sim.requests().at(-1)?.body).toMatchObject({
            contents: [
              { role: "user" },
              {
                role: "model",
                parts: [
                  {
                    functionCall: { name: "get_weather", args: { city: "gemini" } },
                    thoughtSignature: Simulator.thoughtSignature("get_weather")
                  }
                ]
              },
              { role: "user", parts: [{ functionResponse: { name: "get_weather", response: { result: "18C" } } }] }
            ]
          })
        }
      }).pipe(Effect.scoped)
  )

  it.live("answers structured output as JSON valid against the schema", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith([{ id: "gpt" }])
      const response = yield* promise(() =>
        gateway.client.responses.create({
          model: "gpt-4o-mini",
          input: "A city",
          text: {
            format: {
              type: "json_schema",
              name: "city",
              strict: true,
              schema: {
                type: "object",
                properties: { name: { type: "string" } },
                required: ["name"],
                additionalProperties: false
              }
            }
          }
        })
      )
      expect(JSON.parse(response.output_text)).toEqual({ name: expect.any(String) })
    }).pipe(Effect.scoped)
  )

  it.live("refuses previous_response_id and store: true with a 400 when no upstream keeps responses", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith([{ id: "gpt" }])
      const failure = (body: OpenAI.Responses.ResponseCreateParamsNonStreaming) =>
        promise(() =>
          gateway.client.responses.create(body).then(
            () => undefined,
            (error: unknown) => error
          )
        )
      const previous = yield* failure({ model: "gpt-4o-mini", input: "Hi", previous_response_id: "resp_1" })
      expect(previous).toBeInstanceOf(BadRequestError)
      expect((previous as BadRequestError).message).toContain("needs an upstream that keeps responses")
      const stored = yield* failure({ model: "gpt-4o-mini", input: "Hi", store: true })
      expect((stored as BadRequestError).status).toBe(400)
      expect(gateway.simulator("gpt").stats().requests).toBe(0)
    }).pipe(Effect.scoped)
  )
})
