/**
 * The per-request lines written without the records they stand for: the same text `JSON.stringify`
 * and `Date.prototype.toISOString` make (the access line against Effect's loggers is checked in
 * `JsonLogger.test.ts`).
 */
import { describe, expect, it, vi } from "@effect/vitest"
import type { Decision } from "@sluice/core"
import fc from "fast-check"
import * as Audit from "../src/internal/audit.js"
import { isoTime } from "../src/internal/isoTime.mjs"
import * as Logging from "../src/Logging.js"

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

describe("the access lines' byte buffer", () => {
  /**
   * A buffer writing to an array of chunks, and the text they hold: the chunks themselves, kept as an
   * asynchronous stream keeps them (a buffer written to again after it was handed over would show).
   */
  const gatherer = () => {
    const chunks: Array<Uint8Array> = []
    const lines = Logging.byteLines((chunk) => void chunks.push(chunk))
    return { ...lines, chunks, text: () => Buffer.concat(chunks).toString("utf8") }
  }

  it("writes every line whole and in order, short and long, in any script, each with its newline", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            { weight: 8, arbitrary: fc.string({ unit: "grapheme", maxLength: 400 }) },
            { weight: 1, arbitrary: fc.string({ unit: "grapheme-composite", minLength: 8_000, maxLength: 30_000 }) }
          ),
          { maxLength: 300 }
        ),
        (texts) => {
          const g = gatherer()
          for (const text of texts) g.line(text)
          g.flush()
          expect(g.text()).toBe(texts.map((t) => `${t}\n`).join(""))
        }
      ),
      // No shrinking: lines this long make it slow, and the first failure says enough.
      { numRuns: 40, seed: 3, endOnFailure: true }
    )
  })

  it("gathers lines into one write, made within 10 ms of the first or once the next might not fit", () => {
    vi.useFakeTimers()
    try {
      const g = gatherer()
      g.line("first")
      g.line("second")
      vi.advanceTimersByTime(9)
      expect(g.chunks).toEqual([])
      vi.advanceTimersByTime(1)
      expect(g.chunks.map((c) => Buffer.from(c).toString())).toEqual(["first\nsecond\n"])
      // Lines of 1,000 bytes in a buffer of 64 KB: 63 fit; the next might not (3 bytes a character at
      // most), and sends those before it at once.
      const line = "x".repeat(999)
      for (let i = 0; i < 63; i++) g.line(line)
      expect(g.chunks).toHaveLength(1)
      g.line(line)
      expect(g.chunks).toHaveLength(2)
      expect(g.chunks[1]!.length).toBe(63 * 1000)
      vi.advanceTimersByTime(10)
      expect(g.chunks).toHaveLength(3)
      expect(g.chunks[2]!.length).toBe(1000)
      // A line longer than the buffer goes out on its own, after what was waiting.
      g.line("short")
      g.line("y".repeat(70_000))
      expect(g.chunks.slice(3).map((c) => c.length)).toEqual([6, 70_001])
    } finally {
      vi.useRealTimers()
    }
  })
})
