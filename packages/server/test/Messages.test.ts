/**
 * `POST /v1/messages` driven with the official `@anthropic-ai/sdk`, through pools of OpenAI-,
 * Anthropic-, Gemini- and Ollama-shaped simulated upstreams.
 */
import Anthropic, { APIError, BadRequestError, NotFoundError } from "@anthropic-ai/sdk"
import { describe, expect, it } from "@effect/vitest"
import { Simulator } from "@sluice/providers"
import { Config } from "@sluice/core"
import { Effect, Schema } from "effect"
import { simulatedConfig, startGateway } from "./harness.js"

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

/** The error a request fails with (undefined when it succeeds). */
const failure = (f: () => Promise<unknown>) =>
  Effect.promise(() =>
    f().then(
      () => undefined,
      (error: unknown) => error
    )
  )

/** The base64 of just enough of a PNG for its header to give its size. */
const png = (width: number, height: number): string => {
  const header = Buffer.alloc(64)
  header.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 0)
  header.writeUInt32BE(13, 8)
  header.write("IHDR", 12, "ascii")
  header.writeUInt32BE(width, 16)
  header.writeUInt32BE(height, 20)
  return header.toString("base64")
}

/** A gateway serving `claude-sonnet-4-5` from `upstreams` (priority order), and an Anthropic SDK client for it. */
const gatewayWith = (upstreams: ReadonlyArray<Record<string, unknown>>) =>
  Effect.map(
    startGateway(
      simulatedConfig(upstreams, [
        {
          id: "claude",
          models: ["claude-sonnet-4-5"],
          strategy: "priority",
          upstreams: upstreams.map((u) => u["id"])
        }
      ])
    ),
    (gateway) => ({
      gateway,
      client: new Anthropic({ baseURL: gateway.url, apiKey: "sk-client", maxRetries: 0, timeout: 10_000 })
    })
  )

const anthropicUpstream = (sim: Simulator.Simulator) => ({
  id: "real-claude",
  provider: "anthropic",
  baseUrl: `${sim.url}/v1`
})

const weather: Anthropic.Tool = {
  name: "get_weather",
  description: "Weather of a city",
  input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] }
}

