import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { scan, Scanned } from "../src/internal/jsonScan.js"

/** What `JSON.parse` makes of `text`, as the stream decoder judges a chunk. */
const reference = (text: string): "invalid" | "plain" | "closer" => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return "invalid"
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "invalid"
  const { error, usage } = value as { readonly error?: unknown; readonly usage?: unknown }
  return (error !== undefined && error !== null) || (typeof usage === "object" && usage !== null) ? "closer" : "plain"
}

/**
 * How the scan departs from the reference, if it does: it may never say Plain where parsing would find
 * more, nor Invalid where the text parses (Closer, "parse it to know", is always safe).
 */
const disagreement = (text: string): string | undefined => {
  const scanned = scan(text)
  const expected = reference(text)
  if (scanned === Scanned.Plain && expected !== "plain") return `Plain, but JSON.parse says ${expected}`
  if (scanned === Scanned.Invalid && expected !== "invalid") return `Invalid, but JSON.parse says ${expected}`
  if (expected === "closer" && scanned !== Scanned.Closer) return `${scanned}, but it carries an error or usage`
  return undefined
}

/** Characters that matter to JSON's grammar, and some that do not. */
const significant = fc.constantFrom(...'{}[]",:\\ \n\t0123456789-+.eEtrufalsn\u0000\u001fxé\ud800')

/** `text` with one character inserted, deleted or replaced at `at`. */
const mutate = (text: string, at: number, char: string, how: number): string => {
  const i = text.length === 0 ? 0 : at % text.length
  if (how === 0) return text.slice(0, i) + char + text.slice(i)
  if (how === 1) return text.slice(0, i) + text.slice(i + 1)
  return text.slice(0, i) + char + text.slice(i + 1)
}

const chunkLike = fc.record(
  {
    id: fc.string(),
    object: fc.constant("chat.completion.chunk"),
    choices: fc.array(fc.record({ index: fc.nat(), delta: fc.record({ content: fc.fullUnicodeString() }) })),
    usage: fc.oneof(fc.constant(null), fc.record({ prompt_tokens: fc.nat() }), fc.integer()),
    error: fc.oneof(fc.constant(null), fc.record({ message: fc.string() }), fc.boolean(), fc.string()),
    extra: fc.jsonValue({ maxDepth: 3 })
  },
  { requiredKeys: ["id"] }
)

describe("jsonScan", () => {
  it("agrees with JSON.parse on JSON of every shape, indented or not", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 5 }), fc.boolean(), (value, indent) => {
        expect(disagreement(JSON.stringify(value, null, indent ? 2 : undefined))).toBeUndefined()
      }),
      { numRuns: 2000, seed: 7 }
    )
  })

  it("agrees on chunk-like objects, with and without error and usage", () => {
    fc.assert(
      fc.property(chunkLike, (chunk) => {
        expect(disagreement(JSON.stringify(chunk))).toBeUndefined()
      }),
      { numRuns: 2000, seed: 11 }
    )
  })

  it("agrees on chunks with one character inserted, deleted or replaced", () => {
    fc.assert(
      fc.property(chunkLike, fc.nat(), significant, fc.nat({ max: 2 }), (chunk, at, char, how) => {
        expect(disagreement(mutate(JSON.stringify(chunk), at, char, how))).toBeUndefined()
      }),
      { numRuns: 20000, seed: 13 }
    )
  })

  it("agrees on arbitrary text", () => {
    fc.assert(
      fc.property(fc.string(), (text) => {
        expect(disagreement(text)).toBeUndefined()
      }),
      { numRuns: 2000, seed: 17 }
    )
  })

  it("tells the cases apart", () => {
    expect(scan('{"id":"x","choices":[{"delta":{"content":"hi"}}]}')).toBe(Scanned.Plain)
    expect(scan(' {"usage":null,"error":null} ')).toBe(Scanned.Plain)
    expect(scan('{"usage":{"prompt_tokens":1}}')).toBe(Scanned.Closer)
    expect(scan('{"error":{"message":"boom"}}')).toBe(Scanned.Closer)
    // A key written with escapes could spell "error": parsed to find out.
    expect(scan('{"\\u0065rror":1}')).toBe(Scanned.Closer)
    // Nested keys named so are content, not the chunk's own.
    expect(scan('{"choices":[{"error":1,"usage":{}}]}')).toBe(Scanned.Plain)
    expect(scan('{"id":"x"')).toBe(Scanned.Invalid)
    expect(scan('{"id":"x"}}')).toBe(Scanned.Invalid)
    expect(scan('[{"id":"x"}]')).toBe(Scanned.Invalid)
    expect(scan('{"id":01}')).toBe(Scanned.Invalid)
    expect(scan('{"id":"a\u0001"}')).toBe(Scanned.Invalid)
    expect(scan("")).toBe(Scanned.Invalid)
    // Deeper than the scan goes: left to JSON.parse.
    expect(scan(`{"a":${"[".repeat(100)}${"]".repeat(100)}}`)).toBe(Scanned.Closer)
  })
})
