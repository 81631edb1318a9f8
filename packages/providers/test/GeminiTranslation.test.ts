/**
 * Golden tests of the Gemini translation, written from the Gemini API's documented formats:
 * OpenAI request → generateContent request, response → chat completion, SSE stream → chunks.
 */
import { describe, expect, it } from "@effect/vitest"
import type { StreamEvent, Wire } from "@sluice/core"
import { Topology } from "@sluice/core"
import { Gemini } from "@sluice/providers"

const upstream = Topology.upstream({ id: "gemini", provider: "gemini", baseUrl: "http://127.0.0.1:1/v1beta" })

/** A chat request as a client writes it (fields the schema does not list included). */
const request = (fields: Readonly<Record<string, unknown>>): Wire.ChatCompletionRequest =>
  ({ model: "gemini-2.5-flash", messages: [{ role: "user", content: "Hi" }], ...fields }) as Wire.ChatCompletionRequest

const decodeAll = (payloads: ReadonlyArray<unknown>, candidates = 1) => {
  const decoder = Gemini.streamDecoder(upstream, "gemini-2.5-flash", 1700000000, candidates)
  const events: Array<StreamEvent.StreamEvent> = []
  let end: unknown = undefined
  for (const payload of payloads) {
    end = decoder.decode(typeof payload === "string" ? payload : JSON.stringify(payload), events)
    if (end !== undefined) break
  }
  return {
    chunks: events.map((e) => JSON.parse(e.data) as { choices: Array<Record<string, unknown>>; usage?: unknown }),
    end
  }
}

describe("Gemini request translation", () => {
  it("turns system prompts, turns, images, tool calls and results, tools and settings into generateContent", () => {
    const body = Gemini.toGemini(
      request({
        messages: [
          { role: "system", content: "You are a weather bot." },
          {
            role: "user",
            content: [
              { type: "text", text: "Weather where this was taken?" },
              { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } },
              { type: "image_url", image_url: { url: "https://example.com/photo.webp" } }
            ]
          },
          {
            role: "assistant",
            content: null,
            tool_calls: [
              { id: "call_0", type: "function", function: { name: "get_weather", arguments: '{"city":"Rome"}' } }
            ]
          },
          { role: "tool", tool_call_id: "call_0", content: '{"celsius":24}' },
          { role: "tool", tool_call_id: "call_0", content: "sunny" }
        ],
        temperature: 0.2,
        max_tokens: 256,
        stop: "END",
        n: 2,
        tools: [
          {
            type: "function",
            function: {
              name: "get_weather",
              description: "Weather of a city",
              parameters: {
                type: "object",
                properties: { city: { type: "string" } },
                required: ["city"],
                additionalProperties: false
              }
            }
          }
        ],
        tool_choice: { type: "function", function: { name: "get_weather" } }
      })
    )
    expect(body).toEqual({
      systemInstruction: { parts: [{ text: "You are a weather bot." }] },
      contents: [
        {
          role: "user",
          parts: [
            { text: "Weather where this was taken?" },
            { inlineData: { mimeType: "image/png", data: "iVBORw0KGgo=" } },
            { fileData: { mimeType: "image/webp", fileUri: "https://example.com/photo.webp" } }
          ]
        },
        { role: "model", parts: [{ functionCall: { name: "get_weather", args: { city: "Rome" } } }] },
        {
          role: "user",
          parts: [
            { functionResponse: { name: "get_weather", response: { celsius: 24 } } },
            { functionResponse: { name: "get_weather", response: { result: "sunny" } } }
          ]
        }
      ],
      generationConfig: { temperature: 0.2, maxOutputTokens: 256, stopSequences: ["END"], candidateCount: 2 },
      tools: [
        {
          functionDeclarations: [
            {
              name: "get_weather",
              description: "Weather of a city",
              parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] }
            }
          ]
        }
      ],
      toolConfig: { functionCallingConfig: { mode: "ANY", allowedFunctionNames: ["get_weather"] } }
    })
  })

  it("asks for structured output with responseMimeType and responseSchema", () => {
    const body = Gemini.toGemini(
      request({
        response_format: {
          type: "json_schema",
          json_schema: {
            name: "place",
            strict: true,
            schema: { type: "object", properties: { city: { type: "string" } }, additionalProperties: false }
          }
        }
      })
    )
    expect((body as Record<string, unknown>)["generationConfig"]).toEqual({
      responseMimeType: "application/json",
      responseSchema: { type: "object", properties: { city: { type: "string" } } }
    })
  })

  it("asks for JSON mode (json_object) with responseMimeType alone, and for text with neither", () => {
    const json = Gemini.toGemini(request({ response_format: { type: "json_object" }, temperature: 0 }))
    expect((json as Record<string, unknown>)["generationConfig"]).toEqual({
      temperature: 0,
      responseMimeType: "application/json"
    })
    const text = Gemini.toGemini(request({ response_format: { type: "text" } }))
    expect((text as Record<string, unknown>)["generationConfig"]).toBeUndefined()
  })

  it("turns embeddings inputs into batchEmbedContents requests", () => {
    expect(
      Gemini.toGeminiEmbeddings(
        { model: "text-embedding-004", input: ["a", "b"], dimensions: 64 },
        "text-embedding-004"
      )
    ).toEqual({
      requests: [
        { model: "models/text-embedding-004", content: { parts: [{ text: "a" }] }, outputDimensionality: 64 },
        { model: "models/text-embedding-004", content: { parts: [{ text: "b" }] }, outputDimensionality: 64 }
      ]
    })
  })
})