describe("POST /v1/messages with the Anthropic SDK", () => {
  it.live("answers a message from an OpenAI-shaped upstream, and from an Anthropic one", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "anthropic", name: "claude", completionTokens: 3 })
      const { client, gateway } = yield* gatewayWith([
        { id: "gpt", simulate: { completionTokens: 3 } },
        anthropicUpstream(sim)
      ])
      const { data, response } = yield* promise(() =>
        client.messages
          .create({
            model: "claude-sonnet-4-5",
            max_tokens: 100,
            system: "Be brief.",
            messages: [{ role: "user", content: "Hi" }]
          })
          .withResponse()
      )
      expect(response.headers.get("x-sluice-upstream")).toBe("gpt")
      expect(data).toMatchObject({
        type: "message",
        role: "assistant",
        model: "claude-sonnet-4-5",
        content: [{ type: "text", text: "[gpt] lorem ipsum" }],
        stop_reason: "end_turn",
        usage: { output_tokens: 3 }
      })
      // The OpenAI-shaped upstream got a chat request with the system prompt as its first message.
      expect(gateway.simulator("gpt").requests().at(-1)?.body).toMatchObject({
        model: "claude-sonnet-4-5",
        max_tokens: 100,
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "Hi" }
        ]
      })
      gateway.simulator("gpt").setOptions({ failureRate: 1 })
      const fromClaude = yield* promise(() =>
        client.messages.create({
          model: "claude-sonnet-4-5",
          max_tokens: 2,
          messages: [{ role: "user", content: "Hi" }]
        })
      )
      expect(fromClaude.content).toEqual([{ type: "text", text: "[claude] lorem" }])
      expect(fromClaude.stop_reason).toBe("max_tokens")
    }).pipe(Effect.scoped)
  )

  it.live("counts a message whose upstreams all failed in the metrics, as any routed request", () =>
    Effect.gen(function* () {
      const { client, gateway } = yield* gatewayWith([{ id: "down", simulate: { failureRate: 1 } }])
      const failed = yield* promise(() =>
        client.messages
          .create({ model: "claude-sonnet-4-5", max_tokens: 10, messages: [{ role: "user", content: "Hi" }] })
          .then(
            () => undefined,
            (error: unknown) => error
          )
      )
      expect(failed).toBeInstanceOf(Anthropic.APIError)
      const metrics = yield* promise(() => fetch(`${gateway.url}/metrics`).then((r) => r.text()))
      expect(metrics).toContain('sluice_requests_total{pool="claude",upstream="down",outcome="error"} 1')
    }).pipe(Effect.scoped)
  )

  it.live("streams a message the SDK accumulates, with events in Anthropic's order", () =>
    Effect.gen(function* () {
      const { client } = yield* gatewayWith([{ id: "gpt", simulate: { completionTokens: 4 } }])
      const { events, final, text } = yield* promise(async () => {
        const stream = client.messages.stream({
          model: "claude-sonnet-4-5",
          max_tokens: 100,
          messages: [{ role: "user", content: "Hi" }]
        })
        const events: Array<string> = []
        let text = ""
        stream.on("streamEvent", (event) => events.push(event.type))
        stream.on("text", (delta) => (text += delta))
        const final = await stream.finalMessage()
        return { events, final, text }
      })
      expect(text).toBe("[gpt] lorem ipsum dolor")
      expect(final).toMatchObject({
        role: "assistant",
        content: [{ type: "text", text: "[gpt] lorem ipsum dolor" }],
        stop_reason: "end_turn",
        usage: { output_tokens: 4 }
      })
      expect(events[0]).toBe("message_start")
      expect(events[1]).toBe("content_block_start")
      expect(events.slice(-3)).toEqual(["content_block_stop", "message_delta", "message_stop"])
    }).pipe(Effect.scoped)
  )

  it.live("runs a tool round trip, streamed and not, against OpenAI- and Anthropic-shaped upstreams", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "anthropic", name: "claude", completionTokens: 2 })
      for (const upstream of [{ id: "gpt", simulate: { completionTokens: 2 } }, anthropicUpstream(sim)]) {
        const { client } = yield* gatewayWith([upstream])
        const question: Anthropic.MessageParam = { role: "user", content: "Weather in Paris?" }
        const first = yield* promise(() =>
          client.messages.create({
            model: "claude-sonnet-4-5",
            max_tokens: 100,
            tools: [weather],
            messages: [question]
          })
        )
        expect(first.stop_reason).toBe("tool_use")
        const use = first.content.find((b): b is Anthropic.ToolUseBlock => b.type === "tool_use")
        expect(use).toMatchObject({ type: "tool_use", name: "get_weather", input: {} })
        const streamed = yield* promise(() =>
          client.messages
            .stream({ model: "claude-sonnet-4-5", max_tokens: 100, tools: [weather], messages: [question] })
            .finalMessage()
        )
        expect(streamed.stop_reason).toBe("tool_use")
        expect(streamed.content.find((b) => b.type === "tool_use")).toMatchObject({ name: "get_weather", input: {} })
        const second = yield* promise(() =>
          client.messages.create({
            model: "claude-sonnet-4-5",
            max_tokens: 100,
            tools: [weather],
            messages: [
              question,
              { role: "assistant", content: first.content },
              { role: "user", content: [{ type: "tool_result", tool_use_id: use!.id, content: "18C" }] }
            ]
          })
        )
        expect(second.stop_reason).toBe("end_turn")
        expect(second.content[0]).toMatchObject({ type: "text", text: expect.stringContaining("lorem") })
      }
    }).pipe(Effect.scoped)
  )

  it.live(
    "serves a message, a stream and a tool round trip from a native Ollama upstream: system prompt, num_predict, object arguments and tool_name",
    () =>
      Effect.gen(function* () {
        const { client, gateway } = yield* gatewayWith([
          { id: "local", simulate: { dialect: "ollama", completionTokens: 3 } }
        ])
        const sim = gateway.simulator("local")
        const whole = yield* promise(() =>
          client.messages.create({
            model: "claude-sonnet-4-5",
            max_tokens: 100,
            system: "Be brief.",
            messages: [{ role: "user", content: "Hi" }]
          })
        )
        expect(whole).toMatchObject({
          type: "message",
          role: "assistant",
          model: "claude-sonnet-4-5",
          content: [{ type: "text", text: "[local] lorem ipsum" }],
          stop_reason: "end_turn",
          usage: { output_tokens: 3 }
        })
        expect(whole.usage.input_tokens).toBeGreaterThan(0)
        expect(sim.requests().at(-1)).toMatchObject({
          path: "/api/chat",
          body: {
            stream: false,
            messages: [
              { role: "system", content: "Be brief." },
              { role: "user", content: "Hi" }
            ],
            options: { num_predict: 100 }
          }
        })
        const { events, final, text } = yield* promise(async () => {
          const stream = client.messages.stream({
            model: "claude-sonnet-4-5",
            max_tokens: 2,
            messages: [{ role: "user", content: "Hi" }]
          })
          const events: Array<string> = []
          let text = ""
          stream.on("streamEvent", (event) => events.push(event.type))
          stream.on("text", (delta) => (text += delta))
          const final = await stream.finalMessage()
          return { events, final, text }
        })
        expect(text).toBe("[local] lorem")
        expect(final).toMatchObject({ content: [{ type: "text", text: "[local] lorem" }], stop_reason: "max_tokens" })
        expect(events[0]).toBe("message_start")
        expect(events.slice(-3)).toEqual(["content_block_stop", "message_delta", "message_stop"])
        expect(sim.requests().at(-1)?.body).toMatchObject({ stream: true, options: { num_predict: 2 } })
        const question: Anthropic.MessageParam = { role: "user", content: "Weather in Paris?" }
        const first = yield* promise(() =>
          client.messages.create({
            model: "claude-sonnet-4-5",
            max_tokens: 100,
            tools: [weather],
            messages: [question]
          })
        )
        expect(first.stop_reason).toBe("tool_use")
        const use = first.content.find((b): b is Anthropic.ToolUseBlock => b.type === "tool_use")
        expect(use).toMatchObject({ type: "tool_use", name: "get_weather", input: { city: "local" } })
        const second = yield* promise(() =>
          client.messages.create({
            model: "claude-sonnet-4-5",
            max_tokens: 100,
            tools: [weather],
            messages: [
              question,
              { role: "assistant", content: first.content },
              { role: "user", content: [{ type: "tool_result", tool_use_id: use!.id, content: "18C" }] }
            ]
          })
        )
        expect(second.stop_reason).toBe("end_turn")
        expect(second.content).toEqual([{ type: "text", text: "[local] lorem ipsum" }])
        // Ollama was sent the call with object arguments, and the result named after the tool.
        expect(sim.requests().at(-1)?.body).toMatchObject({
          messages: [
            { role: "user", content: "Weather in Paris?" },
            { role: "assistant", tool_calls: [{ function: { name: "get_weather", arguments: { city: "local" } } }] },
            { role: "tool", content: "18C", tool_name: "get_weather" }
          ]
        })
      }).pipe(Effect.scoped)
  )

  it.live(
    "carries a Gemini 3 thought signature through a tool loop in the tool_use id the SDK replays, whole and streamed, back into Gemini's functionCall part",
    () =>
      Effect.gen(function* () {
        const { client, gateway } = yield* gatewayWith([
          { id: "gemini", simulate: { dialect: "gemini", completionTokens: 2 } }
        ])
        const sim = gateway.simulator("gemini")
        const question: Anthropic.MessageParam = { role: "user", content: "Weather in Paris?" }
        const ask = { model: "claude-sonnet-4-5", max_tokens: 100, tools: [weather] }
        const first = yield* promise(() => client.messages.create({ ...ask, messages: [question] }))
        const streamed = yield* promise(() => client.messages.stream({ ...ask, messages: [question] }).finalMessage())
        for (const answer of [first, streamed]) {
          const use = answer.content.find((b): b is Anthropic.ToolUseBlock => b.type === "tool_use")!
          expect(use).toMatchObject({ name: "get_weather", input: { city: "gemini" } })
          // The id keeps to the characters Anthropic allows in tool ids, signature and all.
          expect(use.id).toMatch(/^[a-zA-Z0-9_-]+$/)
          const second = yield* promise(() =>
            client.messages.create({
              ...ask,
              messages: [
                question,
                { role: "assistant", content: answer.content },
                { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "18C" }] }
              ]
            })
          )
          // The simulated Gemini 3 refuses a call whose signature is missing or changed: this answer proves it came back.
          expect(second.content[0]).toMatchObject({ type: "text", text: "[gemini] lorem" })
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
        // The same history failing over to an OpenAI-shaped upstream: it sees the call's own id, not the folded one.
        const use = first.content.find((b): b is Anthropic.ToolUseBlock => b.type === "tool_use")!
        const other = yield* gatewayWith([{ id: "gpt", simulate: { completionTokens: 2 } }])
        const answer = yield* promise(() =>
          other.client.messages.create({
            ...ask,
            messages: [
              question,
              { role: "assistant", content: first.content },
              { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "18C" }] }
            ]
          })
        )
        expect(answer.stop_reason).toBe("end_turn")
        expect(other.gateway.simulator("gpt").requests().at(-1)?.body).toMatchObject({
          messages: [
            { role: "user" },
            { role: "assistant", tool_calls: [{ id: "call_0", function: { name: "get_weather" } }] },
            { role: "tool", tool_call_id: "call_0", content: "18C" }
          ]
        })
      }).pipe(Effect.scoped)
  )

  it.live(
    "sends a base64 and a URL image to an Anthropic-shaped upstream as image blocks, and to an OpenAI-shaped one as image_url parts",
    () =>
      Effect.gen(function* () {
        const data = png(64, 48)
        const url = "https://example.com/cat.jpg"
        const content: Array<Anthropic.ContentBlockParam> = [
          { type: "text", text: "What is in these?" },
          { type: "image", source: { type: "base64", media_type: "image/png", data } },
          { type: "image", source: { type: "url", url } }
        ]
        const ask = { model: "claude-sonnet-4-5", max_tokens: 100, messages: [{ role: "user" as const, content }] }
        const claude = yield* gatewayWith([{ id: "claude", simulate: { dialect: "anthropic", completionTokens: 2 } }])
        const fromClaude = yield* promise(() => claude.client.messages.create(ask))
        expect(fromClaude.content).toEqual([{ type: "text", text: "[claude] lorem" }])
        // The image blocks reach Anthropic as the client wrote them (the simulator refuses malformed ones, as below).
        expect(claude.gateway.simulator("claude").requests().at(-1)?.body).toMatchObject({
          messages: [{ role: "user", content }]
        })
        const bitmap = yield* failure(() =>
          claude.client.messages.create({
            ...ask,
            messages: [
              { role: "user", content: [{ type: "image", source: { type: "base64", media_type: "image/bmp", data } }] }
            ]
          } as unknown as Anthropic.MessageCreateParamsNonStreaming)
        )
        expect(bitmap).toBeInstanceOf(BadRequestError)
        expect((bitmap as APIError).message).toContain("media_type")
        const gpt = yield* gatewayWith([{ id: "gpt", simulate: { completionTokens: 2 } }])
        const streamed = yield* promise(() => gpt.client.messages.stream(ask).finalMessage())
        expect(streamed.content).toEqual([{ type: "text", text: "[gpt] lorem" }])
        expect(gpt.gateway.simulator("gpt").requests().at(-1)?.body).toMatchObject({
          messages: [
            {
              role: "user",
              content: [
                { type: "text", text: "What is in these?" },
                { type: "image_url", image_url: { url: `data:image/png;base64,${data}` } },
                { type: "image_url", image_url: { url } }
              ]
            }
          ]
        })
        // Both were metered as images: the OpenAI simulator counts 85 prompt tokens per image part.
        expect(streamed.usage.input_tokens).toBeGreaterThan(170)
      }).pipe(Effect.scoped)
  )

  it.live("counts tokens, and answers errors in Anthropic's envelope the SDK raises as its own", () =>
    Effect.gen(function* () {
      const { client } = yield* gatewayWith([{ id: "gpt" }])
      const counted = yield* promise(() =>
        client.messages.countTokens({
          model: "claude-sonnet-4-5",
          system: "Be brief.",
          messages: [{ role: "user", content: "How many tokens is this?" }]
        })
      )
      expect(counted.input_tokens).toBeGreaterThan(5)
      expect(counted.input_tokens).toBeLessThan(40)
      const unknown = yield* failure(() =>
        client.messages.create({ model: "claude-unknown", max_tokens: 10, messages: [{ role: "user", content: "Hi" }] })
      )
      expect(unknown).toBeInstanceOf(NotFoundError)
      expect((unknown as APIError).error as unknown).toMatchObject({
        type: "error",
        error: { type: "not_found_error", message: expect.stringContaining("claude-unknown") }
      })
      const invalid = yield* failure(() =>
        client.messages.create({
          model: "claude-sonnet-4-5",
          max_tokens: 0,
          messages: [{ role: "user", content: "Hi" }]
        })
      )
      expect(invalid).toBeInstanceOf(BadRequestError)
      expect((invalid as APIError).error as unknown).toMatchObject({
        error: { type: "invalid_request_error", message: expect.stringContaining("max_tokens") }
      })
    }).pipe(Effect.scoped)
  )

  it.live(
    "counts tokens by the rules of the pool's provider: images and tools as Claude, Gemini or OpenAI meter them",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          simulatedConfig(
            [
              { id: "claude", simulate: { dialect: "anthropic" } },
              { id: "gemini", simulate: { dialect: "gemini" } },
              { id: "gpt" }
            ],
            [
              { id: "claude", models: ["claude-sonnet-4-5"], upstreams: ["claude"] },
              { id: "gemini", models: ["gemini-2.5-flash"], upstreams: ["gemini"] },
              { id: "gpt", models: ["gpt-4o"], upstreams: ["gpt"] },
              // A name that says nothing of the provider: the pool's first upstream decides.
              { id: "smart", models: ["smart"], upstreams: ["gemini", "gpt"] }
            ]
          )
        )
        const client = new Anthropic({ baseURL: gateway.url, apiKey: "sk-client", maxRetries: 0, timeout: 10_000 })
        const image: Anthropic.ImageBlockParam = {
          type: "image",
          source: { type: "base64", media_type: "image/png", data: png(800, 600) }
        }
        const count = (model: string, withImage: boolean, tools?: Array<Anthropic.Tool>) =>
          promise(() =>
            client.messages
              .countTokens({
                model,
                messages: [
                  { role: "user", content: [{ type: "text", text: "What is this?" }, ...(withImage ? [image] : [])] }
                ],
                ...(tools === undefined ? {} : { tools })
              })
              .then((c) => c.input_tokens)
          )
        const imageTokens = (model: string) =>
          Effect.map(Effect.zip(count(model, true), count(model, false)), ([a, b]) => a - b)
        // Anthropic: width × height / 750. Gemini: 258 per 768 px tile. OpenAI: 85 + 170 per 512 px tile of the
        // image scaled to 768 px on its short side (1024 × 768: 4 tiles).
        expect(yield* imageTokens("claude-sonnet-4-5")).toBe(Math.ceil((800 * 600) / 750))
        expect(yield* imageTokens("gemini-2.5-flash")).toBe(258 * 2)
        expect(yield* imageTokens("gpt-4o")).toBe(85 + 170 * 4)
        expect(yield* imageTokens("smart")).toBe(258 * 2)
        for (const model of ["claude-sonnet-4-5", "gemini-2.5-flash", "gpt-4o"]) {
          expect(yield* count(model, false, [weather])).toBeGreaterThan(yield* count(model, false))
        }
        const unknown = yield* failure(() =>
          client.messages.countTokens({ model: "claude-unknown", messages: [{ role: "user", content: "Hi" }] })
        )
        expect(unknown).toBeInstanceOf(NotFoundError)
      }).pipe(Effect.scoped)
  )

  it.live("ends a stream that breaks off after its first content with an error event the SDK raises", () =>
    Effect.gen(function* () {
      const { client } = yield* gatewayWith([{ id: "gpt", simulate: { completionTokens: 8, midStreamCutRate: 1 } }])
      const { error, text } = yield* promise(async () => {
        const stream = client.messages.stream({
          model: "claude-sonnet-4-5",
          max_tokens: 100,
          messages: [{ role: "user", content: "Hi" }]
        })
        let text = ""
        stream.on("text", (delta) => (text += delta))
        const error = await stream.finalMessage().then(
          () => undefined,
          (e: unknown) => e
        )
        return { error, text }
      })
      expect(text.startsWith("[gpt] lorem")).toBe(true)
      expect(error).toBeInstanceOf(APIError)
      expect(String((error as APIError).message)).toContain("gpt")
    }).pipe(Effect.scoped)
  )

  it.live("takes the SDK's x-api-key as the client key: a configured key is served, an unknown one refused", () =>
    Effect.gen(function* () {
      const config = simulatedConfig(
        [{ id: "gpt", simulate: { completionTokens: 2 } }],
        [{ id: "claude", models: ["claude-sonnet-4-5"], upstreams: ["gpt"] }]
      )
      const key = "sk-team-0123456789abcdef"
      const server = Schema.decodeUnknownSync(Config.ServerConfig)({
        host: "127.0.0.1",
        port: 0,
        auth: { keys: [{ name: "team", keyEnv: "SLUICE_TEST_MESSAGES_KEY" }] }
      })
      const gateway = yield* startGateway({ ...config, server }, { env: { SLUICE_TEST_MESSAGES_KEY: key } })
      const clientWith = (apiKey: string) =>
        new Anthropic({ baseURL: gateway.url, apiKey, maxRetries: 0, timeout: 10_000 })
      const ask = { model: "claude-sonnet-4-5", max_tokens: 10, messages: [{ role: "user" as const, content: "Hi" }] }
      const served = yield* promise(() => clientWith(key).messages.create(ask))
      expect(served.content).toEqual([{ type: "text", text: "[gpt] lorem" }])
      const refused = yield* failure(() => clientWith("sk-nobody-0123456789").messages.create(ask))
      expect((refused as APIError).status).toBe(401)
    }).pipe(Effect.scoped)
  )
})
