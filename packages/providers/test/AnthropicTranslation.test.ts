/**
 * Golden tests of the Anthropic translation, written from the Messages API's documented formats:
 * OpenAI request → Messages request, message → chat completion, event stream → chunks.
 */
import { describe, expect, it } from "@effect/vitest"
import type { StreamEvent, Wire } from "@sluice/core"
import { Topology } from "@sluice/core"
import { Anthropic } from "@sluice/providers"

const upstream = Topology.upstream({ id: "claude", provider: "anthropic", baseUrl: "http://127.0.0.1:1/v1" })

/** A chat request as a client writes it (fields the schema does not list, such as `tool_calls`, included). */
const request = (fields: Readonly<Record<string, unknown>>): Wire.ChatCompletionRequest =>
  ({ model: "claude-sonnet-4-5", messages: [{ role: "user", content: "Hi" }], ...fields }) as Wire.ChatCompletionRequest

/** Decodes SSE payloads with a fresh decoder; the chunks as objects, and how the stream ended. */
const decodeAll = (payloads: ReadonlyArray<unknown>) => {
  const decoder = Anthropic.streamDecoder(upstream, 1700000000)
  const events: Array<StreamEvent.StreamEvent> = []
  let end: unknown = undefined
  for (const payload of payloads) {
    end = decoder.decode(typeof payload === "string" ? payload : JSON.stringify(payload), events)
    if (end !== undefined) break
  }
  return { chunks: events.map((e) => JSON.parse(e.data) as Record<string, unknown>), events, end }
}

const deltas = (chunks: ReadonlyArray<Record<string, unknown>>) =>
  chunks.map((c) => (c["choices"] as Array<{ delta: unknown; finish_reason: unknown }>)[0])

