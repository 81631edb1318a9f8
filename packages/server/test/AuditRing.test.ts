import { describe, expect, it, vi } from "@effect/vitest"
import { Decision } from "@sluice/core"
import { FastCheck as fc } from "effect"
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { createConnection, createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { jsonAccessLine } from "../src/internal/accessLine.js"
import * as Audit from "../src/internal/audit.js"
import * as Ring from "../src/internal/auditRing.mjs"
import { isoTime } from "../src/internal/isoTime.mjs"

/**
 * A string of any UTF-16 units: control characters, quotes, Latin-1 and other characters, surrogate
 * pairs, and lone surrogates (which `fc.string` never makes), first and last included.
 */
const text = fc.oneof(
  fc.string({ unit: "binary", maxLength: 24 }),
  fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 24 }).map((units) => String.fromCharCode(...units)),
  fc.constantFrom("\ud800", "\udc00x", "x\ud800\ud800\udc00", "é\udbff", "\u2028\u007f\u0000\u001f", '"\\/')
)
const number = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(0, -0, Number.NaN, Number.POSITIVE_INFINITY))
const optional = <A>(a: fc.Arbitrary<A>) => fc.option(a, { nil: undefined })
const scores = fc.dictionary(text, number, { maxKeys: 3 })

/** Builders with every field set or not, as the stages set them. */
const builders = fc
  .record({
    requestId: text,
    stream: fc.boolean(),
    model: text,
    pool: text,
    pools: fc.array(text, { maxLength: 3 }),
    promptTokens: number,
    exact: fc.boolean(),
    startedAt: fc.integer({ min: 0, max: 4_102_444_800_000 }),
    candidates: fc.array(text, { maxLength: 3 }),
    excluded: fc.array(
      fc.record(
        { upstream: text, stage: text, reason: text, retryAfterMs: number, waitable: fc.boolean() },
        { requiredKeys: ["upstream", "stage", "reason"] }
      ),
      { maxLength: 3 }
    ),
    attempts: fc.array(
      fc.record(
        {
          attempt: fc.integer(),
          pool: text,
          upstream: text,
          outcome: fc.constantFrom(...(["success", "failure", "interrupted"] as const)),
          latencyMs: number,
          status: fc.integer(),
          error: text,
          scores
        },
        { requiredKeys: ["attempt", "pool", "upstream", "outcome", "latencyMs"] }
      ),
      { maxLength: 3 }
    ),
    upstream: optional(text),
    provider: optional(text),
    sticky: optional(fc.constantFrom(...(["hit", "miss", "moved"] as const))),
    scores: optional(scores),
    inputTokens: optional(number),
    outputTokens: optional(number),
    outcome: fc.constantFrom(...(["success", "error", "interrupted"] as const)),
    error: optional(text),
    firstChunkMs: optional(number),
    hedge: optional(
      fc.record({
        primary: text,
        hedge: text,
        afterMs: number,
        winner: optional(text),
        loser: optional(text),
        reason: optional(text)
      })
    ),
    hedges: fc.nat()
  })
  .map((f) => {
    const b = new Decision.Builder(
      f.requestId,
      "chat",
      f.stream,
      f.model,
      f.pool,
      "round-robin",
      f.promptTokens,
      f.exact,
      f.startedAt
    )
    b.pools.push(...f.pools)
    b.candidates = f.candidates
    for (const e of f.excluded) b.excluded.push(e)
    for (const a of f.attempts) b.attempts.push(a)
    b.upstream = f.upstream
    b.provider = f.provider
    b.sticky = f.sticky
    b.scores = f.scores
    b.inputTokens = f.inputTokens
    b.outputTokens = f.outputTokens
    b.firstChunkMs = f.firstChunkMs
    b.hedge = f.hedge
    b.hedges = f.hedges
    return b.end(f.startedAt + 5, f.outcome, f.error)
  })

/** An entry's line as `JSON.stringify` makes it on the event loop. */
const lineOf = (d: Decision.Decision, key: string | undefined, costUsd: number) =>
  JSON.stringify(Audit.entryOf(d, key, costUsd))

/** `text` as a regular expression's, matching itself only. */
const quote = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** The upstream an access line names: the decision's, else its last attempt's. */
const upstreamOf = (d: Decision.Decision) => d.upstream ?? d.attempts[d.attempts.length - 1]?.upstream

