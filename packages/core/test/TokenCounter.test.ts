import { afterAll, describe, expect, it, layer } from "@effect/vitest"
import { Effect } from "effect"
import type { Tiktoken } from "tiktoken"
import { get_encoding } from "tiktoken"
import type { Guard, Wire } from "../src/index.js"
import { Router, TokenCounter, Topology } from "../src/index.js"
import { answer, completion, guards, provider, routerLayer, upstream } from "./fixtures.js"

// Reference encoders, loaded once for the file: the WASM tables take a while to build.
const reference = new Map<string, Tiktoken>()
afterAll(() => reference.forEach((enc) => enc.free()))

/** Token counts straight from tiktoken, to check the counter against. */
const encode = (encoding: "o200k_base" | "cl100k_base", texts: ReadonlyArray<string>): Array<number> => {
  let enc = reference.get(encoding)
  if (enc === undefined) {
    enc = get_encoding(encoding)
    reference.set(encoding, enc)
  }
  return texts.map((text) => enc.encode_ordinary(text).length)
}

const conversation: Wire.ChatCompletionRequest = {
  model: "gpt-4o",
  messages: [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "Hello, world!" }
  ]
}

const count = (request: Wire.ChatCompletionRequest, model: string) =>
  Effect.flatMap(TokenCounter.TokenCounter, (counter) => counter.count(request, model))

type Part = { readonly type: string; readonly [key: string]: unknown }

const question = { type: "text", text: "What is in this picture?" }

const withParts = (parts: ReadonlyArray<Part>): Wire.ChatCompletionRequest => ({
  model: "gpt-4o",
  messages: [{ role: "user", content: parts }]
})

const image = (url: string, detail?: string): Part => ({
  type: "image_url",
  image_url: detail === undefined ? { url } : { url, detail }
})

/** A data URL holding just enough of an image file for its header to give the size. */
const dataUrl = (mime: string, bytes: ReadonlyArray<number>) =>
  `data:${mime};base64,${Buffer.from([...bytes, ...Array.from({ length: 32 }, () => 0)]).toString("base64")}`
const ascii = (text: string) => [...text].map((c) => c.charCodeAt(0))
const be16 = (n: number) => [n >>> 8, n & 0xff]
const be32 = (n: number) => [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]
const le16 = (n: number) => [n & 0xff, n >>> 8]
const le24 = (n: number) => [n & 0xff, (n >>> 8) & 0xff, n >>> 16]
const png = (width: number, height: number) =>
  dataUrl("image/png", [
    0x89,
    ...ascii("PNG\r\n"),
    0x1a,
    0x0a,
    ...be32(13),
    ...ascii("IHDR"),
    ...be32(width),
    ...be32(height)
  ])
const gif = (width: number, height: number) =>
  dataUrl("image/gif", [...ascii("GIF89a"), ...le16(width), ...le16(height)])
/** A JPEG whose frame header comes after an APP0 (JFIF) segment and APP1 segments (EXIF) of `exif` bytes each. */
const jpeg = (width: number, height: number, ...exif: ReadonlyArray<number>) =>
  dataUrl("image/jpeg", [
    0xff,
    0xd8,
    0xff,
    0xe0,
    ...be16(16),
    ...ascii("JFIF"),
    ...Array.from({ length: 10 }, () => 0),
    ...exif.flatMap((bytes) => [0xff, 0xe1, ...be16(bytes + 2), ...Array.from({ length: bytes }, () => 0)]),
    0xff,
    0xc0,
    ...be16(17),
    8,
    ...be16(height),
    ...be16(width),
    3
  ])
const riff = (chunk: string, body: ReadonlyArray<number>) =>
  dataUrl("image/webp", [...ascii("RIFF"), ...le24(30), 0, ...ascii("WEBP"), ...ascii(chunk), ...le24(10), 0, ...body])
const webpVp8x = (width: number, height: number) => riff("VP8X", [0, 0, 0, 0, ...le24(width - 1), ...le24(height - 1)])
const webpVp8 = (width: number, height: number) =>
  riff("VP8 ", [0, 0, 0, 0x9d, 0x01, 0x2a, ...le16(width), ...le16(height)])