describe("Anthropic request translation", () => {
  it("hoists system prompts, merges consecutive turns, and turns tool calls and results into blocks", () => {
    const body = Anthropic.toAnthropic(
      request({
        messages: [
          { role: "system", content: "You are terse." },
          { role: "developer", content: [{ type: "text", text: "Answer in French." }] },
          {
            role: "user",
            content: [
              { type: "text", text: "What is in these images, and the weather in Paris and Rome?" },
              { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } },
              { type: "image_url", image_url: { url: "https://example.com/cat.jpg" } }
            ]
          },
          {
            role: "assistant",
            content: null,
            tool_calls: [
              { id: "toolu_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
              { id: "toolu_2", type: "function", function: { name: "get_weather", arguments: '{"city":"Rome"}' } }
            ]
          },
          { role: "tool", tool_call_id: "toolu_1", content: "18C" },
          { role: "tool", tool_call_id: "toolu_2", content: [{ type: "text", text: "24C" }] },
          { role: "user", content: "Thanks" }
        ],
        stop: ["END"],
        temperature: 1.5,
        user: "u-1",
        tools: [
          {
            type: "function",
            function: {
              name: "get_weather",
              description: "Weather of a city",
              parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] }
            }
          }
        ],
        tool_choice: "required",
        parallel_tool_calls: false
      }),
      "claude-sonnet-4-5-20250929",
      4096,
      false
    )
    expect(body).toEqual({
      model: "claude-sonnet-4-5-20250929",
      max_tokens: 4096,
      system: "You are terse.\n\nAnswer in French.",
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "What is in these images, and the weather in Paris and Rome?" },
            { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } },
            { type: "image", source: { type: "url", url: "https://example.com/cat.jpg" } }
          ]
        },
        {
          role: "assistant",
          content: [
            { type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Paris" } },
            { type: "tool_use", id: "toolu_2", name: "get_weather", input: { city: "Rome" } }
          ]
        },
        {
          role: "user",
          content: [
            { type: "tool_result", tool_use_id: "toolu_1", content: "18C" },
            { type: "tool_result", tool_use_id: "toolu_2", content: "24C" },
            { type: "text", text: "Thanks" }
          ]
        }
      ],
      temperature: 1,
      stop_sequences: ["END"],
      metadata: { user_id: "u-1" },
      tools: [
        {
          name: "get_weather",
          description: "Weather of a city",
          input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] }
        }
      ],
      tool_choice: { type: "any", disable_parallel_tool_use: true }
    })
  })

  it("takes the request's max_completion_tokens over max_tokens, sends stream, and names a chosen tool", () => {
    const body = Anthropic.toAnthropic(
      request({
        max_tokens: 50,
        max_completion_tokens: 20,
        stop: "###",
        tools: [{ type: "function", function: { name: "lookup" } }],
        tool_choice: { type: "function", function: { name: "lookup" } }
      }),
      "claude",
      4096,
      true
    )
    expect(body).toEqual({
      model: "claude",
      max_tokens: 20,
      messages: [{ role: "user", content: "Hi" }],
      stream: true,
      stop_sequences: ["###"],
      tools: [{ name: "lookup", input_schema: { type: "object", properties: {} } }],
      tool_choice: { type: "tool", name: "lookup" }
    })
  })

  it("asks for structured output through a forced tool carrying the JSON schema", () => {
    const schema = { type: "object", properties: { city: { type: "string" } }, required: ["city"] }
    const body = Anthropic.toAnthropic(
      request({ response_format: { type: "json_schema", json_schema: { name: "place", schema } } }),
      "claude",
      1024,
      false
    ) as Record<string, unknown>
    expect(body["tools"]).toEqual([
      {
        name: Anthropic.JSON_TOOL,
        description: "Respond with a JSON object matching the schema.",
        input_schema: schema
      }
    ])
    expect(body["tool_choice"]).toEqual({ type: "tool", name: Anthropic.JSON_TOOL })
    const object = Anthropic.toAnthropic(request({ response_format: { type: "json_object" } }), "c", 1024, false)
    expect((object as Record<string, unknown>)["tool_choice"]).toEqual({ type: "tool", name: Anthropic.JSON_TOOL })
  })

  it("refuses what Anthropic cannot take, naming the feature: n > 1 and audio input", () => {
    const many = Anthropic.toAnthropic(request({ n: 2 }), "c", 1024, false)
    expect(many).toBeInstanceOf(Anthropic.Unsupported)
    expect((many as Anthropic.Unsupported).feature).toBe("n")
    const audio = Anthropic.toAnthropic(
      request({
        messages: [{ role: "user", content: [{ type: "input_audio", input_audio: { data: "AAAA", format: "wav" } }] }]
      }),
      "c",
      1024,
      false
    )
    expect((audio as Anthropic.Unsupported).feature).toBe("audio")
  })
})