describe("the audit ring", () => {
  it("carries a builder's fields in its own order", () => {
    const builder = new Decision.Builder("r", "chat", false, "m", "p", "s", 0, false, 0)
    expect(Ring.FIELDS).toEqual(Object.keys(builder))
  })

  it("writes each field's own value under its name", () => {
    // Every field holds a value of its own (fields the property test below leaves at their
    // defaults too): a read of one field put under another's name shows here.
    const sab = Ring.allocate(4 * Ring.MAX_RECORD)
    const writer = Ring.writer(sab)
    const reader = Ring.reader(sab)
    const builder = new Decision.Builder("r", "chat", false, "m", "p", "s", 0, false, 0)
    const fields = builder as unknown as Record<string, unknown>
    // The start stays a time (the entry's `time` is made of it), one no other field holds.
    const own = (field: string) => (field === "startedAt" ? 1_234_567 : `value of ${field}`)
    for (const field of Ring.FIELDS) fields[field] = own(field)
    expect(writer.entry(builder, "k", 0)).toBe(true)
    const line = reader.next()
    expect(line).toBe(lineOf(builder, "k", 0))
    const decision = (JSON.parse(line!) as { decision: Record<string, unknown> }).decision
    expect(Object.keys(decision)).toEqual(Ring.FIELDS)
    for (const field of Ring.FIELDS) expect(decision[field]).toBe(own(field))
  })

  it("gives back the very line JSON.stringify makes of any builder's entry", () => {
    const sab = Ring.allocate(4 * Ring.MAX_RECORD)
    const writer = Ring.writer(sab)
    const reader = Ring.reader(sab)
    fc.assert(
      fc.property(builders, optional(text), number, (d, key, costUsd) => {
        expect(writer.entry(d, key, costUsd)).toBe(true)
        expect(reader.next()).toBe(lineOf(d, key, costUsd))
        expect(reader.next()).toBeUndefined()
      }),
      { numRuns: 500 }
    )
  })

  it("carries a request's access line with its entry: the very line jsonAccessLine makes", () => {
    const sab = Ring.allocate(4 * Ring.MAX_RECORD)
    const writer = Ring.writer(sab)
    const reader = Ring.reader(sab)
    let withAccess = 0
    fc.assert(
      fc.property(
        builders,
        optional(text),
        number,
        fc.option(fc.tuple(fc.integer({ min: 0, max: 999 }), fc.integer({ min: 0, max: 4_102_444_800_000 })), {
          nil: undefined
        }),
        (d, key, costUsd, access) => {
          const put =
            access === undefined
              ? writer.entry(d, key, costUsd)
              : writer.entry(d, key, costUsd, access[1], access[0], upstreamOf(d))
          expect(put).toBe(true)
          if (access !== undefined) withAccess++
          expect(reader.next()).toBe(lineOf(d, key, costUsd))
          expect(reader.access()).toBe(access === undefined ? "" : `${jsonAccessLine(d, key, ...access)}\n`)
          expect(reader.next()).toBeUndefined()
        }
      ),
      { numRuns: 500 }
    )
    expect(withAccess).toBeGreaterThan(100)
  })

  it("gives back access lines in the order of their records, numbered strings and texts among them", () => {
    const sab = Ring.allocate(4 * Ring.MAX_RECORD)
    const writer = Ring.writer(sab)
    const reader = Ring.reader(sab)
    const expected: Array<string> = []
    const lines: Array<string> = []
    const texts: Array<number> = []
    for (let i = 0; i < 12; i++) {
      const b = new Decision.Builder(`r${i}`, "chat", i % 2 === 0, "m", "the-pool", "s", 1, false, i)
      b.pools.push("the-pool")
      b.attempts.push({ attempt: 1, pool: "the-pool", upstream: `up-${i % 3}`, outcome: "success", latencyMs: 2 })
      // The decision's own upstream some of the time; else the line names the last attempt's.
      if (i % 4 === 1) b.upstream = "the-upstream"
      if (i % 5 === 2) b.firstChunkMs = 1.5
      const d = b.end(i + 7, i % 3 === 0 ? "error" : "success", i % 3 === 0 ? 'UpstreamError: é "no"' : undefined)
      const key = i % 2 === 0 ? "the-key" : undefined
      expect(writer.entry(d, key, 0, 1_700_000_000_000 + i, 200 + i, upstreamOf(d))).toBe(true)
      expected.push(jsonAccessLine(d, key, 200 + i, 1_700_000_000_000 + i))
      lines.push(lineOf(d, key, 0))
      if (i % 4 === 3) {
        // An access line made on the event loop (its entry went as text), long enough to go in parts.
        const long = `{"message":"${"ü".repeat(i === 11 ? 40_000 : 10)}"}`
        texts.push(writer.text(long, 0, true))
        expected.push(long)
      }
    }
    expect(texts).toEqual([-1, -1, -1])
    for (const line of lines) expect(reader.next()).toBe(line)
    expect(reader.next()).toBeUndefined()
    expect(reader.access()).toBe(expected.map((l) => `${l}\n`).join(""))
  })

  it("cuts lines into pieces of whole lines, none longer than asked unless a line alone is", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 30 }),
        fc.integer({ min: 1, max: 60 }),
        (lengths, most) => {
          const bytes = Buffer.from(lengths.map((n) => `${"x".repeat(n)}\n`).join(""))
          const pieces: Array<string> = []
          for (let from = 0, to = 0; from < bytes.length; from = to) {
            to = Ring.piece(bytes, from, bytes.length, most)
            expect(to).toBeGreaterThan(from)
            const piece = bytes.toString("latin1", from, to)
            expect(piece.endsWith("\n")).toBe(true)
            // Longer than asked only when it is one line.
            expect(piece.length <= most || piece.indexOf("\n") === piece.length - 1).toBe(true)
            // No room was left for the next line.
            const withNext = to < bytes.length ? bytes.indexOf(0x0a, to) + 1 - from : Infinity
            expect(withNext).toBeGreaterThan(most)
            pieces.push(piece)
          }
          expect(pieces.join("")).toBe(bytes.toString("latin1"))
        }
      ),
      { numRuns: 300 }
    )
  })

  it("numbers the strings that come back, and gives back the very lines all the same", () => {
    // Builders whose strings come from a few (of any UTF-16 units, and longer than are numbered),
    // through one writer and reader: most strings go as numbers after their second entry.
    const few = fc.array(fc.oneof(text, fc.constant("u".repeat(65)), fc.constant("\u0001".repeat(64))), {
      minLength: 1,
      maxLength: 6
    })
    fc.assert(
      fc.property(
        few.chain((strings) => {
          const pick = fc.constantFrom(...strings)
          const one = fc.record({
            pools: fc.array(pick, { maxLength: 4 }),
            attempt: fc.record({ pool: pick, upstream: pick, status: fc.integer(), error: pick }),
            scores: fc.dictionary(pick, number, { maxKeys: 3 }),
            model: pick,
            key: optional(pick),
            inputTokens: number
          })
          return fc.array(one, { minLength: 1, maxLength: 12 })
        }),
        fc.integer({ min: 1, max: 8 }),
        (entries, maxRefs) => {
          const sab = Ring.allocate(4 * Ring.MAX_RECORD)
          const writer = Ring.writer(sab, maxRefs)
          const reader = Ring.reader(sab)
          for (const [i, e] of entries.entries()) {
            const b = new Decision.Builder(`r${i}`, "chat", false, e.model, "p", "s", 1, false, i)
            b.pools.push(...e.pools)
            b.attempts.push({ attempt: 1, outcome: "success", latencyMs: 0.5, ...e.attempt })
            b.scores = e.scores
            b.inputTokens = e.inputTokens
            expect(writer.entry(b, e.key, 0)).toBe(true)
            expect(reader.next()).toBe(lineOf(b, e.key, 0))
          }
          expect(reader.next()).toBeUndefined()
        }
      ),
      { numRuns: 300 }
    )
  })

  it("takes less room for an entry whose strings came before", () => {
    const sab = Ring.allocate(4 * Ring.MAX_RECORD)
    const writer = Ring.writer(sab)
    const reader = Ring.reader(sab)
    const d = new Decision.Builder("r", "chat", false, "some-model", "some-pool", "round-robin", 1, false, 0)
    d.pools.push("some-pool")
    d.attempts.push({ attempt: 1, pool: "some-pool", upstream: "some-upstream", outcome: "success", latencyMs: 1 })
    const room = () => {
      expect(writer.entry(d, "some-key", 0)).toBe(true)
      const used = writer.used()
      expect(reader.next()).toBe(lineOf(d, "some-key", 0))
      return used
    }
    // Seen once (twice in one record: numbered there), seen again (numbered then), and from then on
    // by number.
    const [first, second, third, fourth] = [room(), room(), room(), room()]
    expect(second).toBeLessThanOrEqual(first)
    expect(third).toBeLessThan(first / 2)
    expect(fourth).toBe(third)
  })

  it("forgets the strings a record numbered when the record is not published", () => {
    const sab = Ring.allocate(4 * Ring.MAX_RECORD)
    const writer = Ring.writer(sab)
    const reader = Ring.reader(sab)
    const d = (scores: unknown) => {
      const b = new Decision.Builder("r", "chat", false, "m", "the-pool", "s", 1, false, 0)
      b.pools.push("the-pool", "other-pool")
      b.upstream = "the-upstream"
      ;(b as { scores: unknown }).scores = scores
      return b
    }
    expect(writer.entry(d(undefined), "k", 0)).toBe(true)
    expect(reader.next()).toBe(lineOf(d(undefined), "k", 0))
    // Its strings were seen once, so this record numbers them: then a value JSON treats its own way
    // (a Date, after them in the record) sends the entry to JSON, and the record is dropped.
    expect(writer.entry(d(new Date(0)), "k", 0)).toBeUndefined()
    expect(reader.next()).toBeUndefined()
    for (let i = 0; i < 3; i++) {
      expect(writer.entry(d({ a: i }), "k", i)).toBe(true)
      expect(reader.next()).toBe(lineOf(d({ a: i }), "k", i))
    }
  })

  it("asks for room enough for what a numbered string stands for", () => {
    const sab = Ring.allocate(4 * Ring.MAX_RECORD)
    const writer = Ring.writer(sab)
    const reader = Ring.reader(sab)
    // 64 units of 6 bytes of JSON each: numbered after two entries, 3 bytes in the ring each time.
    const wide = "\u0001".repeat(64)
    const d = (n: number) => {
      const b = new Decision.Builder("r", "chat", false, "m", "p", "s", 1, false, 0)
      b.pools.push(...Array.from({ length: n }, () => wide))
      return b
    }
    for (let i = 0; i < 2; i++) {
      expect(writer.entry(d(1), undefined, 0)).toBe(true)
      expect(reader.next()).toBe(lineOf(d(1), undefined, 0))
    }
    const many = d(300)
    expect(writer.entry(many, undefined, 0)).toBe(true)
    const line = lineOf(many, undefined, 0)
    expect(writer.used()).toBeLessThan(line.length / 50)
    // A buffer too small for the line is refused, not written past its end.
    expect(reader.write(Buffer.alloc(line.length), 0)).toBe(Ring.FULL)
    expect(reader.next()).toBe(line)
  })

  it("asks for room enough for a comma after each numbered string", () => {
    const sab = Ring.allocate(4 * Ring.MAX_RECORD)
    const writer = Ring.writer(sab)
    const reader = Ring.reader(sab)
    // A kept string of 18 bytes of JSON, 3 in the ring: with the comma after each, an array of them
    // takes more than 6 bytes a byte of the record.
    const eighteen = "a".repeat(16)
    const of = (n: number) => {
      const b = new Decision.Builder("r", "chat", false, "m", "p", "s", 1, false, 0)
      b.pools.push(...Array.from({ length: n }, () => eighteen))
      return b
    }
    expect(writer.entry(of(2), undefined, 0)).toBe(true)
    expect(reader.next()).toBe(lineOf(of(2), undefined, 0))
    const long = of(10_000)
    expect(writer.entry(long, undefined, 0)).toBe(true)
    const longLine = lineOf(long, undefined, 0)
    // Short of the line by 1,000 bytes: more than 6 bytes a byte of the record, so refused only when
    // the commas are counted.
    expect(longLine.length - 1_000).toBeGreaterThan(6 * writer.used() + 1024)
    expect(reader.write(Buffer.alloc(longLine.length - 1_000), 0)).toBe(Ring.FULL)
    expect(reader.next()).toBe(longLine)
  })

  it("leaves to JSON what JSON treats its own way, and says when it has no room", () => {
    const sab = Ring.allocate(4 * Ring.MAX_RECORD)
    const writer = Ring.writer(sab)
    const reader = Ring.reader(sab)
    const builder = () => new Decision.Builder("r", "chat", false, "m", "p", "s", 1, false, 0)
    const dated = builder()
    dated.scores = { a: 1 }
    ;(dated as { scores: unknown }).scores = new Date(0)
    expect(writer.entry(dated, "k", 0)).toBeUndefined()
    const withToJson = builder()
    ;(withToJson as { hedge: unknown }).hedge = { toJSON: () => "x" }
    expect(writer.entry(withToJson, "k", 0)).toBeUndefined()
    const hiddenToJson = builder()
    ;(hiddenToJson as { hedge: unknown }).hedge = Object.defineProperty({ a: 1 }, "toJSON", { value: () => "x" })
    expect(writer.entry(hiddenToJson, "k", 0)).toBeUndefined()
    const huge = builder()
    huge.error = "e".repeat(Ring.MAX_RECORD)
    expect(writer.entry(huge, "k", 0)).toBeUndefined()
    // A start that is not a time (toISOString throws), and one past what a Date holds.
    for (const startedAt of [Number.NaN, 8.64e15 + 1]) {
      const undated = builder()
      ;(undated as { startedAt: number }).startedAt = startedAt
      expect(writer.entry(undated, "k", 0)).toBeUndefined()
    }
    // Nothing of those was published.
    expect(reader.next()).toBeUndefined()
    // A line longer than a record goes in parts, as far as there is room, and comes back whole.
    const long = "é".repeat(5 * Ring.MAX_RECORD + 10)
    let from = writer.text(long, 0)
    expect(from).toBeGreaterThan(0)
    let read = reader.next()
    for (let rounds = 0; from !== -1 && rounds < 10; rounds++) {
      expect(read).toBeUndefined()
      from = writer.text(long, from)
      read = reader.next()
    }
    expect(read).toBe(long)
    expect(writer.text("short", 0)).toBe(-1)
    expect(reader.next()).toBe("short")
    // Records wrap around the end of the ring, and a full ring takes nothing until it is read.
    const small = builder()
    let written = 0
    while (writer.entry(small, "k", written) === true) written++
    expect(written).toBeGreaterThan(10)
    for (let i = 0; i < written; i++) expect(reader.next()).toBe(lineOf(small, "k", i))
    expect(reader.next()).toBeUndefined()
    for (let round = 0; round < 3 * written; round++) {
      expect(writer.entry(small, undefined, round)).toBe(true)
      expect(reader.next()).toBe(lineOf(small, undefined, round))
    }
  })
})

