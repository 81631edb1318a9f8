/**
 * The per-request lines written without the records they stand for: the same text `JSON.stringify`
 * and `Date.prototype.toISOString` make (the access line against Effect's loggers is checked in
 * `JsonLogger.test.ts`).
 */
import { describe, expect, it } from "@effect/vitest"
import type { Decision } from "@sluice/core"
import fc from "fast-check"
import * as Audit from "../src/internal/audit.js"
import { isoTime } from "../src/internal/isoTime.js"

/** The furthest `Date` reaches either side of 1970, in ms. */
const RANGE = 8.64e15

describe("isoTime", () => {
  it("is toISOString's text, for times in any order (the cached second changes back and forth)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.integer({ min: -RANGE, max: RANGE }),
            fc.integer({ min: 1_700_000_000_000, max: 1_700_000_003_000 }),
            fc.integer({ min: -2_000, max: 2_000 }),
            fc.double({ min: -1e13, max: 1e13, noNaN: true })
          ),
          { minLength: 1, maxLength: 20 }
        ),
        (times) => {
          for (const ms of times) expect(isoTime(ms)).toBe(new Date(ms).toISOString())
        }
      ),
      { numRuns: 500, seed: 11 }
    )
  })

  it("refuses what is not a time as toISOString does, and keeps working afterwards", () => {
    for (const ms of [Number.NaN, RANGE + 1, -RANGE - 1, Number.POSITIVE_INFINITY]) {
      expect(() => isoTime(ms)).toThrow(RangeError)
    }
    expect(isoTime(1_700_000_000_123)).toBe("2023-11-14T22:13:20.123Z")
  })
})

describe("the audit line", () => {
  const decision = fc.record({
    requestId: fc.string(),
    operation: fc.constantFrom("chat", "embeddings"),
    stream: fc.boolean(),
    pool: fc.string(),
    startedAt: fc.integer({ min: 0, max: 4_000_000_000_000 }),
    attempts: fc.array(fc.record({ upstream: fc.string(), latencyMs: fc.nat() }), { maxLength: 3 }),
    upstream: fc.option(fc.string(), { nil: undefined }),
    inputTokens: fc.option(fc.nat(), { nil: undefined }),
    error: fc.option(fc.string(), { nil: undefined })
  }) as unknown as fc.Arbitrary<Decision.Decision>

  it("is the JSON of the entry record, with its newline", () => {
    fc.assert(
      fc.property(
        decision,
        fc.option(fc.string(), { nil: undefined }),
        fc.oneof(fc.double(), fc.constant(0)),
        (d, key, costUsd) => {
          expect(Audit.lineOf(d, key, costUsd)).toBe(JSON.stringify(Audit.entryOf(d, key, costUsd)) + "\n")
        }
      ),
      { numRuns: 300, seed: 5 }
    )
  })

  it("with content, is the JSON of the entry record too", () => {
    const d = { requestId: "r", startedAt: 1_700_000_000_000 } as unknown as Decision.Decision
    const content = { request: { model: "m", messages: [] }, response: { id: "x" } }
    expect(Audit.lineOf(d, "team", 0.5, content)).toBe(JSON.stringify(Audit.entryOf(d, "team", 0.5, content)) + "\n")
  })
})