describe("Anthropic answer translation", () => {
  it("turns a text message into a chat completion, with every input token (cached too) in prompt_tokens", () => {
    const completion = Anthropic.fromAnthropic(
      {
        id: "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        type: "message",
        role: "assistant",
        content: [{ type: "text", text: "Hi! My name is Claude." }],
        model: "claude-sonnet-4-5-20250929",
        stop_reason: "end_turn",
        stop_sequence: null,
        usage: {
          input_tokens: 2095,
          output_tokens: 503,
          cache_creation_input_tokens: 100,
          cache_read_input_tokens: 1800
        }
      },
      1700000000
    )
    expect(completion).toEqual({
      id: "msg_013Zva2CMHLNnXjNJJKqJ2EF",
      object: "chat.completion",
      created: 1700000000,
      model: "claude-sonnet-4-5-20250929",
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: "Hi! My name is Claude.", refusal: null },
          logprobs: null,
          finish_reason: "stop"
        }
      ],
      usage: {
        prompt_tokens: 3995,
        completion_tokens: 503,
        total_tokens: 4498,
        prompt_tokens_details: { cached_tokens: 1800, cache_creation_tokens: 100 }
      }
    })
  })

  it("turns tool_use blocks into parallel tool calls with JSON arguments", () => {
    const completion = Anthropic.fromAnthropic(
      {
        id: "msg_01",
        type: "message",
        role: "assistant",
        model: "claude",
        content: [
          { type: "text", text: "Let me check." },
          { type: "tool_use", id: "toolu_01A", name: "get_weather", input: { location: "San Francisco, CA" } },
          { type: "tool_use", id: "toolu_01B", name: "get_time", input: {} }
        ],
        stop_reason: "tool_use",
        usage: { input_tokens: 10, output_tokens: 5 }
      },
      1
    )
    expect(completion?.choices[0]).toEqual({
      index: 0,
      message: {
        role: "assistant",
        content: "Let me check.",
        refusal: null,
        tool_calls: [
          {
            id: "toolu_01A",
            type: "function",
            function: { name: "get_weather", arguments: '{"location":"San Francisco, CA"}' }
          },
          { id: "toolu_01B", type: "function", function: { name: "get_time", arguments: "{}" } }
        ]
      },
      logprobs: null,
      finish_reason: "tool_calls"
    })
    expect(completion?.usage).toEqual({
      prompt_tokens: 10,
      completion_tokens: 5,
      total_tokens: 15,
      prompt_tokens_details: { cached_tokens: 0 }
    })
  })

  it("answers structured output from the forced tool's input as content, finishing with stop", () => {
    const completion = Anthropic.fromAnthropic(
      {
        id: "m",
        model: "c",
        content: [{ type: "tool_use", id: "t", name: Anthropic.JSON_TOOL, input: { city: "Paris" } }],
        stop_reason: "tool_use",
        usage: { input_tokens: 1, output_tokens: 1 }
      },
      1
    )
    expect(completion?.choices[0]?.message).toEqual({ role: "assistant", content: '{"city":"Paris"}', refusal: null })
    expect(completion?.choices[0]?.finish_reason).toBe("stop")
  })

  it("maps every stop reason", () => {
    expect(
      ["end_turn", "max_tokens", "tool_use", "stop_sequence", "refusal", null].map(Anthropic.finishReason)
    ).toEqual(["stop", "length", "tool_calls", "stop", "content_filter", null])
  })
})

