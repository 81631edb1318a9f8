import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import OpenAI from "openai"
import * as Simulator from "../src/Simulator.js"

const client = (sim: Simulator.Simulator, timeout?: number): OpenAI =>
  new OpenAI({ baseURL: `${sim.url}/v1`, apiKey: "test", maxRetries: 0, ...(timeout === undefined ? {} : { timeout }) })

const call = <A>(f: () => PromiseLike<A>): Effect.Effect<A> => Effect.promise(() => Promise.resolve(f()))

const callError = (f: () => PromiseLike<unknown>): Effect.Effect<unknown, unknown> =>
  Effect.flip(Effect.tryPromise({ try: () => Promise.resolve(f()), catch: (error) => error }))

const user = (content: string) => [{ role: "user" as const, content }]

const tools = [
  { type: "function" as const, function: { name: "get_weather", parameters: { type: "object", properties: {} } } },
  { type: "function" as const, function: { name: "get_time", parameters: { type: "object", properties: {} } } }
]

/** Reads an SSE response body whole. */
const rawStream = (sim: Simulator.Simulator, body: unknown) =>
  call(async () => {
    const response = await fetch(`${sim.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body)
    })
    return { response, text: await response.text() }
  })

const events = (text: string): ReadonlyArray<string> =>
  text
    .split("\n\n")
    .filter((e) => e !== "")
    .map((e) => e.replace(/^data: /, ""))

const isJson = (data: string): boolean => {
  try {
    JSON.parse(data)
    return true
  } catch {
    return false
  }
}

describe("Simulator", () => {
  describe("legacy completions and the Responses API", () => {
    it.scopedLive(
      "answers a legacy completion whole and streamed, capped at max_tokens, and 400 without a prompt",
      () =>
        Effect.gen(function* () {
          const sim = yield* Simulator.start({ name: "a", completionTokens: 3 })
          const whole = yield* call(() => client(sim).completions.create({ model: "instruct", prompt: "hello world!" }))
          expect(whole).toMatchObject({
            object: "text_completion",
            model: "instruct",
            choices: [{ text: "[a] lorem ipsum", index: 0, finish_reason: "stop" }],
            usage: { prompt_tokens: 6, completion_tokens: 3, total_tokens: 9 }
          })
          const capped = yield* call(() => client(sim).completions.create({ model: "m", prompt: ["x"], max_tokens: 2 }))
          expect(capped.choices[0]).toMatchObject({ text: "[a] lorem", finish_reason: "length" })
          const streamed = yield* call(async () => {
            let text = ""
            let usage: unknown
            for await (const chunk of await client(sim).completions.create({ model: "m", prompt: "x", stream: true })) {
              text += chunk.choices[0]?.text ?? ""
              usage = chunk.usage ?? usage
            }
            return { text, usage }
          })
          expect(streamed).toEqual({
            text: "[a] lorem ipsum",
            usage: { prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 }
          })
          const error = yield* callError(() => client(sim).completions.create({ model: "m" } as never))
          expect(error).toBeInstanceOf(OpenAI.BadRequestError)
        })
    )

    it.scopedLive(
      "answers responses: text, a function call until its output comes back, JSON for a schema, and events",
      () =>
        Effect.gen(function* () {
          const sim = yield* Simulator.start({ name: "a", completionTokens: 2 })
          const responses = client(sim).responses
          const text = yield* call(() => responses.create({ model: "m", input: "Hi", previous_response_id: "resp_0" }))
          expect(text).toMatchObject({ object: "response", status: "completed", output_text: "[a] lorem" })
          const tool = { type: "function" as const, name: "get_weather", parameters: {}, strict: false }
          const first = yield* call(() => responses.create({ model: "m", input: "Weather?", tools: [tool] }))
          expect(first.output[0]).toMatchObject({ type: "function_call", name: "get_weather", arguments: "{}" })
          const second = yield* call(() =>
            responses.create({
              model: "m",
              tools: [tool],
              input: [{ type: "function_call_output", call_id: "call_1", output: "18C" }]
            })
          )
          expect(second.output_text).toBe("[a] lorem")
          const schema = { type: "object", properties: { city: { type: "string" } }, required: ["city"] }
          const json = yield* call(() =>
            responses.create({
              model: "m",
              input: "City?",
              text: { format: { type: "json_schema", name: "c", schema } }
            })
          )
          expect(JSON.parse(json.output_text)).toEqual({ city: expect.any(String) })
          const final = yield* call(() => responses.stream({ model: "m", input: "Hi" }).finalResponse())
          expect(final.output_text).toBe("[a] lorem")
          expect(final.usage?.output_tokens).toBe(2)
        })
    )
  })

  describe("chat completions", () => {
    it.scopedLive("answers with exactly completionTokens deterministic words and estimated usage", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ name: "a", completionTokens: 5 })
        // "hello world!" is 12 characters: ceil(12 / 4) + 3 for the message = 6 prompt tokens
        const completion = yield* call(() =>
          client(sim).chat.completions.create({ model: "gpt-4o", messages: user("hello world!") })
        )
        expect(completion.object).toBe("chat.completion")
        expect(completion.id.startsWith("chatcmpl-")).toBe(true)
        expect(completion.model).toBe("gpt-4o")
        expect(completion.choices[0]?.message.content).toBe("[a] lorem ipsum dolor sit")
        expect(completion.choices[0]?.finish_reason).toBe("stop")
        expect(completion.usage).toEqual({ prompt_tokens: 6, completion_tokens: 5, total_tokens: 11 })
      })
    )

    it.scopedLive("caps the completion at max_tokens and reports finish_reason length", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start()
        const completion = yield* call(() =>
          client(sim).chat.completions.create({ model: "m", messages: user("hi"), max_completion_tokens: 2 })
        )
        expect(completion.choices[0]?.message.content).toBe("[sim] lorem")
        expect(completion.choices[0]?.finish_reason).toBe("length")
        expect(completion.usage?.completion_tokens).toBe(2)
      })
    )

    it.scopedLive("streams one chunk per token, then finish_reason, a usage chunk and [DONE]", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ completionTokens: 4 })
        const chunks = yield* call(async () => {
          const stream = await client(sim).chat.completions.create({
            model: "m",
            messages: user("hello world!"),
            stream: true,
            stream_options: { include_usage: true }
          })
          const out = []
          for await (const chunk of stream) out.push(chunk)
          return out
        })
        expect(chunks.every((c) => c.object === "chat.completion.chunk")).toBe(true)
        expect(chunks[0]?.choices[0]?.delta).toEqual({ role: "assistant", content: "" })
        const content = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")
        expect(content).toBe("[sim] lorem ipsum dolor")
        expect(chunks.length).toBe(1 + 4 + 1 + 1)
        expect(chunks[5]?.choices[0]?.finish_reason).toBe("stop")
        const last = chunks[chunks.length - 1]
        expect(last?.choices).toEqual([])
        expect(last?.usage).toEqual({ prompt_tokens: 6, completion_tokens: 4, total_tokens: 10 })

        const { response, text } = yield* rawStream(sim, { model: "m", messages: user("x"), stream: true })
        expect(response.headers.get("content-type")).toContain("text/event-stream")
        expect(text.endsWith("data: [DONE]\n\n")).toBe(true)
        // without include_usage there is no usage chunk
        expect(events(text).length).toBe(1 + 4 + 1 + 1)
      })
    )

    it.scopedLive("calls the first tool, or the one tool_choice names, without streaming", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start()
        const first = yield* call(() =>
          client(sim).chat.completions.create({ model: "m", messages: user("weather?"), tools })
        )
        const message = first.choices[0]?.message
        expect(first.choices[0]?.finish_reason).toBe("tool_calls")
        expect(message?.content).toBeNull()
        expect(message?.tool_calls?.length).toBe(1)
        const call0 = message?.tool_calls?.[0]
        expect(call0?.type === "function" && call0.function).toEqual({ name: "get_weather", arguments: "{}" })

        const named = yield* call(() =>
          client(sim).chat.completions.create({
            model: "m",
            messages: user("time?"),
            tools,
            tool_choice: { type: "function", function: { name: "get_time" } }
          })
        )
        const call1 = named.choices[0]?.message.tool_calls?.[0]
        expect(call1?.type === "function" && call1.function.name).toBe("get_time")

        const none = yield* call(() =>
          client(sim).chat.completions.create({ model: "m", messages: user("hi"), tools, tool_choice: "none" })
        )
        expect(none.choices[0]?.message.tool_calls).toBeUndefined()
        expect(none.choices[0]?.finish_reason).toBe("stop")
      })
    )

    it.scopedLive("streams tool call deltas the SDK accumulates into a named call", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start()
        const completion = yield* call(() =>
          client(sim)
            .chat.completions.stream({ model: "m", messages: user("weather?"), tools })
            .finalChatCompletion()
        )
        expect(completion.choices[0]?.finish_reason).toBe("tool_calls")
        const toolCall = completion.choices[0]?.message.tool_calls?.[0]
        expect(toolCall?.id).toMatch(/^call_/)
        expect(toolCall?.type === "function" && toolCall.function).toEqual({ name: "get_weather", arguments: "{}" })
      })
    )

    it.scopedLive("fills a tool call's arguments to match the tool's parameters, whole, streamed and forced", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ name: "a" })
        const parameters = {
          type: "object",
          properties: {
            city: { type: "string" },
            unit: { type: "string", enum: ["celsius", "fahrenheit"] },
            days: { type: "integer", minimum: 1 }
          },
          required: ["city", "unit", "days"],
          additionalProperties: false
        }
        const weather = [
          { type: "function" as const, function: { name: "get_time", parameters: { type: "object", properties: {} } } },
          { type: "function" as const, function: { name: "get_weather", parameters } }
        ]
        const expected = { city: "a", unit: "celsius", days: 1 }
        const forced = { type: "function" as const, function: { name: "get_weather" } }
        const whole = yield* call(() =>
          client(sim).chat.completions.create({
            model: "m",
            messages: user("weather?"),
            tools: weather,
            tool_choice: forced
          })
        )
        const wholeCall = whole.choices[0]?.message.tool_calls?.[0]
        expect(wholeCall?.type === "function" && JSON.parse(wholeCall.function.arguments)).toEqual(expected)
        const streamed = yield* call(() =>
          client(sim)
            .chat.completions.stream({ model: "m", messages: user("weather?"), tools: weather, tool_choice: forced })
            .finalChatCompletion()
        )
        const streamedCall = streamed.choices[0]?.message.tool_calls?.[0]
        expect(streamedCall?.type === "function" && JSON.parse(streamedCall.function.arguments)).toEqual(expected)
        const unforced = yield* call(() =>
          client(sim).chat.completions.create({ model: "m", messages: user("weather?"), tools: [...weather].reverse() })
        )
        const unforcedCall = unforced.choices[0]?.message.tool_calls?.[0]
        expect(unforcedCall?.type === "function" && JSON.parse(unforcedCall.function.arguments)).toEqual(expected)
        const tool = { type: "function" as const, name: "get_weather", parameters, strict: true }
        const response = yield* call(() =>
          client(sim).responses.create({ model: "m", input: "Weather?", tools: [tool] })
        )
        const item = response.output[0]
        expect(item?.type === "function_call" && JSON.parse(item.arguments)).toEqual(expected)
        const streamedResponse = yield* call(() =>
          client(sim)
            .responses.stream({ model: "m", input: "Weather?", tools: [tool] })
            .finalResponse()
        )
        const streamedItem = streamedResponse.output[0]
        expect(streamedItem?.type === "function_call" && JSON.parse(streamedItem.arguments)).toEqual(expected)
      })
    )

    it.scopedLive("answers JSON mode with a JSON object, whole and streamed", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ name: "up-1" })
        const completion = yield* call(() =>
          client(sim).chat.completions.create({
            model: "m",
            messages: user("json please"),
            response_format: { type: "json_object" }
          })
        )
        const parsed: unknown = JSON.parse(completion.choices[0]?.message.content ?? "")
        expect(parsed).toMatchObject({ simulated: true, upstream: "up-1" })
        expect(completion.usage?.completion_tokens).toBe(16)

        const streamed = yield* call(() =>
          client(sim)
            .chat.completions.stream({
              model: "m",
              messages: user("json please"),
              response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object" } } }
            })
            .finalChatCompletion()
        )
        expect(JSON.parse(streamed.choices[0]?.message.content ?? "")).toEqual(parsed)
      })
    )

    it.scopedLive("answers structured output valid against the requested JSON schema, whole and streamed", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ name: "up-1" })
        const schema = {
          type: "object",
          properties: {
            city: { type: "string" },
            tags: { type: "array", items: { type: "string" }, minItems: 2 },
            kind: { enum: ["capital", "town"] },
            location: { type: "object", properties: { lat: { type: "number" } }, required: ["lat"] }
          },
          required: ["city", "tags", "kind", "location"],
          additionalProperties: false
        }
        const request = {
          model: "m",
          messages: user("a city"),
          response_format: { type: "json_schema" as const, json_schema: { name: "city", schema } }
        }
        const whole = yield* call(() => client(sim).chat.completions.create(request))
        const parsed = JSON.parse(whole.choices[0]?.message.content ?? "") as Record<string, unknown>
        expect(parsed).toEqual({
          city: expect.any(String),
          tags: [expect.any(String), expect.any(String)],
          kind: "capital",
          location: { lat: 1 }
        })
        const streamed = yield* call(() => client(sim).chat.completions.stream(request).finalChatCompletion())
        expect(JSON.parse(streamed.choices[0]?.message.content ?? "")).toEqual(parsed)
      })
    )

    it.scopedLive("answers 400 with OpenAI's error envelope for a malformed body", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start()
        const post = (body: string) =>
          call(async () => {
            const response = await fetch(`${sim.url}/v1/chat/completions`, { method: "POST", body })
            return { status: response.status, body: (await response.json()) as { error: Record<string, unknown> } }
          })
        const notJson = yield* post("{nope")
        expect(notJson.status).toBe(400)
        expect(notJson.body.error["type"]).toBe("invalid_request_error")
        const missing = yield* post(JSON.stringify({ model: "m" }))
        expect(missing.status).toBe(400)
        expect(missing.body.error).toMatchObject({ param: "messages", type: "invalid_request_error" })
        const notArray = yield* post(JSON.stringify({ model: "m", messages: "hi" }))
        expect(notArray.body.error["param"]).toBe("messages")

        const empty = yield* callError(() => client(sim).chat.completions.create({ model: "m", messages: [] }))
        expect(empty).toBeInstanceOf(OpenAI.BadRequestError)
      })
    )
  })

  describe("embeddings and models", () => {
    it.scopedLive("returns deterministic 8-dimension embeddings the SDK decodes from base64", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start()
        const sdk = client(sim)
        const result = yield* call(() =>
          sdk.embeddings.create({ model: "text-embedding-3-small", input: ["alpha", "beta", "alpha"] })
        )
        expect(sim.requests().at(-1)?.body).toMatchObject({ encoding_format: "base64" })
        expect(result.object).toBe("list")
        expect(result.model).toBe("text-embedding-3-small")
        expect(result.data.map((d) => d.index)).toEqual([0, 1, 2])
        const [alpha, beta, alphaAgain] = result.data.map((d) => d.embedding)
        expect(alpha?.length).toBe(8)
        expect(alpha?.every((x) => typeof x === "number" && Number.isFinite(x))).toBe(true)
        expect(alphaAgain).toEqual(alpha)
        expect(beta).not.toEqual(alpha)
        // ceil(5 / 4) + ceil(4 / 4) + ceil(5 / 4)
        expect(result.usage).toEqual({ prompt_tokens: 5, total_tokens: 5 })

        const floats = yield* call(() =>
          sdk.embeddings.create({ model: "e", input: "alpha", encoding_format: "float" })
        )
        expect(floats.data[0]?.embedding).toEqual(alpha)
      })
    )

    it.scopedLive("answers embeddings with the requested dimensions, as unit vectors", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start()
        const result = yield* call(() =>
          client(sim).embeddings.create({
            model: "text-embedding-3-small",
            input: ["alpha", "beta"],
            dimensions: 32,
            encoding_format: "float"
          })
        )
        expect(result.data.map((d) => d.embedding.length)).toEqual([32, 32])
        for (const { embedding } of result.data) {
          expect(Math.hypot(...embedding)).toBeCloseTo(1, 5)
        }
        const base64 = yield* call(() =>
          client(sim).embeddings.create({ model: "text-embedding-3-small", input: "alpha", dimensions: 3 })
        )
        expect(base64.data[0]?.embedding.length).toBe(3)
      })
    )

    it.scopedLive("lists and retrieves the configured models", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ name: "acme", models: ["gpt-4o", "gpt-4o-mini"] })
        const page = yield* call(() => client(sim).models.list())
        expect(page.data.map((m) => [m.id, m.object, m.owned_by])).toEqual([
          ["gpt-4o", "model", "acme"],
          ["gpt-4o-mini", "model", "acme"]
        ])
        const model = yield* call(() => client(sim).models.retrieve("gpt-4o-mini"))
        expect(model.id).toBe("gpt-4o-mini")
        const missing = yield* callError(() => client(sim).models.retrieve("nope"))
        expect(missing).toBeInstanceOf(OpenAI.NotFoundError)
      })
    )

    it.scopedLive("answers /health and 404s unknown paths", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ failureRate: 1, resetRate: 1 })
        const health = yield* call(() => fetch(`${sim.url}/health`))
        expect(health.status).toBe(200)
        expect(yield* call(() => health.json())).toEqual({ status: "ok" })
        const unknown = yield* call(() => fetch(`${sim.url}/v1/nope`))
        expect(unknown.status).toBe(404)
        expect(yield* call(() => unknown.json())).toMatchObject({ error: { type: "invalid_request_error" } })
        expect(sim.stats()).toEqual({ requests: 1, rateLimited: 0, failures: 0 })
      })
    )
  })

  describe("rate limits", () => {
    it.scopedLive("answers 429 with retry-after over rpm, and rate-limit headers on every chat answer", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ rpm: 2 })
        const sdk = client(sim)
        const ok = yield* call(() => sdk.chat.completions.create({ model: "m", messages: user("hi") }).withResponse())
        expect(ok.response.headers.get("x-ratelimit-limit-requests")).toBe("2")
        expect(ok.response.headers.get("x-ratelimit-remaining-requests")).toBe("1")
        expect(ok.response.headers.get("x-ratelimit-reset-requests")).toMatch(/^(\d+(\.\d+)?s|\d+ms|1m0s)$/)
        yield* call(() => sdk.chat.completions.create({ model: "m", messages: user("hi") }))
        const error = yield* callError(() => sdk.chat.completions.create({ model: "m", messages: user("hi") }))
        expect(error).toBeInstanceOf(OpenAI.RateLimitError)
        const limited = error as InstanceType<typeof OpenAI.RateLimitError>
        expect(limited.status).toBe(429)
        expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(59)
        expect(Number(limited.headers.get("retry-after-ms"))).toBeGreaterThan(58_000)
        expect(limited.headers.get("x-ratelimit-remaining-requests")).toBe("0")
        expect(limited.error).toMatchObject({ type: "requests", code: "rate_limit_exceeded" })
        expect(sim.stats()).toEqual({ requests: 3, rateLimited: 1, failures: 0 })

        sim.reset()
        yield* call(() => sdk.chat.completions.create({ model: "m", messages: user("hi") }))
      })
    )

    it.scopedLive("answers 429 of type tokens over tpm, counting prompt estimate and completion", () =>
      Effect.gen(function* () {
        // each request: ceil(2 / 4) + 3 = 4 prompt tokens + 16 completion tokens = 20 tokens
        const sim = yield* Simulator.start({ tpm: 50 })
        const sdk = client(sim)
        const ok = yield* call(() => sdk.chat.completions.create({ model: "m", messages: user("hi") }).withResponse())
        expect(ok.response.headers.get("x-ratelimit-remaining-tokens")).toBe("30")
        yield* call(() => sdk.chat.completions.create({ model: "m", messages: user("hi") }))
        const error = yield* callError(() => sdk.chat.completions.create({ model: "m", messages: user("hi") }))
        expect(error).toBeInstanceOf(OpenAI.RateLimitError)
        expect((error as InstanceType<typeof OpenAI.RateLimitError>).error).toMatchObject({ type: "tokens" })
        // a smaller request still fits
        yield* call(() => sdk.chat.completions.create({ model: "m", messages: user("hi"), max_tokens: 2 }))
      })
    )
  })

  describe("failure modes", () => {
    it.scopedLive("answers failureStatus with a server_error envelope at failureRate 1", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ failureRate: 1 })
        const error = yield* callError(() => client(sim).chat.completions.create({ model: "m", messages: user("hi") }))
        expect(error).toBeInstanceOf(OpenAI.InternalServerError)
        const failed = error as InstanceType<typeof OpenAI.InternalServerError>
        expect(failed.status).toBe(500)
        expect(failed.error).toMatchObject({ message: "simulated upstream failure", type: "server_error" })
        sim.setOptions({ failureStatus: 503 })
        const unavailable = yield* callError(() => client(sim).embeddings.create({ model: "e", input: "x" }))
        expect((unavailable as InstanceType<typeof OpenAI.APIError>).status).toBe(503)
        expect(sim.stats().failures).toBe(2)
      })
    )

    it.scopedLive("cuts a stream after a few content chunks without [DONE] at midStreamCutRate 1", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ midStreamCutRate: 1 })
        const received: Array<string> = []
        const error = yield* callError(async () => {
          const stream = await client(sim).chat.completions.create({ model: "m", messages: user("hi"), stream: true })
          for await (const chunk of stream) received.push(chunk.choices[0]?.delta.content ?? "")
        })
        expect(error).toBeInstanceOf(Error)
        // the role chunk, then 2 or 3 content chunks
        expect(received.length).toBeGreaterThanOrEqual(3)
        expect(received.length).toBeLessThanOrEqual(4)
        expect(received.join("")).toMatch(/^\[sim\] lorem( ipsum)?$/)
        // non-streaming requests are not affected
        yield* call(() => client(sim).chat.completions.create({ model: "m", messages: user("hi") }))
      })
    )

    it.scopedLive(
      "sends one event that is not valid JSON after malformedEventAfter content chunks, then the rest",
      () =>
        Effect.gen(function* () {
          const sim = yield* Simulator.start({ completionTokens: 4, malformedEventRate: 1, malformedEventAfter: 1 })
          const body = { model: "m", messages: user("hi"), stream: true }
          const sent = events((yield* rawStream(sim, body)).text)
          const broken = sent.findIndex((data) => data !== "[DONE]" && !isJson(data))
          // the role chunk, one content chunk, the broken one; then the other 3 words, the finish and [DONE]
          expect(broken).toBe(2)
          expect(sent).toHaveLength(8)
          expect(sent.at(-1)).toBe("[DONE]")
          expect(sim.stats().failures).toBe(1)
          // 0: before any content, right after the role chunk
          sim.setOptions({ malformedEventAfter: 0 })
          const early = events((yield* rawStream(sim, body)).text)
          expect(isJson(early[1]!)).toBe(false)
          expect(JSON.parse(early[0]!).choices[0].delta).toEqual({ role: "assistant", content: "" })
        })
    )

    it.scopedLive("resets the connection at resetRate 1", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ resetRate: 1 })
        const error = yield* callError(() => client(sim).chat.completions.create({ model: "m", messages: user("hi") }))
        expect(error).toBeInstanceOf(OpenAI.APIConnectionError)
        expect(sim.stats()).toEqual({ requests: 1, rateLimited: 0, failures: 1 })
      })
    )

    it.live("stalls until the client times out, and closing the scope destroys stalled sockets promptly", () =>
      Effect.gen(function* () {
        const started = Date.now()
        let pending: Promise<unknown> = Promise.resolve()
        const error = yield* Effect.scoped(
          Effect.gen(function* () {
            const sim = yield* Simulator.start({ stallRate: 1 })
            // a request nobody gives up on: the scope must still close
            pending = fetch(`${sim.url}/v1/chat/completions`, {
              method: "POST",
              body: JSON.stringify({ model: "m", messages: user("hi") })
            }).then(
              () => "answered",
              () => "destroyed"
            )
            return yield* callError(() =>
              client(sim, 200).chat.completions.create({ model: "m", messages: user("hi") })
            )
          })
        )
        expect(error).toBeInstanceOf(OpenAI.APIConnectionTimeoutError)
        expect(yield* call(() => pending)).toBe("destroyed")
        expect(Date.now() - started).toBeLessThan(1000)
      })
    )

    it.scopedLive("rolls the same faults for the same seed", () =>
      Effect.gen(function* () {
        const outcomes = (seed: number) =>
          Effect.gen(function* () {
            const sim = yield* Simulator.start({ failureRate: 0.5, seed })
            const out: Array<boolean> = []
            for (let i = 0; i < 12; i++) {
              const response = yield* call(() =>
                fetch(`${sim.url}/v1/embeddings`, { method: "POST", body: JSON.stringify({ input: "x" }) })
              )
              out.push(response.ok)
            }
            return out
          })
        const first = yield* outcomes(7)
        expect(yield* outcomes(7)).toEqual(first)
        expect(first).toContain(true)
        expect(first).toContain(false)
      })
    )
  })

  describe("run time control", () => {
    it.scopedLive("setOptions changes behaviour, requests() records what was sent, reset() clears it", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start()
        const sdk = client(sim)
        yield* call(() => sdk.chat.completions.create({ model: "m", messages: user("one") }))
        sim.setOptions({ failureRate: 1 })
        const error = yield* callError(() => sdk.chat.completions.create({ model: "m", messages: user("two") }))
        expect(error).toBeInstanceOf(OpenAI.InternalServerError)
        sim.setOptions({ failureRate: 0, name: "b", completionTokens: 2 })
        const completion = yield* call(() => sdk.chat.completions.create({ model: "m", messages: user("three") }))
        expect(completion.choices[0]?.message.content).toBe("[b] lorem")
        expect(sim.options()).toMatchObject({ name: "b", completionTokens: 2, failureRate: 0, latencyMs: 0 })

        const requests = sim.requests()
        expect(requests.length).toBe(3)
        expect(requests[2]).toMatchObject({
          method: "POST",
          path: "/v1/chat/completions",
          body: { model: "m", messages: user("three") }
        })
        expect(requests[2]?.headers["authorization"]).toBe("Bearer test")
        expect(sim.stats()).toEqual({ requests: 3, rateLimited: 0, failures: 1 })
        sim.reset()
        expect(sim.requests()).toEqual([])
        expect(sim.stats()).toEqual({ requests: 0, rateLimited: 0, failures: 0 })
      })
    )

    it.scopedLive("waits latencyMs before answering and paces streams by ttftMs and tokensPerSecond", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ latencyMs: 60, completionTokens: 5 })
        let started = Date.now()
        yield* call(() => client(sim).chat.completions.create({ model: "m", messages: user("hi") }))
        expect(Date.now() - started).toBeGreaterThanOrEqual(55)

        sim.setOptions({ latencyMs: 0, ttftMs: 50, tokensPerSecond: 100 })
        started = Date.now()
        const arrivals = yield* call(async () => {
          const stream = await client(sim).chat.completions.create({ model: "m", messages: user("hi"), stream: true })
          const out: Array<number> = []
          for await (const chunk of stream) if (chunk.choices[0]?.delta.content) out.push(Date.now() - started)
          return out
        })
        expect(arrivals.length).toBe(5)
        expect(arrivals[0]).toBeGreaterThanOrEqual(45)
        // 4 more tokens at 10ms each after the first. Measured from the start, not between arrivals: a
        // busy client may read several chunks at once, but none can come before the simulator sent it.
        expect(arrivals[4]).toBeGreaterThanOrEqual(85)
      })
    )

    it.scopedLive("fails to start with a SimulatorError naming the address in use", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start()
        const error = yield* Effect.flip(Simulator.start({}, { port: sim.port }))
        expect(error._tag).toBe("SimulatorError")
        expect(error.message).toContain(`could not listen on 127.0.0.1:${sim.port}: EADDRINUSE`)
        const invalid = yield* Effect.flip(Simulator.start({ failureRate: 2 }))
        expect(invalid.message).toContain("failureRate")
      })
    )
  })

  describe("Gemini and Ollama dialects", () => {
    const post = (url: string, body: unknown) =>
      call(async () => {
        const response = await fetch(url, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body)
        })
        return response.text()
      })

    it.scopedLive(
      "Gemini: a functionCall's args match the declared parameters (capitalised types too), whole and streamed",
      () =>
        Effect.gen(function* () {
          const sim = yield* Simulator.start({ dialect: "gemini", name: "g" })
          const body = {
            contents: [{ role: "user", parts: [{ text: "Weather?" }] }],
            tools: [
              {
                functionDeclarations: [
                  {
                    name: "get_weather",
                    parameters: {
                      type: "OBJECT",
                      properties: { city: { type: "STRING" }, days: { type: "INTEGER", minimum: 2 } },
                      required: ["city"]
                    }
                  }
                ]
              }
            ]
          }
          const base = `${sim.url}/v1beta/models/gemini-3-pro-preview`
          const whole = JSON.parse(yield* post(`${base}:generateContent`, body)) as {
            candidates: Array<{ content: { parts: Array<{ functionCall: unknown; thoughtSignature: unknown }> } }>
          }
          const part = whole.candidates[0]!.content.parts[0]!
          expect(part.functionCall).toEqual({ name: "get_weather", args: { city: "g", days: 2 } })
          expect(typeof part.thoughtSignature).toBe("string")
          const streamed = yield* post(`${base}:streamGenerateContent?alt=sse`, body)
          expect(streamed).toContain('"functionCall":{"name":"get_weather","args":{"city":"g","days":2}}')
        })
    )

    it.scopedLive("Ollama: a tool call's arguments match the tool's parameters, whole and streamed", () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ dialect: "ollama", name: "o" })
        const body = {
          model: "llama3.2",
          messages: [{ role: "user", content: "Weather?" }],
          tools: [
            {
              type: "function",
              function: {
                name: "get_weather",
                parameters: {
                  type: "object",
                  properties: { city: { type: "string" }, units: { type: "string", enum: ["celsius", "fahrenheit"] } },
                  required: ["city"]
                }
              }
            }
          ]
        }
        const whole = JSON.parse(yield* post(`${sim.url}/api/chat`, { ...body, stream: false })) as {
          message: { tool_calls: Array<{ function: unknown }> }
        }
        expect(whole.message.tool_calls[0]!.function).toEqual({
          name: "get_weather",
          arguments: { city: "o", units: "celsius" }
        })
        const lines = (yield* post(`${sim.url}/api/chat`, body))
          .split("\n")
          .filter((line) => line !== "")
          .map((line) => JSON.parse(line) as { message: { tool_calls?: Array<{ function: unknown }> } })
        expect(lines.flatMap((line) => line.message.tool_calls ?? []).map((c) => c.function)).toEqual([
          { name: "get_weather", arguments: { city: "o", units: "celsius" } }
        ])
      })
    )
  })

  describe("parseArgs", () => {
    it("parses every flag, with a separate or an inline value", () => {
      const args = Simulator.parseArgs([
        "--port",
        "9001",
        "--host=0.0.0.0",
        "--latency-ms",
        "50",
        "--ttft-ms",
        "100",
        "--tokens-per-second",
        "50",
        "--rpm",
        "60",
        "--tpm",
        "10000",
        "--failure-rate",
        "0.1",
        "--failure-status",
        "503",
        "--reset-rate",
        "0",
        "--stall-rate",
        "0",
        "--mid-stream-cut-rate",
        "0",
        "--malformed-event-rate",
        "0.5",
        "--malformed-event-after",
        "0",
        "--completion-tokens",
        "32",
        "--name",
        "a",
        "--dialect",
        "anthropic",
        "--models",
        "gpt-4o,gpt-4o-mini",
        "--seed",
        "1"
      ])
      expect(args).toEqual(
        Either.right({
          port: 9001,
          host: "0.0.0.0",
          latencyMs: 50,
          ttftMs: 100,
          tokensPerSecond: 50,
          rpm: 60,
          tpm: 10000,
          failureRate: 0.1,
          failureStatus: 503,
          resetRate: 0,
          stallRate: 0,
          midStreamCutRate: 0,
          malformedEventRate: 0.5,
          malformedEventAfter: 0,
          completionTokens: 32,
          name: "a",
          dialect: "anthropic",
          models: ["gpt-4o", "gpt-4o-mini"],
          seed: 1
        })
      )
      expect(Simulator.parseArgs([])).toEqual(Either.right({}))
    })

    it("lists every bad flag at once: an unknown one, a bad value and a missing value", () => {
      const parsed = Simulator.parseArgs(["--nope", "--failure-rate", "2", "--port"])
      const message = Either.isLeft(parsed) ? parsed.left.message : ""
      expect(message.replace(/known flags: [^\n]*/, "known flags: ...")).toBe(
        [
          "3 problems:",
          "  - unknown flag --nope; known flags: ...",
          "  - --failure-rate: expected a probability between 0 and 1, got '2'",
          "  - --port: missing value; expected an integer port between 0 and 65535"
        ].join("\n")
      )
    })

    it("rejects a bad value, a missing value or an unknown flag with a message naming the flag", () => {
      const message = (argv: ReadonlyArray<string>) =>
        Either.match(Simulator.parseArgs(argv), { onLeft: (e) => e.message, onRight: () => "parsed" })
      expect(message(["--failure-rate", "abc"])).toBe(
        "--failure-rate: expected a probability between 0 and 1, got 'abc'"
      )
      expect(message(["--failure-rate", "1.5"])).toContain("--failure-rate")
      expect(message(["--port", "70000"])).toContain("--port")
      expect(message(["--completion-tokens", "2.5"])).toContain("--completion-tokens")
      expect(message(["--rpm"])).toContain("--rpm: missing value")
      expect(message(["--bogus", "1"])).toContain("unknown flag --bogus")
      expect(message(["9001"])).toContain("unexpected argument '9001'")
      expect(message(["--dialect", "cohere"])).toBe(
        "--dialect: expected one of openai, anthropic, gemini, ollama, got 'cohere'"
      )
      expect(Simulator.usage).toContain("--mid-stream-cut-rate")
    })
  })
})