describe("Gemini answer translation", () => {
  it("turns the documented response into a chat completion with usage", () => {
    const completion = Gemini.fromGemini(
      {
        candidates: [
          { content: { role: "model", parts: [{ text: "1+1 equals 2." }] }, finishReason: "STOP", index: 0 }
        ],
        usageMetadata: { promptTokenCount: 15, candidatesTokenCount: 6, totalTokenCount: 21 },
        modelVersion: "gemini-2.5-flash",
        responseId: "Il0taoSYJ5Cez7"
      },
      "gemini-2.5-flash",
      1700000000
    )
    expect(completion).toEqual({
      id: "Il0taoSYJ5Cez7",
      object: "chat.completion",
      created: 1700000000,
      model: "gemini-2.5-flash",
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: "1+1 equals 2.", refusal: null },
          logprobs: null,
          finish_reason: "stop"
        }
      ],
      usage: { prompt_tokens: 15, completion_tokens: 6, total_tokens: 21, prompt_tokens_details: { cached_tokens: 0 } }
    })
  })

  it("turns function calls into tool calls, thinking into reasoning tokens, and safety stops into content_filter", () => {
    const called = Gemini.fromGemini(
      {
        candidates: [
          {
            content: {
              role: "model",
              parts: [
                { text: "thinking...", thought: true },
                { functionCall: { name: "get_weather", args: { city: "Rome" } } },
                { functionCall: { name: "get_time", args: {} } }
              ]
            },
            finishReason: "STOP"
          }
        ],
        usageMetadata: {
          promptTokenCount: 10,
          candidatesTokenCount: 4,
          thoughtsTokenCount: 20,
          cachedContentTokenCount: 8
        }
      },
      "g",
      1
    )
    expect(called?.choices[0]).toEqual({
      index: 0,
      message: {
        role: "assistant",
        content: null,
        refusal: null,
        tool_calls: [
          { id: "call_0", type: "function", function: { name: "get_weather", arguments: '{"city":"Rome"}' } },
          { id: "call_1", type: "function", function: { name: "get_time", arguments: "{}" } }
        ]
      },
      logprobs: null,
      finish_reason: "tool_calls"
    })
    expect(called?.usage).toEqual({
      prompt_tokens: 10,
      completion_tokens: 24,
      total_tokens: 34,
      prompt_tokens_details: { cached_tokens: 8 },
      completion_tokens_details: { reasoning_tokens: 20 }
    })
    const unsafe = Gemini.fromGemini({ candidates: [{ content: { parts: [] }, finishReason: "SAFETY" }] }, "g", 1)
    expect(unsafe?.choices[0]?.finish_reason).toBe("content_filter")
    const blocked = Gemini.fromGemini({ promptFeedback: { blockReason: "SAFETY" } }, "g", 1)
    expect(blocked?.choices[0]).toMatchObject({ message: { content: null }, finish_reason: "content_filter" })
    expect(["MAX_TOKENS", "RECITATION", "STOP"].map((r) => Gemini.finishReason(r, false))).toEqual([
      "length",
      "content_filter",
      "stop"
    ])
  })
})

