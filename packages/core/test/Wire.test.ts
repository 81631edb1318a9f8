import { describe, expect, it } from "@effect/vitest"
import { Wire } from "../src/index.js"

describe("Wire.stringify", () => {
  it("writes what JSON.stringify writes for an ordinary request", () => {
    const request = { model: "m", messages: [{ role: "user", content: "hi" }], extra: { a: [1, null, "x"] } }
    expect(Wire.stringify(request)).toBe(JSON.stringify(request))
  })

  it("writes a value nested 100,000 deep, which JSON.stringify cannot, without overflowing the stack", () => {
    let deep: unknown = []
    for (let i = 1; i < 100_000; i++) deep = [deep]
    expect(() => JSON.stringify({ deep })).toThrow(RangeError)
    const text = Wire.stringify({ model: "m", deep })
    expect(text).toBe(`{"model":"m","deep":${"[".repeat(100_000)}${"]".repeat(100_000)}}`)
  })
})