describe("the audit file sink", () => {
  const decision = (requestId: string) => {
    const b = new Decision.Builder(requestId, "chat", false, "m", "p", "round-robin", 8, false, 1_700_000_000_000)
    b.pools.push("p")
    b.attempts.push({ attempt: 1, pool: "p", upstream: "u", outcome: "success", latencyMs: 3 })
    return b.end(1_700_000_000_040, "success", undefined)
  }

  it("writes every entry in order, as values or as text, through a ring too small for them", () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-audit-ring-"))
    try {
      const path = join(dir, "a.jsonl")
      const sink = Audit.fileSink(path, 1e12, 1, { ringBytes: 4 * Ring.MAX_RECORD + 1024 })
      const expected: Array<string> = []
      for (let i = 0; i < 2_000; i++) {
        if (i % 7 === 3) {
          // A line with content (written as text), one longer than a record.
          const line = JSON.stringify({ i, content: "é😀".repeat(i === 1_000 ? 40_000 : i % 50) })
          sink.write(`${line}\n`)
          expected.push(line)
        } else if (i % 11 === 5) {
          // A decision that is not a builder's goes as its JSON text.
          const plain = { ...decision(`plain-${i}`) }
          sink.writeEntry(plain, "k", i)
          expected.push(lineOf(plain, "k", i))
        } else {
          const d = decision(`req-${i}`)
          sink.writeEntry(d, i % 2 === 0 ? "k" : undefined, i / 1000)
          expected.push(lineOf(d, i % 2 === 0 ? "k" : undefined, i / 1000))
        }
      }
      sink.close()
      expect(readFileSync(path, "utf8")).toBe(expected.map((l) => `${l}\n`).join(""))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("writes the access lines it takes to their own descriptor, in order, whatever way their entries go", () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-audit-ring-"))
    const said: Array<string> = []
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => (said.push(String(chunk)), true))
    const accessPath = join(dir, "access.log")
    const fd = openSync(accessPath, "a")
    try {
      const path = join(dir, "a.jsonl")
      // A ring too small for them all: many wait for room on the event loop.
      const sink = Audit.fileSink(path, 1e12, 1, { ringBytes: 4 * Ring.MAX_RECORD, accessFd: fd })
      const audited: Array<string> = []
      const access: Array<RegExp> = []
      /** Whether the sink said it took each access line, and whether it was to. */
      const took: Array<boolean> = []
      const toTake: Array<boolean> = []
      /** The access line expected, its time any (the sink takes it when the entry is written). */
      const accessLine = (d: Decision.Decision, key: string | undefined, status: number) => {
        const [before, after] = jsonAccessLine(d, key, status, 0).split(isoTime(0))
        return new RegExp(`^${quote(before!)}\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z${quote(after!)}$`)
      }
      for (let i = 0; i < 3_000; i++) {
        const d = decision(`req-${i}`)
        if (i % 10 === 1) {
          // Without a status: no access line.
          took.push(sink.writeEntry(d, "k", 0))
          toTake.push(false)
          audited.push(lineOf(d, "k", 0))
        } else if (i % 10 === 3) {
          // A decision that is not a builder's: its entry and its access line go as text.
          const plain = { ...d }
          took.push(sink.writeEntry(plain, undefined, 0, 502))
          toTake.push(true)
          audited.push(lineOf(plain, undefined, 0))
          access.push(accessLine(plain, undefined, 502))
        } else if (i % 10 === 5) {
          // An entry with content, its access line made on the event loop.
          const line = JSON.stringify({ i, content: "é" })
          took.push(sink.write(`${line}\n`, jsonAccessLine(d, "k", 201, 1_700_000_000_000)))
          toTake.push(true)
          audited.push(line)
          access.push(new RegExp(`^${quote(jsonAccessLine(d, "k", 201, 1_700_000_000_000))}$`))
        } else if (i % 10 === 7) {
          // An entry JSON cannot serialize: dropped, and its access line written all the same.
          const broken = decision(`broken-${i}`)
          ;(broken as { scores: unknown }).scores = { a: 1n }
          took.push(sink.writeEntry(broken, "k", 0, 200))
          toTake.push(true)
          access.push(accessLine(broken, "k", 200))
        } else {
          took.push(sink.writeEntry(d, "k", 0, 200))
          toTake.push(true)
          audited.push(lineOf(d, "k", 0))
          access.push(accessLine(d, "k", 200))
        }
      }
      sink.close()
      expect(took).toEqual(toTake)
      // A closed sink takes none.
      expect(sink.writeEntry(decision("late"), "k", 0, 200)).toBe(false)
      expect(sink.takesAccess()).toBe(false)
      expect(readFileSync(path, "utf8")).toBe(audited.map((l) => `${l}\n`).join(""))
      const written = readFileSync(accessPath, "utf8").split("\n")
      expect(written.pop()).toBe("")
      expect(written).toHaveLength(access.length)
      for (const [i, line] of written.entries()) expect(line).toMatch(access[i]!)
      expect(said).toHaveLength(1)
      expect(said[0]).toContain("an entry could not be written")
    } finally {
      closeSync(fd)
      stderr.mockRestore()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("takes no access line when standard output is a socket, which may mix two threads' writes", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-audit-ring-"))
    const server = createServer((socket) => socket.resume())
    try {
      const socketPath = join(dir, "out.sock")
      await new Promise<void>((resolve) => server.listen(socketPath, resolve))
      const client = createConnection(socketPath)
      await new Promise<void>((resolve) => client.once("connect", resolve))
      // The connection's descriptor, as a journal's standard output would be.
      const fd = (client as unknown as { _handle: { fd: number } })._handle.fd
      expect(fd).toBeGreaterThan(2)
      const path = join(dir, "a.jsonl")
      const sink = Audit.fileSink(path, 1e12, 1, { accessFd: fd })
      expect(sink.takesAccess()).toBe(false)
      expect(sink.writeEntry(decision("req-1"), "k", 0, 200)).toBe(false)
      sink.close()
      // The entry itself is written as ever.
      expect(readFileSync(path, "utf8")).toBe(`${lineOf(decision("req-1"), "k", 0)}\n`)
      client.destroy()
    } finally {
      await new Promise((resolve) => server.close(resolve))
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("finishes on its own after a reload's close, and the last close waits for it", () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-audit-ring-"))
    try {
      const path = join(dir, "a.jsonl")
      const sink = Audit.fileSink(path, 1e12, 1, { ringBytes: 4 * Ring.MAX_RECORD })
      const expected: Array<string> = []
      for (let i = 0; i < 2_000; i++) {
        sink.writeEntry(decision(`req-${i}`), "k", i)
        expected.push(lineOf(decision(`req-${i}`), "k", i))
      }
      // Most of them wait for room: a reload's close does not wait for them...
      sink.close(false)
      // ...and takes no more.
      sink.writeEntry(decision("late"), "k", 0)
      sink.close()
      expect(readFileSync(path, "utf8")).toBe(expected.map((l) => `${l}\n`).join(""))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("keeps one writer on a file a reload keeps, and loses nothing across it", () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-audit-ring-"))
    try {
      const path = join(dir, "a.jsonl")
      const settings = { sink: "file" as const, path, maxBytes: 1e12, files: 1, keep: 0, content: false }
      const log = new Audit.Log(settings)
      const expected: Array<string> = []
      for (let i = 0; i < 3_000; i++) {
        // A reload that changes only maxBytes, mid-way.
        if (i === 1_500) log.reconfigure({ ...settings, maxBytes: 1e11 })
        log.add(decision(`req-${i}`), "k", 0)
        expected.push(lineOf(decision(`req-${i}`), "k", 0))
      }
      log.close()
      expect(readFileSync(path, "utf8")).toBe(expected.map((l) => `${l}\n`).join(""))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("drops an entry JSON cannot serialize, says so once, and writes the others", () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-audit-ring-"))
    const said: Array<string> = []
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => (said.push(String(chunk)), true))
    try {
      const path = join(dir, "a.jsonl")
      const sink = Audit.fileSink(path, 1e12, 1)
      const broken = decision("broken")
      ;(broken as { scores: unknown }).scores = { a: 1n }
      const expected: Array<string> = []
      for (let i = 0; i < 5; i++) {
        expect(() => sink.writeEntry(broken, "k", 0)).not.toThrow()
        sink.writeEntry(decision(`req-${i}`), "k", 0)
        expected.push(lineOf(decision(`req-${i}`), "k", 0))
      }
      sink.close()
      expect(readFileSync(path, "utf8")).toBe(expected.map((l) => `${l}\n`).join(""))
      expect(said).toHaveLength(1)
      expect(said[0]).toContain("an entry could not be written")
    } finally {
      stderr.mockRestore()
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("rotates past maxBytes in the writer thread, a line never split between two files", () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-audit-ring-"))
    try {
      const path = join(dir, "a.jsonl")
      const sink = Audit.fileSink(path, 2_000, 3)
      const lines = Array.from({ length: 40 }, (_, i) => lineOf(decision(`req-${i}`), "k", 0))
      for (let i = 0; i < 40; i++) sink.writeEntry(decision(`req-${i}`), "k", 0)
      sink.close()
      expect(readdirSync(dir).sort()).toEqual(["a.jsonl", "a.jsonl.1", "a.jsonl.2", "a.jsonl.3"])
      const files = ["a.jsonl.3", "a.jsonl.2", "a.jsonl.1", "a.jsonl"].map((f) => readFileSync(join(dir, f), "utf8"))
      for (const file of files) expect(Buffer.byteLength(file)).toBeLessThanOrEqual(2_000)
      // The newest lines, whole and in order, across the files kept.
      const kept = files
        .join("")
        .split("\n")
        .filter((l) => l !== "")
      expect(kept).toEqual(lines.slice(lines.length - kept.length))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
