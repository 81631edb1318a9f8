/**
 * Golden tests of `/v1/messages`' translation, from the Messages API's documented formats: Messages
 * request → OpenAI request, chat completion → message, OpenAI chunks → Messages events.
 */
import { describe, expect, it } from "@effect/vitest"
import type { Wire } from "@sluice/core"
import { Gemini } from "@sluice/providers"
import { Messages } from "@sluice/server"

/** SSE text as its events: `[type, data]` pairs, checking each `event:` line names its data's type. */
const parseEvents = (text: string) =>
  text
    .split("\n\n")
    .filter((block) => block !== "")
    .map((block) => {
      const [eventLine, dataLine] = block.split("\n")
      const data = JSON.parse(dataLine!.slice("data: ".length)) as Record<string, unknown>
      expect(eventLine).toBe(`event: ${String(data["type"])}`)
      return data
    })

const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
  JSON.stringify({
    id: "chatcmpl-1",
    object: "chat.completion.chunk",
    created: 1,
    model: "gpt-4o",
    choices: [{ index: 0, delta, finish_reason: finish }]
  })

describe("Messages request translation", () => {
  it("turns system, images, tool_use and tool_result blocks, tools and tool_choice into an OpenAI request", () => {
    const request = Messages.toOpenAI({
      model: "claude-sonnet-4-5",
      max_tokens: 1024,
      system: [{ type: "text", text: "You are a weather bot." }],
      stop_sequences: ["END"],
      temperature: 0.5,
      top_k: 5,
      metadata: { user_id: "u-42" },
      stream: true,
      tools: [
        {
          name: "get_weather",
          description: "Get the current weather in a given location",
          input_schema: { type: "object", properties: { location: { type: "string" } }, required: ["location"] }
        }
      ],
      tool_choice: { type: "any", disable_parallel_tool_use: true },
      messages: [
        {
          role: "user",
          content: [
            { type: "image", source: { type: "base64", media_type: "image/jpeg", data: "/9j/4AAQ" } },
            { type: "image", source: { type: "url", url: "https://example.com/sky.png" } },
            { type: "text", text: "What's the weather like where this was taken?" }
          ]
        },
        {
          role: "assistant",
          content: [
            { type: "text", text: "I'll check." },
            { type: "tool_use", id: "toolu_01A09q90qw90lq917835lq9", name: "get_weather", input: { location: "SF" } }
          ]
        },
        {
          role: "user",
          content: [
            { type: "tool_result", tool_use_id: "toolu_01A09q90qw90lq917835lq9", content: "15 degrees" },
            { type: "text", text: "And tomorrow?" }
          ]
        }
      ]
    })
    expect(request).toEqual({
      model: "claude-sonnet-4-5",
      max_tokens: 1024,
      stream: true,
      stream_options: { include_usage: true },
      temperature: 0.5,
      stop: ["END"],
      user: "u-42",
      messages: [
        { role: "system", content: "You are a weather bot." },
        {
          role: "user",
          content: [
            { type: "image_url", image_url: { url: "data:image/jpeg;base64,/9j/4AAQ" } },
            { type: "image_url", image_url: { url: "https://example.com/sky.png" } },
            { type: "text", text: "What's the weather like where this was taken?" }
          ]
        },
        {
          role: "assistant",
          content: "I'll check.",
          tool_calls: [
            {
              id: "toolu_01A09q90qw90lq917835lq9",
              type: "function",
              function: { name: "get_weather", arguments: '{"location":"SF"}' }
            }
          ]
        },
        { role: "tool", tool_call_id: "toolu_01A09q90qw90lq917835lq9", content: "15 degrees" },
        { role: "user", content: "And tomorrow?" }
      ],
      tools: [
        {
          type: "function",
          function: {
            name: "get_weather",
            description: "Get the current weather in a given location",
            parameters: { type: "object", properties: { location: { type: "string" } }, required: ["location"] }
          }
        }
      ],
      tool_choice: "required",
      parallel_tool_calls: false
    })
  })

  it("refuses blocks and tools it cannot translate, naming where", () => {
    const document = Messages.toOpenAI({
      model: "c",
      max_tokens: 1,
      messages: [{ role: "user", content: [{ type: "document", source: { type: "text", data: "x" } }] }]
    })
    expect(document).toMatchObject({ param: "messages[0].content[0]" })
    const server = Messages.toOpenAI({
      model: "c",
      max_tokens: 1,
      messages: [{ role: "user", content: "Hi" }],
      tools: [{ type: "web_search_20250305", name: "web_search" }]
    })
    expect(server).toMatchObject({ param: "tools[0]" })
  })
})