const webpVp8l = (width: number, height: number) => {
  const bits = (width - 1) | ((height - 1) << 14)
  return riff("VP8L", [0x2f, bits & 0xff, (bits >>> 8) & 0xff, (bits >>> 16) & 0xff, (bits >>> 24) & 0xff])
}

/**
 * A request as the gateway decodes it: fields the schema does not describe (a tool's parameters, a
 * message's tool calls) are kept, though the static type does not show them.
 */
const decoded = (body: Readonly<Record<string, unknown>>) => body as Wire.ChatCompletionRequest

/** OpenAI's cookbook example of a request with a tool. */
const weather = decoded({
  model: "gpt-4o",
  messages: [
    { role: "system", content: "You are a helpful assistant that can answer to questions about the weather." },
    { role: "user", content: "What's the weather like in San Francisco?" }
  ],
  tools: [
    {
      type: "function",
      function: {
        name: "get_current_weather",
        description: "Get the current weather in a given location",
        parameters: {
          type: "object",
          properties: {
            location: { type: "string", description: "The city and state, e.g. San Francisco, CA" },
            unit: { type: "string", description: "The unit of temperature to return", enum: ["celsius", "fahrenheit"] }
          },
          required: ["location"]
        }
      }
    }
  ]
})

// One counter for the whole block, as in a server: built once, freed when the block ends.
layer(TokenCounter.layer)("TokenCounter.layer (tiktoken)", (it) => {
  it.effect("counts a gpt-4o conversation exactly: 3 per message + role + content, plus 3 to prime the reply", () =>
    Effect.gen(function* () {
      const [system, systemText, user, userText] = encode("o200k_base", [
        "system",
        "You are a helpful assistant.",
        "user",
        "Hello, world!"
      ])
      // By hand: o200k_base encodes "system" and "user" as 1 token each, the system prompt as 6
      // ("You", " are", " a", " helpful", " assistant", ".") and "Hello, world!" as 4.
      expect([system, systemText, user, userText]).toEqual([1, 6, 1, 4])
      const expected = 3 + (3 + system! + systemText!) + (3 + user! + userText!)
      expect(expected).toBe(21)
      expect(yield* count(conversation, "gpt-4o")).toEqual({ tokens: 21, exact: true })
    })
  )

  it.effect("counts a message name as one token plus its text", () =>
    Effect.gen(function* () {
      const [name] = encode("o200k_base", ["alice"])
      const named: Wire.ChatCompletionRequest = {
        ...conversation,
        messages: [conversation.messages[0]!, { role: "user", content: "Hello, world!", name: "alice" }]
      }
      expect(yield* count(named, "gpt-4o")).toEqual({ tokens: 21 + 1 + name!, exact: true })
    })
  )

  it.effect("counts gpt-4 with cl100k_base, exactly", () =>
    Effect.gen(function* () {
      const counts = encode("cl100k_base", ["system", "You are a helpful assistant.", "user", "Hello, world!"])
      const expected = 3 + 2 * 3 + counts.reduce((a, b) => a + b, 0)
      expect(yield* count(conversation, "gpt-4-turbo")).toEqual({ tokens: expected, exact: true })
    })
  )

  it.effect("counts a provider-prefixed OpenAI model exactly and any other model as an o200k estimate", () =>
    Effect.gen(function* () {
      expect(yield* count(conversation, "openai/gpt-4o")).toEqual({ tokens: 21, exact: true })
      expect(yield* count(conversation, "claude-3-5-sonnet-latest")).toEqual({ tokens: 21, exact: false })
      expect(yield* count(conversation, "llama3.1:8b")).toEqual({ tokens: 21, exact: false })
    })
  )

  it.effect("counts an image of unknown size at the most its detail can cost: 85 low, 1445 high or auto", () =>
    Effect.gen(function* () {
      const textOnly = yield* count(withParts([question]), "gpt-4o")
      const extra = (parts: ReadonlyArray<Part>) =>
        Effect.map(count(withParts([question, ...parts]), "gpt-4o"), (c) => c.tokens - textOnly.tokens)
      const url = "https://example.com/cat.png"
      expect(yield* extra([image(url, "low")])).toBe(85)
      // 2048 × 768 after scaling: 4 × 2 tiles, the most an image can take: 85 + 170 × 8.
      expect(yield* extra([image(url, "high")])).toBe(1445)
      expect(yield* extra([image(url)])).toBe(1445)
      expect(yield* extra([image(url, "low"), image(url, "auto")])).toBe(85 + 1445)
      // The Responses API's shape counts the same.
      expect(yield* extra([{ type: "input_image", image_url: url, detail: "low" }])).toBe(85)
      // The text part counts like the same string content.
      const asString = yield* count({ model: "gpt-4o", messages: [{ role: "user", content: question.text }] }, "gpt-4o")
      expect(textOnly.tokens).toBe(asString.tokens)
    })
  )

  it.effect("counts an image a data URL holds by OpenAI's 512 px tiles, reading its size from the header", () =>
    Effect.gen(function* () {
      const textOnly = yield* count(withParts([question]), "gpt-4o")
      const extra = (url: string, detail?: string) =>
        Effect.map(count(withParts([question, image(url, detail)]), "gpt-4o"), (c) => c.tokens - textOnly.tokens)
      // OpenAI's examples: 1024² is scaled to 768² (4 tiles); 2048 × 4096 to 1024 × 2048, then to
      // 768 × 1536 (6 tiles).
      expect(yield* extra(png(1024, 1024), "high")).toBe(85 + 170 * 4)
      expect(yield* extra(png(2048, 4096), "high")).toBe(85 + 170 * 6)
      expect(yield* extra(png(2048, 4096), "low")).toBe(85)
      expect(yield* extra(png(512, 512))).toBe(85 + 170)
      expect(yield* extra(png(513, 512))).toBe(85 + 170 * 2)
      // 4096 × 1024 fits 2048 as 2048 × 512: its short side is under 768, so 4 × 1 tiles.
      expect(yield* extra(png(4096, 1024))).toBe(85 + 170 * 4)
      expect(yield* extra(png(2048, 768))).toBe(1445)
      // Each format's header: GIF 300 × 200 is one tile; JPEG 640 × 480 two; WebP 1500 × 1000 is
      // scaled to 1152 × 768, six; lossy WebP 700 × 500 two; lossless 100 × 50 one.
      expect(yield* extra(gif(300, 200))).toBe(85 + 170)
      expect(yield* extra(jpeg(640, 480))).toBe(85 + 170 * 2)
      // A JPEG's size may sit behind an EXIF block: it is searched for up to 64 KiB in.
      expect(yield* extra(jpeg(640, 480, 20_000))).toBe(85 + 170 * 2)
      expect(yield* extra(jpeg(640, 480, 60_000, 10_000))).toBe(1445)
      expect(yield* extra(webpVp8x(1500, 1000))).toBe(85 + 170 * 6)
      expect(yield* extra(webpVp8(700, 500))).toBe(85 + 170 * 2)
      expect(yield* extra(webpVp8l(100, 50))).toBe(85 + 170)
      // A header that cannot be read leaves the size unknown.
      expect(yield* extra("data:image/png;base64,AAAA")).toBe(1445)
    })
  )

  it.effect(
    "counts images by each family's documented rule: gpt-4o-mini's 2833 + 5667 per tile, Claude's w × h / 750",
    () =>
      Effect.gen(function* () {
        const extra = (model: string, part: Part) =>
          Effect.gen(function* () {
            const textOnly = yield* count(withParts([question]), model)
            const withImage = yield* count(withParts([question, part]), model)
            return withImage.tokens - textOnly.tokens
          })
        expect(yield* extra("gpt-4o-mini", image(png(1024, 1024), "low"))).toBe(2833)
        expect(yield* extra("gpt-4o-mini", image(png(1024, 1024), "high"))).toBe(2833 + 5667 * 4)
        expect(yield* extra("gpt-4-turbo", image(png(1024, 1024), "high"))).toBe(765)
        // Claude: 1000 × 1000 / 750; 1092² ≈ 1590 as Anthropic's table says; larger ones are scaled down
        // to about 1600; an unknown size counts that ceiling. `detail` does not apply.
        expect(yield* extra("claude-sonnet-4-5", image(png(1000, 1000), "low"))).toBe(1334)
        expect(yield* extra("anthropic/claude-3-5-haiku", image(png(1092, 1092)))).toBe(1590)
        expect(yield* extra("claude-sonnet-4-5", image(png(4000, 2000)))).toBe(1600)
        expect(yield* extra("claude-sonnet-4-5", image("https://example.com/cat.png", "low"))).toBe(1600)
      })
  )

  it.effect(
    "counts OpenAI's cookbook weather tool at the 101 prompt tokens the API reported for gpt-4o, 105 for gpt-4",
    () =>
      Effect.gen(function* () {
        // The example of OpenAI's "How to count tokens with tiktoken", with the API's prompt_tokens.
        expect(yield* count(weather, "gpt-4o")).toEqual({ tokens: 101, exact: true })
        expect(yield* count(weather, "gpt-4")).toEqual({ tokens: 105, exact: true })
        // The same definitions as legacy `functions` count the same.
        const { tools, ...rest } = weather
        const legacy = { ...rest, functions: tools!.map((t) => t.function) }
        expect(yield* count(legacy, "gpt-4o")).toEqual({ tokens: 101, exact: true })
      })
  )

  it.effect(
    "counts a tool by the cookbook's rule: 7 + name:description per function, 12 at the end, nested schemas as JSON",
    () =>
      Effect.gen(function* () {
        const bare = [{ type: "function", function: { name: "get_time" } }]
        const [nameOnly] = encode("o200k_base", ["get_time:"])
        expect(yield* count({ ...conversation, tools: bare }, "gpt-4o")).toEqual({
          tokens: 21 + 7 + nameOnly! + 12,
          exact: true
        })
        // What the rule has no place for (items, nested properties) counts as its JSON text.
        const nested = [
          {
            type: "function",
            function: {
              name: "tag",
              description: "Tag a photo.",
              parameters: {
                type: "object",
                properties: { tags: { type: "array", description: "The tags.", items: { type: "string" } } },
                required: ["tags"]
              }
            }
          }
        ]
        const [line, property, items] = encode("o200k_base", [
          "tag:Tag a photo",
          "tags:array:The tags",
          JSON.stringify({ items: { type: "string" } })
        ])
        expect(yield* count({ ...conversation, tools: nested }, "gpt-4o")).toEqual({
          tokens: 21 + 7 + line! + 3 + 3 + property! + items! + 12,
          exact: true
        })
      })
  )

  it.effect("counts a tool result's call id and function name, and a response_format JSON schema", () =>
    Effect.gen(function* () {
      const call = { id: "call_abc123", type: "function", function: { name: "get_time", arguments: "{}" } }
      const chat = decoded({
        model: "gpt-4o",
        messages: [
          { role: "user", content: "What time is it?" },
          { role: "assistant", content: null, tool_calls: [call] },
          { role: "tool", tool_call_id: "call_abc123", content: "12:00" }
        ]
      })
      const [user, question, assistant, calls, tool, id, name, answer] = encode("o200k_base", [
        "user",
        "What time is it?",
        "assistant",
        JSON.stringify([call]),
        "tool",
        "call_abc123",
        "get_time",
        "12:00"
      ])
      const messages = 3 + (3 + user! + question!) + (3 + assistant! + calls!) + (3 + tool! + answer!)
      expect(yield* count(chat, "gpt-4o")).toEqual({ tokens: messages + id! + 1 + name!, exact: true })

      const jsonSchema = { name: "answer", strict: true, schema: { type: "object", properties: {} } }
      const [schema] = encode("o200k_base", [JSON.stringify(jsonSchema)])
      const structured = { ...conversation, response_format: { type: "json_schema" as const, json_schema: jsonSchema } }
      expect(yield* count(structured, "gpt-4o")).toEqual({ tokens: 21 + schema!, exact: true })
    })
  )

  it.effect("gives the same count for a long message the second time (memoized)", () =>
    Effect.gen(function* () {
      const long = "The quick brown fox jumps over the lazy dog. ".repeat(20)
      const [role, content] = encode("o200k_base", ["user", long])
      const request: Wire.ChatCompletionRequest = { model: "gpt-4o", messages: [{ role: "user", content: long }] }
      const expected = { tokens: 3 + 3 + role! + content!, exact: true }
      expect(yield* count(request, "gpt-4o")).toEqual(expected)
      expect(yield* count(request, "gpt-4o")).toEqual(expected)
    })
  )
})

