/** Golden tests of the native Ollama translation, written from Ollama's documented `/api/chat` and `/api/embed` formats. */
import { describe, expect, it } from "@effect/vitest"
import type { StreamEvent, Wire } from "@sluice/core"
import { Topology } from "@sluice/core"
import { Anthropic, Ollama } from "@sluice/providers"

const upstream = Topology.upstream({ id: "local", provider: "ollama", baseUrl: "http://127.0.0.1:1" })

const request = (fields: Readonly<Record<string, unknown>>): Wire.ChatCompletionRequest =>
  ({ model: "llama3.2", messages: [{ role: "user", content: "Hi" }], ...fields }) as Wire.ChatCompletionRequest

/** Decodes NDJSON lines until the decoder ends (a done line or a failure): the chunks and that end. */
const decodeAll = (lines: ReadonlyArray<unknown>) => {
  const decoder = Ollama.streamDecoder(upstream, 1700000000)
  const events: Array<StreamEvent.StreamEvent> = []
  let end: unknown = undefined
  for (const line of lines) {
    end = decoder.decode(JSON.stringify(line), events)
    if (end !== undefined) break
  }
  return {
    chunks: events.map((e) => JSON.parse(e.data) as { choices: Array<Record<string, unknown>>; usage?: unknown }),
    end
  }
}

