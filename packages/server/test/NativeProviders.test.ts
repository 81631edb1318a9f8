/**
 * The gateway in front of upstreams that speak their provider's own API — Anthropic, Gemini and
 * Ollama's native one, each simulated — driven with the `openai` SDK: plain chat, streaming, a
 * tool-call round trip, structured output, and embeddings where the provider offers them.
 */
import { describe, expect, it } from "@effect/vitest"
import { Simulator } from "@sluice/providers"
import { Effect } from "effect"
import type OpenAI from "openai"
import type { APIError } from "openai"
import { simulatedConfig, startGateway, streamed } from "./harness.js"

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

/** A request's answer or its error. */
const settle = <A>(f: () => Promise<A>) =>
  Effect.promise(() =>
    f().then(
      (value) => ({ value, error: undefined }),
      (error: unknown) => ({ value: undefined, error: error as APIError })
    )
  )

interface Case {
  readonly dialect: Simulator.Dialect
  readonly provider: string
  readonly base: (url: string) => string
  readonly embeddings: boolean
}

const cases: ReadonlyArray<Case> = [
  { dialect: "anthropic", provider: "anthropic", base: (url) => `${url}/v1`, embeddings: false },
  { dialect: "gemini", provider: "gemini", base: (url) => `${url}/v1beta`, embeddings: true },
  { dialect: "ollama", provider: "ollama", base: (url) => url, embeddings: true }
]

/** A gateway whose pools serve chat and embeddings from one upstream speaking `c`'s dialect. */
const gatewayFor = (c: Case, completionTokens: number) =>
  Effect.gen(function* () {
    const sim = yield* Simulator.start({ dialect: c.dialect, name: c.dialect, completionTokens })
    const gateway = yield* startGateway(
      simulatedConfig(
        [
          { id: "native", provider: c.provider, baseUrl: c.base(sim.url), model: "native-model" },
          { id: "native-embed", provider: c.provider, baseUrl: c.base(sim.url), model: "native-embedder" }
        ],
        [
          { id: "chat", models: ["gpt-4o-mini"], upstreams: ["native"] },
          { id: "embed", models: ["text-embedding-3-small"], upstreams: ["native-embed"] }
        ]
      )
    )
    return { gateway, sim }
  })

const tools: Array<OpenAI.ChatCompletionTool> = [
  {
    type: "function",
    function: {
      name: "get_weather",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] }
    }
  }
]

/** The tool call of the last assistant turn the upstream received, in its provider's own shape. */
const replayedCall = (c: Case, body: unknown): unknown => {
  const b = body as Record<string, ReadonlyArray<Record<string, unknown>>>
  switch (c.dialect) {
    case "anthropic":
      return (b["messages"]![1]!["content"] as ReadonlyArray<Record<string, unknown>>)[0]!["input"]
    case "gemini":
      return (b["contents"]![1]!["parts"] as ReadonlyArray<Record<string, Record<string, unknown>>>)[0]![
        "functionCall"
      ]!["args"]
    default:
      return (b["messages"]![1]!["tool_calls"] as ReadonlyArray<Record<string, Record<string, unknown>>>)[0]![
        "function"
      ]!["arguments"]
  }
}

