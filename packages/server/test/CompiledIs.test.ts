import { describe, expect, it } from "@effect/vitest"
import { Wire } from "@sluice/core"
import { Arbitrary, FastCheck as fc, Schema } from "effect"
import * as CompiledIs from "../src/internal/compiledIs.js"
import { MessagesRequest, CountTokensRequest } from "../src/Messages.js"
import { ResponsesRequest } from "../src/Responses.js"

const schemas = {
  ChatCompletionRequest: Wire.ChatCompletionRequest,
  EmbeddingsRequest: Wire.EmbeddingsRequest,
  MessagesRequest,
  CountTokensRequest,
  ResponsesRequest
} as const

/** A JSON-like value, or `undefined` (a key present with nothing in it). */
const anyValue = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constant(undefined))

/** `document` with the value at one path of it (chosen by `pick`) replaced by `value`. */
const mutate = (document: unknown, pick: number, value: unknown): unknown => {
  const copy = structuredClone(document) as Record<string, unknown>
  const paths: Array<[Record<string, unknown>, string]> = []
  const walk = (node: unknown) => {
    if (typeof node !== "object" || node === null) return
    for (const key of Object.keys(node)) {
      paths.push([node as Record<string, unknown>, key])
      walk((node as Record<string, unknown>)[key])
    }
  }
  walk(copy)
  if (paths.length === 0) return value
  const [parent, key] = paths[pick % paths.length]!
  parent[key] = value
  return copy
}

describe("CompiledIs", () => {
  for (const [name, schema] of Object.entries(schemas)) {
    describe(`${name}`, () => {
      const compiled = CompiledIs.compile(schema.ast)
      const is = Schema.is(schema as Schema.Schema<unknown, unknown>)

      it("compiles (the gateway's fast path is in use for it)", () => {
        expect(compiled).toBeDefined()
      })

      it("accepts every value the schema's arbitrary makes, as Schema.is does", () => {
        fc.assert(
          fc.property(Arbitrary.make(schema as Schema.Schema<unknown, unknown>), (value) => {
            expect(is(value)).toBe(true)
            expect(compiled!(value)).toBe(true)
          }),
          { numRuns: 300 }
        )
      })

      it("agrees with Schema.is on valid bodies with one value replaced anywhere", () => {
        fc.assert(
          fc.property(
            Arbitrary.make(schema as Schema.Schema<unknown, unknown>),
            fc.nat(),
            anyValue,
            (value, pick, replacement) => {
              const mutated = mutate(value, pick, replacement)
              expect(compiled!(mutated)).toBe(is(mutated))
            }
          ),
          { numRuns: 1000 }
        )
      })

      it("agrees with Schema.is on arbitrary JSON", () => {
        fc.assert(
          fc.property(fc.jsonValue({ maxDepth: 4 }), (value) => {
            expect(compiled!(value)).toBe(is(value))
          }),
          { numRuns: 500 }
        )
      })
    })
  }

  it("rejects what the schema rejects, field by field", () => {
    const chat = CompiledIs.compile(Wire.ChatCompletionRequest.ast)!
    const ok = { model: "m", messages: [{ role: "user", content: "hi" }] }
    expect(chat(ok)).toBe(true)
    expect(chat({ ...ok, model: "" })).toBe(false)
    expect(chat({ ...ok, messages: [] })).toBe(false)
    expect(chat({ ...ok, messages: [{ role: "robot", content: "hi" }] })).toBe(false)
    expect(chat({ ...ok, max_tokens: 1.5 })).toBe(false)
    expect(chat({ ...ok, max_tokens: null, stream: null, extra: { any: [1] } })).toBe(true)
    expect(chat([ok])).toBe(false)
    expect(chat(null)).toBe(false)
  })

  it("leaves a schema with a node it does not compile to Schema.is", () => {
    expect(CompiledIs.compile(Schema.Record({ key: Schema.String, value: Schema.Number }).ast)).toBeUndefined()
    expect(CompiledIs.compile(Schema.NumberFromString.ast)).toBeUndefined()
  })
})