describe("Ollama translation", () => {
  it("turns messages, images, tool calls and results, format and options into an /api/chat body", () => {
    const body = Ollama.toOllama(
      request({
        messages: [
          { role: "developer", content: "Be brief." },
          {
            role: "user",
            content: [
              { type: "text", text: "What is in this image?" },
              { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } }
            ]
          },
          {
            role: "assistant",
            content: "",
            tool_calls: [
              { id: "call_0", type: "function", function: { name: "get_weather", arguments: '{"city":"Tokyo"}' } }
            ]
          },
          { role: "tool", tool_call_id: "call_0", content: "11 degrees celsius" }
        ],
        tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }],
        response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object" } } },
        temperature: 0,
        max_tokens: 64,
        stop: ["\n\n"],
        options: { num_ctx: 8192 },
        keep_alive: "5m"
      }),
      "llama3.2:3b",
      true
    )
    expect(body).toEqual({
      model: "llama3.2:3b",
      stream: true,
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "What is in this image?", images: ["iVBORw0KGgo="] },
        {
          role: "assistant",
          content: "",
          tool_calls: [{ function: { name: "get_weather", arguments: { city: "Tokyo" } } }]
        },
        { role: "tool", content: "11 degrees celsius", tool_name: "get_weather" }
      ],
      tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }],
      format: { type: "object" },
      options: { temperature: 0, num_predict: 64, stop: ["\n\n"], num_ctx: 8192 },
      keep_alive: "5m"
    })
  })

  it("asks for JSON mode (json_object) as format: json, and for text with no format", () => {
    const json = Ollama.toOllama(request({ response_format: { type: "json_object" } }), "llama3.2", false)
    expect(json).toEqual({
      model: "llama3.2",
      stream: false,
      messages: [{ role: "user", content: "Hi" }],
      format: "json"
    })
    const text = Ollama.toOllama(request({ response_format: { type: "text" } }), "llama3.2", false)
    expect(text).not.toHaveProperty("format")
  })

  it("refuses image URLs, forced tool calls and n > 1, naming each", () => {
    const url = Ollama.toOllama(
      request({
        messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "https://x/y.png" } }] }]
      }),
      "m",
      false
    )
    expect((url as Anthropic.Unsupported).feature).toBe("image URL")
    expect((Ollama.toOllama(request({ tool_choice: "required" }), "m", false) as Anthropic.Unsupported).feature).toBe(
      "tool_choice"
    )
    expect((Ollama.toOllama(request({ n: 2 }), "m", false) as Anthropic.Unsupported).feature).toBe("n")
  })

  it("turns a whole answer into a chat completion with usage from the eval counts", () => {
    const completion = Ollama.fromOllama(
      {
        model: "llama3.2",
        created_at: "2023-12-12T14:13:43.416799Z",
        message: { role: "assistant", content: "Hello! How are you today?" },
        done: true,
        done_reason: "stop",
        total_duration: 5191566416,
        prompt_eval_count: 26,
        eval_count: 298
      },
      1700000000
    )
    expect(completion).toEqual({
      id: "ollama-1700000000",
      object: "chat.completion",
      created: 1700000000,
      model: "llama3.2",
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: "Hello! How are you today?", refusal: null },
          logprobs: null,
          finish_reason: "stop"
        }
      ],
      usage: { prompt_tokens: 26, completion_tokens: 298, total_tokens: 324 }
    })
    const called = Ollama.fromOllama(
      {
        model: "m",
        message: {
          role: "assistant",
          content: "",
          tool_calls: [{ function: { name: "get_weather", arguments: { city: "Tokyo" } } }]
        },
        done: true
      },
      1
    )
    expect(called?.choices[0]?.message).toEqual({
      role: "assistant",
      content: null,
      refusal: null,
      tool_calls: [{ id: "call_0", type: "function", function: { name: "get_weather", arguments: '{"city":"Tokyo"}' } }]
    })
    expect(called?.choices[0]?.finish_reason).toBe("tool_calls")
  })

  it("turns NDJSON stream lines into chunks, ending at done with usage", () => {
    const decoder = Ollama.streamDecoder(upstream, 1)
    const events: Array<StreamEvent.StreamEvent> = []
    const lines = [
      { model: "llama3.2", message: { role: "assistant", content: "The" }, done: false },
      { model: "llama3.2", message: { role: "assistant", content: " sky" }, done: false },
      {
        model: "llama3.2",
        message: { role: "assistant", content: "" },
        done: true,
        done_reason: "length",
        prompt_eval_count: 5,
        eval_count: 2
      }
    ]
    const ends = lines.map((line) => decoder.decode(JSON.stringify(line), events))
    expect(ends.slice(0, 2)).toEqual([undefined, undefined])
    expect(typeof ends[2]).toBe("symbol")
    const chunks = events.map((e) => JSON.parse(e.data) as { choices: Array<Record<string, unknown>>; usage?: unknown })
    expect(chunks.map((c) => c.choices[0]?.["delta"] ?? null)).toEqual([
      { role: "assistant", content: "" },
      { content: "The" },
      { content: " sky" },
      {},
      null
    ])
    expect(chunks[3]?.choices[0]?.["finish_reason"]).toBe("length")
    expect(chunks[4]?.usage).toEqual({ prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 })
    const failed = Ollama.streamDecoder(upstream, 1).decode(JSON.stringify({ error: "model 'x' not found" }), [])
    expect(failed).toMatchObject({ _tag: "UpstreamError", message: "stream error: model 'x' not found" })
  })

  it("turns streamed tool calls (each whole in its line, Ollama's done_reason stop) into indexed tool-call deltas finishing with tool_calls", () => {
    const { chunks, end } = decodeAll([
      {
        model: "llama3.2",
        message: {
          role: "assistant",
          content: "",
          tool_calls: [{ function: { name: "get_weather", arguments: { city: "Tokyo" } } }]
        },
        done: false
      },
      {
        model: "llama3.2",
        message: {
          role: "assistant",
          content: "",
          tool_calls: [{ function: { name: "get_time", arguments: { zone: "Asia/Tokyo", format: { h24: true } } } }]
        },
        done: false
      },
      {
        model: "llama3.2",
        message: { role: "assistant", content: "" },
        done: true,
        done_reason: "stop",
        prompt_eval_count: 40,
        eval_count: 21
      }
    ])
    expect(typeof end).toBe("symbol")
    expect(chunks.map((c) => c.choices[0] ?? null)).toEqual([
      { index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null },
      {
        index: 0,
        delta: {
          tool_calls: [
            {
              index: 0,
              id: "call_0",
              type: "function",
              function: { name: "get_weather", arguments: '{"city":"Tokyo"}' }
            }
          ]
        },
        logprobs: null,
        finish_reason: null
      },
      {
        index: 0,
        delta: {
          tool_calls: [
            {
              index: 1,
              id: "call_1",
              type: "function",
              function: { name: "get_time", arguments: '{"zone":"Asia/Tokyo","format":{"h24":true}}' }
            }
          ]
        },
        logprobs: null,
        finish_reason: null
      },
      { index: 0, delta: {}, logprobs: null, finish_reason: "tool_calls" },
      null
    ])
    expect(chunks[4]?.usage).toEqual({ prompt_tokens: 40, completion_tokens: 21, total_tokens: 61 })
  })

  it("fails retryably on an error line after content has streamed, with no finish or usage chunk to look complete", () => {
    const { chunks, end } = decodeAll([
      { model: "llama3.2", message: { role: "assistant", content: "The" }, done: false },
      { model: "llama3.2", message: { role: "assistant", content: " sky" }, done: false },
      { error: "an error was encountered while running the model: unexpected EOF" },
      // Nothing after the error is read.
      { model: "llama3.2", message: { role: "assistant", content: "" }, done: true, done_reason: "stop" }
    ])
    expect(chunks.map((c) => c.choices[0]?.["delta"])).toEqual([
      { role: "assistant", content: "" },
      { content: "The" },
      { content: " sky" }
    ])
    expect(chunks.every((c) => c.choices[0]?.["finish_reason"] === null && c.usage === undefined)).toBe(true)
    expect(end).toMatchObject({
      _tag: "UpstreamError",
      upstream: "local",
      kind: "protocol",
      retryable: true,
      message: "stream error: an error was encountered while running the model: unexpected EOF"
    })
  })

  it("translates embeddings both ways", () => {
    expect(Ollama.toOllamaEmbeddings({ model: "all-minilm", input: ["a", "b"] }, "all-minilm")).toEqual({
      model: "all-minilm",
      input: ["a", "b"]
    })
    expect(
      Ollama.fromOllamaEmbeddings(
        {
          model: "all-minilm",
          embeddings: [
            [0.1, 0.2],
            [0.3, 0.4]
          ],
          prompt_eval_count: 8
        },
        "all-minilm"
      )
    ).toEqual({
      object: "list",
      data: [
        { object: "embedding", index: 0, embedding: [0.1, 0.2] },
        { object: "embedding", index: 1, embedding: [0.3, 0.4] }
      ],
      model: "all-minilm",
      usage: { prompt_tokens: 8, total_tokens: 8 }
    })
  })
})