describe("Gemini stream translation", () => {
  it("translates a text stream into chunks, ending at the finishReason with usage", () => {
    const { chunks, end } = decodeAll([
      {
        candidates: [{ content: { role: "model", parts: [{ text: "The" }] }, index: 0 }],
        modelVersion: "gemini-2.5-flash"
      },
      { candidates: [{ content: { role: "model", parts: [{ text: " sky is blue." }] }, index: 0 }] },
      {
        candidates: [{ content: { role: "model", parts: [{ text: "" }] }, finishReason: "STOP", index: 0 }],
        usageMetadata: { promptTokenCount: 5, candidatesTokenCount: 4, totalTokenCount: 9 }
      },
      { candidates: [{ content: { parts: [{ text: "ignored after the end" }] } }] }
    ])
    expect(chunks.map((c) => c.choices[0]?.["delta"] ?? null)).toEqual([
      { role: "assistant", content: "" },
      { content: "The" },
      { content: " sky is blue." },
      {},
      null
    ])
    expect(chunks[3]?.choices[0]?.["finish_reason"]).toBe("stop")
    expect(chunks[4]?.usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 4, total_tokens: 9 })
    expect(typeof end).toBe("symbol")
  })

  it("sends a function call whole as one tool-call delta, finishing with tool_calls", () => {
    const { chunks } = decodeAll([
      {
        candidates: [
          {
            content: { role: "model", parts: [{ functionCall: { name: "get_weather", args: { city: "Paris" } } }] },
            finishReason: "STOP"
          }
        ]
      }
    ])
    expect(chunks[1]?.choices[0]?.["delta"]).toEqual({
      tool_calls: [
        { index: 0, id: "call_0", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } }
      ]
    })
    expect(chunks[2]?.choices[0]?.["finish_reason"]).toBe("tool_calls")
  })

  it("with n = 2 ends only when both candidates have finished, however their finishes are spread over events", () => {
    const call = (name: string) => ({ functionCall: { name, args: {} } })
    const { chunks, end } = decodeAll(
      [
        {
          candidates: [
            { content: { role: "model", parts: [{ text: "Sunny" }, call("get_weather")] }, index: 0 },
            { content: { role: "model", parts: [call("get_time")] }, index: 1 }
          ]
        },
        // Candidate 0 finishes in an event without candidate 1: the stream goes on.
        { candidates: [{ content: { role: "model", parts: [] }, finishReason: "STOP", index: 0 }] },
        {
          candidates: [{ content: { role: "model", parts: [call("get_date")] }, finishReason: "STOP", index: 1 }],
          usageMetadata: { promptTokenCount: 5, candidatesTokenCount: 8, totalTokenCount: 13 }
        }
      ],
      2
    )
    expect(typeof end).toBe("symbol")
    const choices = chunks.map((c) => c.choices[0])
    expect(choices.slice(1)).toEqual([
      { index: 0, delta: { content: "Sunny" }, logprobs: null, finish_reason: null },
      {
        index: 0,
        delta: {
          tool_calls: [{ index: 0, id: "call_0", type: "function", function: { name: "get_weather", arguments: "{}" } }]
        },
        logprobs: null,
        finish_reason: null
      },
      {
        index: 1,
        delta: {
          tool_calls: [{ index: 0, id: "call_1", type: "function", function: { name: "get_time", arguments: "{}" } }]
        },
        logprobs: null,
        finish_reason: null
      },
      { index: 0, delta: {}, logprobs: null, finish_reason: "tool_calls" },
      // Candidate 1's second call is its tool call 1, whatever candidate 0 called.
      {
        index: 1,
        delta: {
          tool_calls: [{ index: 1, id: "call_2", type: "function", function: { name: "get_date", arguments: "{}" } }]
        },
        logprobs: null,
        finish_reason: null
      },
      { index: 1, delta: {}, logprobs: null, finish_reason: "tool_calls" },
      undefined
    ])
    expect(chunks.at(-1)?.usage).toMatchObject({ prompt_tokens: 5, completion_tokens: 8, total_tokens: 13 })
  })

  it("carries a function call's thoughtSignature as extra_content.google.thought_signature, whole and streamed, and back", () => {
    const part = { functionCall: { name: "get_weather", args: {} }, thoughtSignature: "c2lnLTE=" }
    const extra = { extra_content: { google: { thought_signature: "c2lnLTE=" } } }
    const whole = Gemini.fromGemini({ candidates: [{ content: { role: "model", parts: [part] } }] }, "g", 1)
    expect(whole?.choices[0]?.message).toMatchObject({ tool_calls: [extra] })
    const { chunks } = decodeAll([
      { candidates: [{ content: { role: "model", parts: [part] }, finishReason: "STOP" }] }
    ])
    expect(chunks[1]?.choices[0]?.["delta"]).toMatchObject({ tool_calls: [extra] })
    const body = Gemini.toGemini(
      request({
        messages: [
          { role: "user", content: "Weather?" },
          {
            role: "assistant",
            content: null,
            tool_calls: [
              { id: "call_0", type: "function", function: { name: "get_weather", arguments: "{}" }, ...extra },
              { id: "call_1", type: "function", function: { name: "get_time", arguments: "{}" } }
            ]
          }
        ]
      })
    ) as { contents: Array<unknown> }
    expect(body.contents[1]).toEqual({
      role: "model",
      parts: [part, { functionCall: { name: "get_time", args: {} } }]
    })
  })

  it("gives the first unsigned call of a turn the documented stand-in signature, for Gemini 3 and later only", () => {
    const history = request({
      messages: [
        { role: "user", content: "Weather?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "call_0", type: "function", function: { name: "get_weather", arguments: "{}" } },
            { id: "call_1", type: "function", function: { name: "get_time", arguments: "{}" } }
          ]
        },
        { role: "tool", tool_call_id: "call_0", content: "sunny" },
        { role: "tool", tool_call_id: "call_1", content: "noon" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            {
              id: "call_2",
              type: "function",
              function: { name: "get_weather", arguments: "{}" },
              extra_content: { google: { thought_signature: "c2lnLTE=" } }
            }
          ]
        }
      ]
    })
    const modelTurns = (model: string) =>
      (Gemini.toGemini(history, model) as { contents: Array<{ role: string; parts: Array<unknown> }> }).contents
        .filter((c) => c.role === "model")
        .map((c) => c.parts.map((p) => (p as { thoughtSignature?: string }).thoughtSignature))
    // Parallel calls: only the first is signed, as Gemini signs them; a call's own signature is kept.
    // The moving aliases (`-latest`) point at Gemini 3 models now: the same.
    for (const model of [
      "gemini-3-pro-preview",
      "models/gemini-3.1-flash",
      "gemini-4-argon",
      "gemini-flash-latest",
      "models/gemini-flash-lite-latest",
      "gemini-pro-latest"
    ]) {
      expect(modelTurns(model)).toEqual([[Gemini.SKIP_VALIDATION, undefined], ["c2lnLTE="]])
    }
    for (const model of ["gemini-2.5-flash", "gemini-2.5-flash-latest-x", "gemma-3-27b-it", ""]) {
      expect(modelTurns(model)).toEqual([[undefined, undefined], ["c2lnLTE="]])
    }
  })

  it("folds a thought signature into a call id in Anthropic's id alphabet, and unfolds exactly what it folded", () => {
    const signature = "c2ln+/8/vw=="
    const call = { id: "call_0", type: "function", extra_content: { google: { thought_signature: signature } } }
    const id = Gemini.foldedId(call)
    expect(id).toMatch(/^[a-zA-Z0-9_-]+$/)
    expect(Gemini.unfoldId(id)).toEqual({ id: "call_0", signature })
    for (const padded of ["YQ==", "YWI=", "YWJj", "+/+/"]) {
      expect(Gemini.unfoldId(Gemini.foldedId({ ...call, ...Gemini.signatureFields(padded) }))).toEqual({
        id: "call_0",
        signature: padded
      })
    }
    // Without a signature, or with one that is not padded base64 (it could not come back exactly): the id as it is.
    expect(Gemini.foldedId({ id: "call_1" })).toBe("call_1")
    expect(Gemini.foldedId({ ...call, ...Gemini.signatureFields("not base64!") })).toBe("call_0")
    expect(Gemini.foldedId({ ...call, ...Gemini.signatureFields("YQ") })).toBe("call_0")
    // Ids that fold nothing, or hold something that is not a folded signature, pass through whole.
    expect(Gemini.unfoldId("toolu_01A")).toEqual({ id: "toolu_01A", signature: undefined })
    expect(Gemini.unfoldId("a__thought__b.c")).toEqual({ id: "a__thought__b.c", signature: undefined })
    expect(Gemini.unfoldId(7)).toEqual({ id: 7, signature: undefined })
  })

  it("fails on an error payload mid-stream", () => {
    const { end } = decodeAll([
      { candidates: [{ content: { parts: [{ text: "Hi" }] } }] },
      { error: { code: 503, message: "The model is overloaded.", status: "UNAVAILABLE" } }
    ])
    expect(end).toMatchObject({
      _tag: "UpstreamError",
      retryable: true,
      message: "stream error: The model is overloaded."
    })
  })
})