describe("TokenCounter.layerEstimate", () => {
  it.effect("estimates about 4 characters a token, never exact", () =>
    Effect.gen(function* () {
      const request: Wire.ChatCompletionRequest = {
        model: "gpt-4o",
        messages: [{ role: "user", content: "a".repeat(400) }]
      }
      // 3 priming + 3 framing + ceil(4 / 4) for "user" + 400 / 4 for the content
      expect(yield* count(request, "gpt-4o")).toEqual({ tokens: 107, exact: false })
      expect(TokenCounter.estimateText("abcde")).toBe(2)
      expect(TokenCounter.estimateText("")).toBe(0)
    }).pipe(Effect.provide(TokenCounter.layerEstimate))
  )

  it.effect("counts images and tools by the same rules as the exact counter, estimating only their text", () =>
    Effect.gen(function* () {
      const textOnly = yield* count(withParts([question]), "gpt-4o")
      const withImages = yield* count(
        withParts([question, image("https://example.com/a.png"), image(png(1024, 1024))]),
        "gpt-4o"
      )
      expect(withImages.tokens - textOnly.tokens).toBe(1445 + 765)
      const mini = yield* count(withParts([question, image(png(1024, 1024), "low")]), "gpt-4o-mini")
      expect(mini.tokens - textOnly.tokens).toBe(2833)
      // The weather tool: 7 + ceil(63 / 4) for "get_current_weather:Get the current weather in a given
      // location", 3, then per property 3 + its line (ceil(58 / 4), ceil(45 / 4)), the enum
      // -3 + (3 + ceil(7 / 4)) + (3 + ceil(10 / 4)), and 12.
      const { tools: _tools, ...plain } = weather
      const toolTokens = (yield* count(weather, "gpt-4o")).tokens - (yield* count(plain, "gpt-4o")).tokens
      expect(toolTokens).toBe(7 + 16 + 3 + (3 + 15) + (3 + 12) + (-3 + 5 + 6) + 12)
    }).pipe(Effect.provide(TokenCounter.layerEstimate))
  )

  it.effect("counts tool definitions nested 100,000 deep as their JSON text, without overflowing the stack", () =>
    Effect.gen(function* () {
      // Built without recursion: a value this deep is more than JSON.stringify can write.
      let deep: unknown = []
      for (let i = 1; i < 100_000; i++) deep = [deep]
      const text = "[".repeat(100_000) + "]".repeat(100_000)
      const tools = [
        // A nested schema, an unknown keyword, an enum value and a tool that is not a function.
        {
          type: "function",
          function: { name: "f", parameters: { type: "object", properties: { x: { items: deep } } } }
        },
        { type: "function", function: { name: "g", parameters: { $defs: deep } } },
        { type: "function", function: { name: "h", parameters: { properties: { y: { enum: [deep] } } } } },
        { type: "custom", custom: deep }
      ]
      const request = decoded({ ...conversation, tools })
      const { tokens } = yield* count(request, "gpt-4o")
      const texts = [`{"items":${text}}`, `{"$defs":${text}}`, text, `{"type":"custom","custom":${text}}`]
      const deepTokens = texts.reduce((sum, t) => sum + Math.ceil(t.length / 4), 0)
      expect(tokens).toBeGreaterThan(deepTokens)
      expect(tokens).toBeLessThan(deepTokens + 100)
    }).pipe(Effect.provide(TokenCounter.layerEstimate))
  )
})

