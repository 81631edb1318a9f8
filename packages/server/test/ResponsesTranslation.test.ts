/** Golden tests of `/v1/responses`' translation, from the Responses API's documented formats. */
import { describe, expect, it } from "@effect/vitest"
import type { Wire } from "@sluice/core"
import { Gemini } from "@sluice/providers"
import { Responses } from "@sluice/server"

describe("Responses translation", () => {
  it("turns instructions, input items, function tools and text.format into a chat request", () => {
    expect(
      Responses.toChat({
        model: "gpt-4o",
        instructions: "You are terse.",
        input: [
          {
            role: "user",
            content: [
              { type: "input_text", text: "What is in this image?" },
              { type: "input_image", image_url: "https://example.com/a.png", detail: "low" }
            ]
          },
          { type: "function_call", call_id: "call_1", name: "lookup", arguments: '{"q":"a"}' },
          { type: "function_call", call_id: "call_2", name: "lookup", arguments: '{"q":"b"}' },
          { type: "function_call_output", call_id: "call_1", output: "A" },
          { type: "function_call_output", call_id: "call_2", output: { found: "B" } }
        ],
        tools: [{ type: "function", name: "lookup", parameters: { type: "object" }, strict: true }],
        tool_choice: { type: "function", name: "lookup" },
        text: { format: { type: "json_schema", name: "answer", schema: { type: "object" }, strict: true } },
        max_output_tokens: 100,
        temperature: 0.3,
        stream: true
      })
    ).toEqual({
      model: "gpt-4o",
      stream: true,
      stream_options: { include_usage: true },
      temperature: 0.3,
      max_tokens: 100,
      messages: [
        { role: "system", content: "You are terse." },
        {
          role: "user",
          content: [
            { type: "text", text: "What is in this image?" },
            { type: "image_url", image_url: { url: "https://example.com/a.png", detail: "low" } }
          ]
        },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "call_1", type: "function", function: { name: "lookup", arguments: '{"q":"a"}' } },
            { id: "call_2", type: "function", function: { name: "lookup", arguments: '{"q":"b"}' } }
          ]
        },
        { role: "tool", tool_call_id: "call_1", content: "A" },
        { role: "tool", tool_call_id: "call_2", content: '{"found":"B"}' }
      ],
      tools: [{ type: "function", function: { name: "lookup", parameters: { type: "object" }, strict: true } }],
      tool_choice: { type: "function", function: { name: "lookup" } },
      response_format: {
        type: "json_schema",
        json_schema: { name: "answer", schema: { type: "object" }, strict: true }
      }
    })
  })

  it("streams a function call as an item with argument deltas, then response.completed with it", () => {
    const stream = new Responses.ResponsesStream("1", 1700000000, { model: "gpt-4o" })
    const chunk = (delta: object, finish: string | null = null) =>
      JSON.stringify({ id: "c", choices: [{ index: 0, delta, finish_reason: finish }] })
    const text =
      stream.start() +
      stream.chunk(chunk({ role: "assistant", content: null })) +
      stream.chunk(
        chunk({
          tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "lookup", arguments: "" } }]
        })
      ) +
      stream.chunk(chunk({ tool_calls: [{ index: 0, function: { arguments: '{"q":' } }] })) +
      stream.chunk(chunk({ tool_calls: [{ index: 0, function: { arguments: '"a"}' } }] })) +
      stream.chunk(chunk({}, "tool_calls")) +
      stream.end()
    const events = text
      .split("\n\n")
      .filter((b) => b !== "")
      .map((b) => JSON.parse(b.split("\n")[1]!.slice(6)) as Record<string, unknown>)
    expect(events.map((e) => [e["type"], e["sequence_number"]])).toEqual([
      ["response.created", 0],
      ["response.in_progress", 1],
      ["response.output_item.added", 2],
      ["response.function_call_arguments.delta", 3],
      ["response.function_call_arguments.delta", 4],
      ["response.function_call_arguments.done", 5],
      ["response.output_item.done", 6],
      ["response.completed", 7]
    ])
    expect(events[5]).toMatchObject({ item_id: "fc_1_0", output_index: 0, arguments: '{"q":"a"}' })
    expect((events[7]!["response"] as Record<string, unknown>)["output"]).toEqual([
      {
        type: "function_call",
        id: "fc_1_0",
        call_id: "call_1",
        name: "lookup",
        arguments: '{"q":"a"}',
        status: "completed"
      }
    ])
  })
})

describe("Responses: Gemini thought signatures", () => {
  it("folds a call's signature into its call_id, whole and streamed, and unfolds it from the replayed input", () => {
    const signed = { extra_content: { google: { thought_signature: "c2ln+/8=" } } }
    const calls = [
      { id: "call_0", type: "function", function: { name: "a", arguments: "{}" }, ...signed },
      { id: "call_1", type: "function", function: { name: "b", arguments: "{}" } }
    ]
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
    const body = { model: "gpt-4o" }
    const output = Responses.fromChat(completion, body, "r1", 1)["output"] as Array<Record<string, unknown>>
    const folded = Gemini.foldedId(calls[0])
    expect(output.map((item) => item["call_id"])).toEqual([folded, "call_1"])
    const stream = new Responses.ResponsesStream("r1", 1, body)
    stream.start()
    stream.chunk(
      JSON.stringify({
        id: "c",
        object: "chat.completion.chunk",
        created: 1,
        model: "m",
        choices: [{ index: 0, delta: { tool_calls: calls.map((c, index) => ({ index, ...c })) }, finish_reason: null }]
      })
    )
    const done = stream.end()
    const completed = JSON.parse(done.split("\n\n").at(-2)!.split("\n")[1]!.slice("data: ".length)) as {
      response: { output: Array<Record<string, unknown>> }
    }
    expect(completed.response.output.map((item) => item["call_id"])).toEqual([folded, "call_1"])
    const request = Responses.toChat({
      model: "gpt-4o",
      input: [
        { role: "user", content: "Go" },
        ...output,
        { type: "function_call_output", call_id: folded, output: "1" },
        { type: "function_call_output", call_id: "call_1", output: "2" }
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