describe.each(cases)("gateway with a $provider upstream", (c) => {
  it.live("answers a chat completion and streams one", () =>
    Effect.gen(function* () {
      const { gateway } = yield* gatewayFor(c, 3)
      const answer = yield* promise(() =>
        gateway.client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
      )
      expect(answer.choices[0]?.message.content).toBe(`[${c.dialect}] lorem ipsum`)
      expect(answer.choices[0]?.finish_reason).toBe("stop")
      expect(answer.usage).toMatchObject({ completion_tokens: 3 })
      expect(yield* streamed(gateway.client)).toMatchObject({
        upstream: "native",
        content: `[${c.dialect}] lorem ipsum`,
        finishReason: "stop",
        error: undefined
      })
    }).pipe(Effect.scoped)
  )

  it.live("runs a tool-call round trip whose arguments match the tool's schema, whole, streamed and replayed", () =>
    Effect.gen(function* () {
      const { gateway, sim } = yield* gatewayFor(c, 2)
      const question: OpenAI.ChatCompletionMessageParam = { role: "user", content: "Weather?" }
      const first = yield* promise(() =>
        gateway.client.chat.completions.create({ model: "gpt-4o-mini", messages: [question], tools })
      )
      const message = first.choices[0]!.message
      expect(first.choices[0]?.finish_reason).toBe("tool_calls")
      const call = message.tool_calls?.[0] as OpenAI.ChatCompletionMessageFunctionToolCall
      // The simulated model fills the required `city` with its name, in its provider's own shape.
      const args = `{"city":"${c.dialect}"}`
      expect(call.function).toEqual({ name: "get_weather", arguments: args })
      const streamedCall = yield* promise(() =>
        gateway.client.chat.completions
          .stream({ model: "gpt-4o-mini", messages: [question], tools })
          .finalChatCompletion()
      )
      expect(streamedCall.choices[0]?.message.tool_calls?.[0]).toMatchObject({
        function: { name: "get_weather", arguments: args }
      })
      const second = yield* promise(() =>
        gateway.client.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [question, message, { role: "tool", tool_call_id: call.id, content: '{"celsius":18}' }],
          tools
        })
      )
      expect(second.choices[0]?.message.content).toBe(`[${c.dialect}] lorem`)
      // The simulator checked the round trip in its provider's own terms (else it answers 400).
      expect(sim.stats().requests).toBe(3)
      expect(replayedCall(c, sim.requests().at(-1)?.body)).toEqual({ city: c.dialect })
    }).pipe(Effect.scoped)
  )

  it.live("answers structured output as JSON text valid against the requested schema", () =>
    Effect.gen(function* () {
      const { gateway } = yield* gatewayFor(c, 3)
      const answer = yield* promise(() =>
        gateway.client.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: "A city, as JSON" }],
          response_format: {
            type: "json_schema",
            json_schema: {
              name: "city",
              schema: {
                type: "object",
                properties: { name: { type: "string" }, population: { type: "integer" } },
                required: ["name", "population"]
              }
            }
          }
        })
      )
      expect(answer.choices[0]?.finish_reason).toBe("stop")
      const city = JSON.parse(answer.choices[0]!.message.content!) as { name: unknown; population: unknown }
      expect(typeof city.name).toBe("string")
      expect(Number.isInteger(city.population)).toBe(true)
    }).pipe(Effect.scoped)
  )

  it.live(
    c.embeddings ? "answers embeddings with the requested dimensions" : "refuses embeddings with a 400 naming them",
    () =>
      Effect.gen(function* () {
        const { gateway } = yield* gatewayFor(c, 3)
        const result = yield* promise(() =>
          gateway.client.embeddings
            .create({ model: "text-embedding-3-small", input: ["a", "b"], dimensions: 16, encoding_format: "float" })
            .then(
              (value) => ({ value, error: undefined }),
              (error: unknown) => ({ value: undefined, error: error as APIError })
            )
        )
        if (c.embeddings) {
          expect(result.value?.data.map((d) => d.embedding.length)).toEqual([16, 16])
        } else {
          expect(result.error?.status).toBe(400)
          expect(result.error?.message).toContain("embeddings")
        }
      }).pipe(Effect.scoped)
  )
})