describe("TokenCounter.encodingFor", () => {
  it("maps OpenAI model families to their encodings and everything else to an o200k estimate", () => {
    expect(TokenCounter.encodingFor("gpt-4o-mini")).toEqual({ encoding: "o200k_base", exact: true })
    expect(TokenCounter.encodingFor("o3-mini")).toEqual({ encoding: "o200k_base", exact: true })
    expect(TokenCounter.encodingFor("gpt-3.5-turbo")).toEqual({ encoding: "cl100k_base", exact: true })
    expect(TokenCounter.encodingFor("text-embedding-3-small")).toEqual({ encoding: "cl100k_base", exact: true })
    expect(TokenCounter.encodingFor("mistral-large")).toEqual({ encoding: "o200k_base", exact: false })
  })

  it.effect(
    "estimates tool calls, a legacy function call and a JSON schema nested 100,000 deep without overflowing the stack",
    () =>
      Effect.gen(function* () {
        let deep: unknown = []
        for (let i = 1; i < 100_000; i++) deep = [deep]
        const text = "[".repeat(100_000) + "]".repeat(100_000)
        const request = {
          model: "gpt-4o",
          messages: [
            { role: "assistant", content: null, tool_calls: [deep], function_call: deep },
            { role: "user", content: "hi" }
          ],
          response_format: { type: "json_schema", json_schema: deep }
        } as unknown as Wire.ChatCompletionRequest
        const { tokens } = yield* count(request, "gpt-4o")
        // Three deep texts (one inside the tool-call array), each about 200,000 characters.
        expect(tokens).toBeGreaterThan(3 * Math.ceil(text.length / 4))
        expect(tokens).toBeLessThan(3 * Math.ceil(text.length / 4) + 100)
      }).pipe(Effect.provide(TokenCounter.layerEstimate))
  )
})

