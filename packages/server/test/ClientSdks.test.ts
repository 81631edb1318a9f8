/**
 * The clients that call `/v1/responses` by default, unchanged against the gateway: the Vercel AI
 * SDK's `openai` provider and LangChain's `ChatOpenAI` with `useResponsesApi` — text, streams, a
 * tool call and structured output, served by a simulated upstream.
 */
import { createOpenAI } from "@ai-sdk/openai"
import { describe, expect, it } from "@effect/vitest"
import { ChatOpenAI } from "@langchain/openai"
import { Simulator } from "@sluice/providers"
import type { LanguageModel } from "ai"
import { generateObject, generateText, jsonSchema, stepCountIs, streamText, tool } from "ai"
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

const weatherInput = jsonSchema<{ city: string }>({
  type: "object",
  properties: { city: { type: "string" } },
  required: ["city"],
  additionalProperties: false
})

/**
 * An agent's tools: `get_weather` answers "18C" and records the input each call received. The loop
 * stops after 5 steps at most: a model that called the tool forever would end there, not with text.
 */
const agent = () => {
  const inputs: Array<{ city: string }> = []
  const tools = {
    get_weather: tool({
      description: "Weather of a city",
      inputSchema: weatherInput,
      execute: async (input: { city: string }) => {
        inputs.push(input)
        return "18C"
      }
    })
  }
  return { inputs, tools, stopWhen: stepCountIs(5) }
}

/** One agent loop through `generateText`: the steps' finish reasons, the tool's inputs, the final text. */
const generatedLoop = (model: LanguageModel) =>
  Effect.promise(async () => {
    const { inputs, stopWhen, tools } = agent()
    const result = await generateText({ model, prompt: "Weather in Paris?", tools, stopWhen })
    return { finishes: result.steps.map((s) => s.finishReason), inputs, text: result.text }
  })

describe("Vercel AI SDK agent loop through /v1/responses", () => {
  it.live("calls the tool, sends its result back and ends with text", () =>
    Effect.gen(function* () {
      const { simulator, spans, url } = yield* gateway
      const model = createOpenAI({ baseURL: `${url}/v1`, apiKey: "sk-test" })("gpt-4o-mini")
      const loop = yield* generatedLoop(model)
      expect(loop.finishes).toEqual(["tool-calls", "stop"])
      // The simulated model fills the tool's required `city` with its name.
      expect(loop.inputs).toEqual([{ city: "gpt" }])
      expect(loop.text).toBe("[gpt] lorem ipsum")
      const last = simulator("gpt").requests().at(-1)?.body as { messages: ReadonlyArray<{ role: string }> }
      expect(last.messages.at(-1)?.role).toBe("tool")
      expect([...servedPaths(spans())]).toEqual(["/v1/responses"])
    }).pipe(Effect.scoped)
  )

  it.live("streams the tool call, runs it and streams the answer to its result", () =>
    Effect.gen(function* () {
      const { url } = yield* gateway
      const model = createOpenAI({ baseURL: `${url}/v1`, apiKey: "sk-test" })("gpt-4o-mini")
      const { inputs, stopWhen, tools } = agent()
      const parts = yield* promise(async () => {
        const result = streamText({ model, prompt: "Weather in Paris?", tools, stopWhen })
        const seen: Array<{ type: string; toolName?: string; input?: unknown; text?: string }> = []
        for await (const part of result.fullStream) {
          if (part.type === "tool-call") seen.push({ type: part.type, toolName: part.toolName, input: part.input })
          if (part.type === "tool-result") seen.push({ type: part.type, toolName: part.toolName })
          if (part.type === "text-delta") seen.push({ type: part.type, text: part.text })
        }
        return seen
      })
      expect(parts.filter((p) => p.type !== "text-delta")).toEqual([
        { type: "tool-call", toolName: "get_weather", input: { city: "gpt" } },
        { type: "tool-result", toolName: "get_weather" }
      ])
      expect(inputs).toEqual([{ city: "gpt" }])
      expect(parts.map((p) => p.text ?? "").join("")).toBe("[gpt] lorem ipsum")
    }).pipe(Effect.scoped)
  )

  it.live("completes the same loop against an Anthropic upstream, translated both ways", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "anthropic", name: "claude", completionTokens: 3 })
      const { spans, url } = yield* startGateway(
        simulatedConfig(
          [{ id: "claude", provider: "anthropic", baseUrl: `${sim.url}/v1`, model: "claude-sonnet-4-5" }],
          [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["claude"] }]
        )
      )
      const model = createOpenAI({ baseURL: `${url}/v1`, apiKey: "sk-test" })("gpt-4o-mini")
      const loop = yield* generatedLoop(model)
      expect(loop.finishes).toEqual(["tool-calls", "stop"])
      expect(loop.inputs).toEqual([{ city: "claude" }])
      expect(loop.text).toBe("[claude] lorem ipsum")
      expect(sim.requests().map((r) => r.path)).toEqual(["/v1/messages", "/v1/messages"])
      expect([...servedPaths(spans())]).toEqual(["/v1/responses"])
    }).pipe(Effect.scoped)
  )
  it.live("completes the same loop against a Gemini 3 upstream, its thought signature returned in the call_id", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "gemini", name: "gemini", completionTokens: 3 })
      const { url } = yield* startGateway(
        simulatedConfig(
          [{ id: "gemini", provider: "gemini", baseUrl: `${sim.url}/v1beta`, model: "gemini-3-pro-preview" }],
          [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["gemini"] }]
        )
      )
      const model = createOpenAI({ baseURL: `${url}/v1`, apiKey: "sk-test" })("gpt-4o-mini")
      const loop = yield* generatedLoop(model)
      // The simulated Gemini 3 refuses the second step unless the call comes back with its signature.
      expect(loop.finishes).toEqual(["tool-calls", "stop"])
      expect(loop.inputs).toEqual([{ city: "gemini" }])
      expect(loop.text).toBe("[gemini] lorem ipsum")
      const replayed = sim.requests().at(-1)?.body as { contents: ReadonlyArray<{ parts: ReadonlyArray<unknown> }> }
      expect(replayed.contents[1]?.parts[0]).toMatchObject({
        thoughtSignature: Simulator.thoughtSignature("get_weather")
      })
    }).pipe(Effect.scoped)
  )
})

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