describe("gateway with a Gemini 3 upstream", () => {
  it.live(
    "carries each function call's thought signature to the client, whole and streamed, and back with the replayed history",
    () =>
      Effect.gen(function* () {
        const { gateway, sim } = yield* gatewayFor(cases[1]!, 2)
        const question: OpenAI.ChatCompletionMessageParam = { role: "user", content: "Weather?" }
        const signed = { google: { thought_signature: expect.any(String) } }
        const replay = (message: OpenAI.ChatCompletionMessageParam) => {
          const call = (message as OpenAI.ChatCompletionAssistantMessageParam).tool_calls![0]!
          return settle(() =>
            gateway.client.chat.completions.create({
              model: "gpt-4o-mini",
              messages: [question, message, { role: "tool", tool_call_id: call.id, content: '{"celsius":18}' }],
              tools
            })
          )
        }
        const whole = yield* promise(() =>
          gateway.client.chat.completions.create({ model: "gpt-4o-mini", messages: [question], tools })
        )
        const message = whole.choices[0]!.message
        expect(message.tool_calls?.[0]).toMatchObject({ function: { name: "get_weather" }, extra_content: signed })
        expect((yield* replay(message)).value?.choices[0]?.message.content).toBe("[gemini] lorem")
        const sent = sim.requests().at(-1)
        expect((sent!.body as { contents: Array<{ parts: Array<Record<string, unknown>> }> }).contents[1]).toEqual({
          role: "model",
          parts: [
            { functionCall: { name: "get_weather", args: { city: "gemini" } }, thoughtSignature: expect.any(String) }
          ]
        })
        // Streamed: the signature comes with the tool-call delta, and the SDK's accumulated message keeps it.
        const streamedMessage = (yield* promise(() =>
          gateway.client.chat.completions
            .stream({ model: "gpt-4o-mini", messages: [question], tools })
            .finalChatCompletion()
        )).choices[0]!.message
        expect(streamedMessage.tool_calls?.[0]).toMatchObject({ extra_content: signed })
        expect(
          (yield* replay(streamedMessage as OpenAI.ChatCompletionMessageParam)).value?.choices[0]?.message.content
        ).toBe("[gemini] lorem")
        // A history whose call lost its signature is refused, as Gemini 3 refuses it.
        const { extra_content: _, ...unsigned } = message
          .tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall & {
          extra_content?: unknown
        }
        const refused = yield* replay({ ...message, tool_calls: [unsigned] })
        expect(refused.error?.status).toBe(400)
        expect(refused.error?.message).toContain("thought_signature")
      }).pipe(Effect.scoped)
  )

  it.live(
    "takes over a tool loop begun on an OpenAI upstream: the unsigned call gets Google's documented stand-in",
    () =>
      Effect.gen(function* () {
        const gemini = yield* Simulator.start({ dialect: "gemini", name: "gemini", completionTokens: 2 })
        const gateway = yield* startGateway(
          simulatedConfig(
            [
              { id: "openai" },
              { id: "gemini3", provider: "gemini", baseUrl: `${gemini.url}/v1beta`, model: "gemini-3-pro-preview" }
            ],
            [
              { id: "first", models: ["step-1"], upstreams: ["openai"] },
              { id: "next", models: ["step-2"], upstreams: ["gemini3"] }
            ]
          )
        )
        const question: OpenAI.ChatCompletionMessageParam = { role: "user", content: "Weather?" }
        const first = yield* promise(() =>
          gateway.client.chat.completions.create({ model: "step-1", messages: [question], tools })
        )
        const message = first.choices[0]!.message
        const call = message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall
        expect(call).not.toHaveProperty("extra_content")
        const second = yield* promise(() =>
          gateway.client.chat.completions.create({
            model: "step-2",
            messages: [question, message, { role: "tool", tool_call_id: call.id, content: '{"celsius":18}' }],
            tools
          })
        )
        expect(second.choices[0]?.message.content).toBe("[gemini] lorem")
        const sent = gemini.requests().at(-1)!.body as { contents: Array<{ parts: Array<Record<string, unknown>> }> }
        expect(sent.contents[1]?.parts[0]).toMatchObject({
          functionCall: { name: "get_weather" },
          thoughtSignature: "skip_thought_signature_validator"
        })
      }).pipe(Effect.scoped)
  )
})
