import { afterAll, describe, expect, it, layer } from "@effect/vitest"
import { Effect } from "effect"
import type { Tiktoken } from "tiktoken"
import { get_encoding } from "tiktoken"
import type { Wire } from "../src/index.js"
import { TokenCounter } from "../src/index.js"

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

  it.effect("adds 85 tokens for each image part", () =>
    Effect.gen(function* () {
      const text = { type: "text", text: "What is in this picture?" }
      const image = { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }
      const withParts = (parts: ReadonlyArray<{ readonly type: string }>): Wire.ChatCompletionRequest => ({
        model: "gpt-4o",
        messages: [{ role: "user", content: parts }]
      })
      const textOnly = yield* count(withParts([text]), "gpt-4o")
      const oneImage = yield* count(withParts([text, image]), "gpt-4o")
      const twoImages = yield* count(withParts([text, image, image]), "gpt-4o")
      expect(oneImage.tokens - textOnly.tokens).toBe(85)
      expect(twoImages.tokens - textOnly.tokens).toBe(170)
      // The text part counts like the same string content.
      const asString = yield* count(
        { model: "gpt-4o", messages: [{ role: "user", content: "What is in this picture?" }] },
        "gpt-4o"
      )
      expect(textOnly.tokens).toBe(asString.tokens)
    })
  )

  it.effect("counts tool definitions as their JSON text", () =>
    Effect.gen(function* () {
      const tools = [{ type: "function", function: { name: "get_weather" } }]
      const [toolTokens] = encode("o200k_base", [JSON.stringify(tools)])
      expect(yield* count({ ...conversation, tools }, "gpt-4o")).toEqual({ tokens: 21 + toolTokens!, exact: true })
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
})

describe("TokenCounter.encodingFor", () => {
  it("maps OpenAI model families to their encodings and everything else to an o200k estimate", () => {
    expect(TokenCounter.encodingFor("gpt-4o-mini")).toEqual({ encoding: "o200k_base", exact: true })
    expect(TokenCounter.encodingFor("o3-mini")).toEqual({ encoding: "o200k_base", exact: true })
    expect(TokenCounter.encodingFor("gpt-3.5-turbo")).toEqual({ encoding: "cl100k_base", exact: true })
    expect(TokenCounter.encodingFor("text-embedding-3-small")).toEqual({ encoding: "cl100k_base", exact: true })
    expect(TokenCounter.encodingFor("mistral-large")).toEqual({ encoding: "o200k_base", exact: false })
  })
})