describe("Anthropic stream translation", () => {
  it("translates the documented text stream into chunks, ending with usage", () => {
    const { chunks, end, events } = decodeAll([
      {
        type: "message_start",
        message: {
          id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",
          type: "message",
          role: "assistant",
          content: [],
          model: "claude-opus-4-6",
          stop_reason: null,
          stop_sequence: null,
          usage: { input_tokens: 25, output_tokens: 1, cache_read_input_tokens: 5 }
        }
      },
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "ping" },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hello" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "!" } },
      { type: "content_block_stop", index: 0 },
      { type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: 15 } },
      { type: "message_stop" }
    ])
    const head = { id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", object: "chat.completion.chunk", created: 1700000000 }
    const usage = {
      prompt_tokens: 30,
      completion_tokens: 15,
      total_tokens: 45,
      prompt_tokens_details: { cached_tokens: 5 }
    }
    expect(chunks).toEqual([
      {
        ...head,
        model: "claude-opus-4-6",
        choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }]
      },
      {
        ...head,
        model: "claude-opus-4-6",
        choices: [{ index: 0, delta: { content: "Hello" }, logprobs: null, finish_reason: null }]
      },
      {
        ...head,
        model: "claude-opus-4-6",
        choices: [{ index: 0, delta: { content: "!" }, logprobs: null, finish_reason: null }]
      },
      { ...head, model: "claude-opus-4-6", choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }] },
      { ...head, model: "claude-opus-4-6", choices: [], usage }
    ])
    expect(events.at(-1)).toMatchObject({ usage, usageOnly: true })
    expect(typeof end).toBe("symbol")
  })

  it("translates tool_use blocks into tool-call deltas whose arguments arrive split across chunks", () => {
    const { chunks } = decodeAll([
      { type: "message_start", message: { id: "m", model: "c", usage: { input_tokens: 472, output_tokens: 2 } } },
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Checking." } },
      { type: "content_block_stop", index: 0 },
      {
        type: "content_block_start",
        index: 1,
        content_block: { type: "tool_use", id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6", name: "get_weather", input: {} }
      },
      { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: "" } },
      { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: '{"location":' } },
      { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: ' "Paris"}' } },
      { type: "content_block_stop", index: 1 },
      {
        type: "content_block_start",
        index: 2,
        content_block: { type: "tool_use", id: "toolu_2", name: "t2", input: {} }
      },
      { type: "content_block_delta", index: 2, delta: { type: "input_json_delta", partial_json: "{}" } },
      { type: "message_delta", delta: { stop_reason: "tool_use" }, usage: { output_tokens: 89 } },
      { type: "message_stop" }
    ])
    expect(deltas(chunks).slice(0, -1)).toEqual([
      { index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null },
      { index: 0, delta: { content: "Checking." }, logprobs: null, finish_reason: null },
      {
        index: 0,
        delta: {
          tool_calls: [
            {
              index: 0,
              id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
              type: "function",
              function: { name: "get_weather", arguments: "" }
            }
          ]
        },
        logprobs: null,
        finish_reason: null
      },
      {
        index: 0,
        delta: { tool_calls: [{ index: 0, function: { arguments: '{"location":' } }] },
        logprobs: null,
        finish_reason: null
      },
      {
        index: 0,
        delta: { tool_calls: [{ index: 0, function: { arguments: ' "Paris"}' } }] },
        logprobs: null,
        finish_reason: null
      },
      {
        index: 0,
        delta: { tool_calls: [{ index: 1, id: "toolu_2", type: "function", function: { name: "t2", arguments: "" } }] },
        logprobs: null,
        finish_reason: null
      },
      {
        index: 0,
        delta: { tool_calls: [{ index: 1, function: { arguments: "{}" } }] },
        logprobs: null,
        finish_reason: null
      },
      { index: 0, delta: {}, logprobs: null, finish_reason: "tool_calls" }
    ])
    expect(chunks.at(-1)?.["usage"]).toMatchObject({ prompt_tokens: 472, completion_tokens: 89 })
  })

  it("streams the forced JSON tool's input as content, finishing with stop", () => {
    const { chunks } = decodeAll([
      { type: "message_start", message: { id: "m", model: "c", usage: { input_tokens: 1, output_tokens: 1 } } },
      {
        type: "content_block_start",
        index: 0,
        content_block: { type: "tool_use", id: "t", name: Anthropic.JSON_TOOL, input: {} }
      },
      { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: '{"city":' } },
      { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: '"Paris"}' } },
      { type: "message_delta", delta: { stop_reason: "tool_use" }, usage: { output_tokens: 3 } },
      { type: "message_stop" }
    ])
    const d = deltas(chunks)
    expect(d.slice(1, 3).map((x) => x?.delta)).toEqual([{ content: '{"city":' }, { content: '"Paris"}' }])
    expect(d[3]?.finish_reason).toBe("stop")
  })

  it("fails retryably on an error event mid-stream (overloaded_error), after the chunks before it", () => {
    const { chunks, end } = decodeAll([
      { type: "message_start", message: { id: "m", model: "c", usage: { input_tokens: 1, output_tokens: 1 } } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hel" } },
      { type: "error", error: { type: "overloaded_error", message: "Overloaded" } }
    ])
    expect(chunks).toHaveLength(2)
    expect(end).toMatchObject({
      _tag: "UpstreamError",
      upstream: "claude",
      retryable: true,
      message: "stream error: overloaded_error: Overloaded"
    })
  })

  it("fails on an event that is not JSON", () => {
    const { end } = decodeAll(['{"type":"content_block_delta","ind'])
    expect(end).toMatchObject({ _tag: "UpstreamError", kind: "protocol", retryable: true })
  })
})
