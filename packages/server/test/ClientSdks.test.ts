/**
 * The clients that call `/v1/responses` by default, unchanged against the gateway: the Vercel AI
 * SDK's `openai` provider and LangChain's `ChatOpenAI` with `useResponsesApi` — text, streams, a
 * tool call and structured output, served by a simulated upstream.
 */
import { createOpenAI } from "@ai-sdk/openai"
import { describe, expect, it } from "@effect/vitest"
import { ChatOpenAI } from "@langchain/openai"
import { generateObject, generateText, jsonSchema, streamText, tool } from "ai"
import { Effect } from "effect"
import { simulatedConfig, startGateway } from "./harness.js"

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

const gateway = startGateway(
  simulatedConfig(
    [{ id: "gpt", simulate: { completionTokens: 3 } }],
    [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["gpt"] }]
  )
)

/** The paths the gateway served, as its server spans recorded them. */
const servedPaths = (spans: ReturnType<Effect.Effect.Success<typeof gateway>["spans"]>) =>
  new Set(spans.filter((s) => s.name.startsWith("http.server")).map((s) => s.attributes["url.path"]))

const citySchema = {
  type: "object",
  properties: { name: { type: "string" } },
  required: ["name"],
  additionalProperties: false
} as const

describe("Vercel AI SDK (openai provider, Responses API by default)", () => {
  it.live("generates and streams text, calls a tool, and generates an object", () =>
    Effect.gen(function* () {
      const { simulator, spans, url } = yield* gateway
      const openai = createOpenAI({ baseURL: `${url}/v1`, apiKey: "sk-test" })
      const model = openai("gpt-4o-mini")
      const text = yield* promise(() => generateText({ model, prompt: "Hi" }))
      expect(text.text).toBe("[gpt] lorem ipsum")
      expect(simulator("gpt").requests().at(-1)?.path).toBe("/v1/chat/completions")
      const streamed = yield* promise(async () => {
        const result = streamText({ model, prompt: "Hi" })
        let out = ""
        for await (const delta of result.textStream) out += delta
        return out
      })
      expect(streamed).toBe("[gpt] lorem ipsum")
      const called = yield* promise(() =>
        generateText({
          model,
          prompt: "Weather in Paris?",
          tools: {
            get_weather: tool({
              description: "Weather of a city",
              inputSchema: jsonSchema<{ city?: string }>({ type: "object", properties: { city: { type: "string" } } })
            })
          }
        })
      )
      expect(called.toolCalls.map((c) => c.toolName)).toEqual(["get_weather"])
      const object = yield* promise(() =>
        generateObject({ model, prompt: "A city", schema: jsonSchema<{ name: string }>(citySchema) })
      )
      expect(typeof object.object.name).toBe("string")
      expect([...servedPaths(spans())]).toEqual(["/v1/responses"])
    }).pipe(Effect.scoped)
  )
})

describe("LangChain ChatOpenAI with useResponsesApi", () => {
  it.live("invokes and streams, binds a tool, and answers with structured output", () =>
    Effect.gen(function* () {
      const { spans, url } = yield* gateway
      const chat = new ChatOpenAI({
        model: "gpt-4o-mini",
        apiKey: "sk-test",
        configuration: { baseURL: `${url}/v1` },
        useResponsesApi: true,
        maxRetries: 0
      })
      const answer = yield* promise(() => chat.invoke("Hi"))
      expect(answer.text).toBe("[gpt] lorem ipsum")
      const streamed = yield* promise(async () => {
        let out = ""
        for await (const chunk of await chat.stream("Hi")) out += chunk.text
        return out
      })
      expect(streamed).toBe("[gpt] lorem ipsum")
      const withTool = chat.bindTools([
        {
          type: "function",
          function: {
            name: "get_weather",
            description: "Weather of a city",
            parameters: { type: "object", properties: {} }
          }
        }
      ])
      const called = yield* promise(() => withTool.invoke("Weather in Paris?"))
      expect(called.tool_calls?.map((c) => c.name)).toEqual(["get_weather"])
      const structured = chat.withStructuredOutput(citySchema, { name: "city", method: "jsonSchema" })
      const city = yield* promise(() => structured.invoke("A city"))
      expect(typeof (city as { name: unknown }).name).toBe("string")
      expect([...servedPaths(spans())]).toEqual(["/v1/responses"])
    }).pipe(Effect.scoped)
  )
})