describe("Messages answer translation", () => {
  it("turns a completion with text and tool calls into a message, cached tokens apart from input_tokens", () => {
    const completion: Wire.ChatCompletion = {
      id: "chatcmpl-9",
      object: "chat.completion",
      created: 1,
      model: "gpt-4o",
      choices: [
        {
          index: 0,
          message: {
            role: "assistant",
            content: "Checking.",
            tool_calls: [
              { id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Rome"}' } }
            ]
          },
          finish_reason: "tool_calls"
        }
      ],
      usage: {
        prompt_tokens: 120,
        completion_tokens: 30,
        total_tokens: 150,
        prompt_tokens_details: { cached_tokens: 100 }
      }
    }
    expect(Messages.fromOpenAI(completion, "claude-sonnet-4-5")).toEqual({
      id: "msg_chatcmpl-9",
      type: "message",
      role: "assistant",
      model: "claude-sonnet-4-5",
      content: [
        { type: "text", text: "Checking." },
        { type: "tool_use", id: "call_1", name: "get_weather", input: { city: "Rome" } }
      ],
      stop_reason: "tool_use",
      stop_sequence: null,
      usage: { input_tokens: 20, output_tokens: 30, cache_read_input_tokens: 100, cache_creation_input_tokens: 0 }
    })
  })
})

describe("Messages stream translation", () => {
  it("turns text and tool-call chunks into content blocks, then message_delta and message_stop", () => {
    const translator = new Messages.StreamTranslator("msg_1", "claude-sonnet-4-5")
    const text =
      translator.start() +
      translator.chunk(chunk({ role: "assistant", content: "" })) +
      translator.chunk(chunk({ content: "Let me" })) +
      translator.chunk(chunk({ content: " check." })) +
      translator.chunk(
        chunk({
          tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "get_weather", arguments: "" } }]
        })
      ) +
      translator.chunk(chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] })) +
      translator.chunk(chunk({ tool_calls: [{ index: 0, function: { arguments: '"Rome"}' } }] })) +
      translator.chunk(chunk({}, "tool_calls")) +
      translator.chunk(
        JSON.stringify({ id: "c", choices: [], usage: { prompt_tokens: 9, completion_tokens: 7, total_tokens: 16 } })
      ) +
      translator.end()
    expect(parseEvents(text)).toEqual([
      {
        type: "message_start",
        message: {
          id: "msg_1",
          type: "message",
          role: "assistant",
          model: "claude-sonnet-4-5",
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { input_tokens: 0, output_tokens: 0 }
        }
      },
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Let me" } },
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: " check." } },
      { type: "content_block_stop", index: 0 },
      {
        type: "content_block_start",
        index: 1,
        content_block: { type: "tool_use", id: "call_1", name: "get_weather", input: {} }
      },
      { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: '{"city":' } },
      { type: "content_block_delta", index: 1, delta: { type: "input_json_delta", partial_json: '"Rome"}' } },
      { type: "content_block_stop", index: 1 },
      {
        type: "message_delta",
        delta: { stop_reason: "tool_use", stop_sequence: null },
        usage: { input_tokens: 9, output_tokens: 7, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 }
      },
      { type: "message_stop" }
    ])
  })
})

describe("Messages: Gemini thought signatures", () => {
  const signed = { extra_content: { google: { thought_signature: "c2ln+/8=" } } }
  const calls = [
    { id: "call_0", type: "function", function: { name: "a", arguments: "{}" }, ...signed },
    // Gemini signs only the first of parallel calls.
    { id: "call_1", type: "function", function: { name: "b", arguments: "{}" } }
  ]

  it("folds a call's signature into its tool_use id, whole and streamed, and unfolds it from the replayed history", () => {
    const completion = {
      id: "gemini-1",
      object: "chat.completion",
      created: 1,
      model: "gemini-3-pro-preview",
      choices: [
        { index: 0, message: { role: "assistant", content: null, tool_calls: calls }, finish_reason: "tool_calls" }
      ],
      usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }
    } as unknown as Wire.ChatCompletion
    const content = Messages.fromOpenAI(completion, "claude-sonnet-4-5")["content"] as Array<Record<string, unknown>>
    const folded = Gemini.foldedId(calls[0])
    expect(folded).not.toBe("call_0")
    expect(content.map((b) => b["id"])).toEqual([folded, "call_1"])
    const stream = new Messages.StreamTranslator("msg_1", "claude-sonnet-4-5")
    const events = parseEvents(stream.chunk(chunk({ tool_calls: calls.map((c, index) => ({ index, ...c })) })))
    expect(
      events.filter((e) => e["type"] === "content_block_start").map((e) => (e["content_block"] as { id: unknown }).id)
    ).toEqual([folded, "call_1"])
    const request = Messages.toOpenAI({
      model: "claude-sonnet-4-5",
      max_tokens: 10,
      messages: [
        { role: "user", content: "Go" },
        { role: "assistant", content },
        {
          role: "user",
          content: [
            { type: "tool_result", tool_use_id: folded, content: "1" },
            { type: "tool_result", tool_use_id: "call_1", content: "2" }
          ]
        }
      ]
    }) as unknown as { messages: Array<Record<string, unknown>> }
    expect(request.messages.slice(1)).toEqual([
      {
        role: "assistant",
        content: null,
        tool_calls: [
          { id: "call_0", type: "function", function: { name: "a", arguments: "{}" }, ...signed },
          { id: "call_1", type: "function", function: { name: "b", arguments: "{}" } }
        ]
      },
      { role: "tool", tool_call_id: "call_0", content: "1" },
      { role: "tool", tool_call_id: "call_1", content: "2" }
    ])
  })
})