describe("counting by the upstream's provider (TokenCounter.Rules)", () => {
  const picture = withParts([question, image(png(1000, 1000))])
  // The text and framing both rules share: 3 priming + 3 per message + ceil(4 / 4) for the role
  // + ceil(24 / 4) for the question.
  const text = 3 + 3 + 1 + 6

  it("counts images by Anthropic's and Gemini's documented rules, and never calls a count exact", () => {
    expect(TokenCounter.estimateAs(picture, "claude-sonnet-4", "anthropic")).toEqual({
      tokens: text + Math.ceil((1000 * 1000) / 750),
      exact: false
    })
    // Past 384 px a side: 258 per 768 px tile (2 × 2).
    expect(TokenCounter.estimateAs(picture, "gemini-2.5-flash", "gemini")).toEqual({
      tokens: text + 258 * 4,
      exact: false
    })
    expect(
      TokenCounter.estimateAs(withParts([question, image(png(300, 200))]), "gemini-2.5-flash", "gemini").tokens
    ).toBe(text + 258)
    // A local model's tokenizer is unknown: the estimate, marked as one.
    expect(TokenCounter.estimateAs(conversation, "llama3.1", "estimate").exact).toBe(false)
  })

  it.effect("checks a context window and reserves budgets with the count of the upstream's own rules", () => {
    const admitted: Array<{ upstream: string; promptTokens: number }> = []
    const recording: Guard.Guard = {
      name: "recording",
      check: () => undefined,
      admit: (attempt) => {
        admitted.push({ upstream: attempt.upstream.id, promptTokens: attempt.promptTokens })
        return () => {}
      }
    }
    const pools = [
      Topology.pool({
        id: "vision",
        models: ["gpt-4o"],
        upstreams: [
          // OpenAI counts this picture as 765 tokens (4 tiles); Claude as 1334: it does not fit here.
          upstream("claude", { tokens: "anthropic", model: "claude-sonnet-4", contextWindow: 1200 }),
          upstream("gemini", { tokens: "gemini", model: "gemini-2.5-flash", contextWindow: 1200 }),
          upstream("gpt", { contextWindow: 1200 })
        ]
      })
    ]
    const stub = provider({ chat: (u) => Effect.succeed(answer(completion(u.id))) })
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const { decision } = yield* router.chat({ ...picture, max_tokens: 10 })
      expect(decision.excluded).toContainEqual({
        upstream: "claude",
        stage: "context-window",
        reason: `needs ${text + 1334 + 10} tokens (anthropic rules, an estimate), context window is 1200`
      })
      expect(decision).toMatchObject({
        upstream: "gemini",
        promptTokens: text + 258 * 4,
        promptTokensExact: false,
        promptTokensRules: "gemini"
      })
      expect(admitted).toEqual([{ upstream: "gemini", promptTokens: text + 258 * 4 }])
    }).pipe(Effect.provide(routerLayer(pools, { provider: stub, guards: guards(recording) })))
  })
})
