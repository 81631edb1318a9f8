import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  Console,
  Context,
  DefaultServices,
  FastCheck as fc,
  FiberId,
  FiberRefs,
  HashMap,
  List,
  Logger,
  LogLevel,
  Redacted
} from "effect"
import type { Decision } from "@sluice/core"
import * as Logging from "../src/Logging.js"

/** One log call's options, as the runtime hands them to a logger. */
const options = (
  message: unknown,
  annotations: ReadonlyArray<readonly [string, unknown]> = [],
  cause: Cause.Cause<unknown> = Cause.empty
) => ({
  fiberId: FiberId.make(1, 0),
  logLevel: LogLevel.Info,
  message,
  cause,
  context: FiberRefs.empty(),
  spans: List.empty(),
  annotations: HashMap.fromIterable(annotations),
  date: new Date(0)
})

describe("the gateway's JSON logger", () => {
  it("writes what Effect's JSON logger writes, for every kind of line", () => {
    const shared = { a: 1 }
    const lines: ReadonlyArray<ReturnType<typeof options>> = [
      options("text"),
      options(["two", "parts"]),
      options({ msg: "request", requestId: "req_1", status: 200, stream: false, key: null, tokens: undefined }),
      options({ nested: { deeper: [1, 2] } }),
      options({ twice: shared, again: shared }),
      options(new Error("boom")),
      options({ secret: Redacted.make("key") }),
      options("with annotations", [
        ["pool", "chat"],
        ["nested", { x: 1 }]
      ]),
      options("with a cause", [], Cause.fail("why"))
    ]
    for (const line of lines) expect(Logging.jsonLogger.log(line)).toBe(Logger.jsonLogger.log(line))
  })

  it("writes what Effect's JSON logger writes for arbitrary messages and annotations", () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 }))),
        fc.array(fc.tuple(fc.string(), fc.jsonValue({ maxDepth: 1 })), { maxLength: 3 }),
        (message, annotations) => {
          const line = options(message, annotations)
          expect(Logging.jsonLogger.log(line)).toBe(Logger.jsonLogger.log(line))
        }
      ),
      { numRuns: 500, seed: 5 }
    )
  })
})

describe("the access line", () => {
  /** What Effect's uncoloured pretty logger writes for `message` from no fiber: its console's lines. */
  const prettyText = (message: string, date: Date): string => {
    const lines: Array<string> = []
    const capture = Console.Console.of({
      ...Context.get(DefaultServices.liveServices, Console.Console),
      unsafe: { ...console, log: (...args: ReadonlyArray<unknown>) => void lines.push(args.join(" ")) }
    } as Console.Console)
    const context = FiberRefs.updateManyAs(FiberRefs.empty(), {
      forkAs: FiberId.none,
      entries: [
        [
          DefaultServices.currentServices,
          [[FiberId.none, Context.add(DefaultServices.liveServices, Console.Console, capture)]]
        ]
      ]
    })
    Logger.prettyLogger({ colors: false }).log({ ...options(message), fiberId: FiberId.none, context, date })
    return lines.join("\n")
  }

  it("is the text Effect's loggers write, in JSON and pretty, made without them", () => {
    fc.assert(
      fc.property(
        fc.record({
          msg: fc.constant("request"),
          requestId: fc.string(),
          status: fc.integer({ min: 100, max: 599 }),
          stream: fc.boolean(),
          key: fc.option(fc.string()),
          durationMs: fc.nat(),
          error: fc.option(fc.string(), { nil: undefined })
        }),
        fc.string(),
        fc.date({ min: new Date(0), max: new Date(4_000_000_000_000), noInvalidDate: true }),
        (fields, text, date) => {
          const line = { ...options(fields), fiberId: FiberId.none, date }
          expect(Logging.accessLine("json", fields, date)).toBe(Logger.jsonLogger.log(line))
          expect(Logging.accessLine("json", fields, date)).toBe(Logging.jsonLogger.log(line))
          expect(Logging.accessLine("pretty", text, date)).toBe(prettyText(text, date))
        }
      ),
      { numRuns: 300, seed: 7 }
    )
  })

  it("of a decision, written straight from it, is the text of its fields' record", () => {
    const number = fc.oneof(fc.nat(), fc.double(), fc.constant(Number.NaN))
    const decision = fc.record({
      requestId: fc.string(),
      operation: fc.constantFrom("chat", "embeddings", "responses"),
      stream: fc.boolean(),
      pool: fc.string(),
      attempts: fc.array(fc.record({ upstream: fc.string() }), { maxLength: 2 }),
      upstream: fc.option(fc.string(), { nil: undefined }),
      outcome: fc.constantFrom("success", "error", "interrupted"),
      durationMs: number,
      queueWaitMs: number,
      inputTokens: fc.option(fc.nat(), { nil: undefined }),
      outputTokens: fc.option(number, { nil: undefined }),
      firstChunkMs: fc.option(number, { nil: undefined }),
      error: fc.option(fc.string({ unit: "binary" }), { nil: undefined })
    }) as unknown as fc.Arbitrary<Decision.Decision>
    fc.assert(
      fc.property(
        decision,
        fc.option(fc.string({ unit: "binary" }), { nil: undefined }),
        fc.integer({ min: 100, max: 599 }),
        fc.integer({ min: 0, max: 4_000_000_000_000 }),
        (d, key, status, ms) => {
          expect(Logging.jsonAccessLine(d, key, status, ms)).toBe(
            Logging.accessLine("json", Logging.accessFields(d, key, status), new Date(ms))
          )
        }
      ),
      { numRuns: 500, seed: 9 }
    )
  })

  it("says ASCII only of a line that is, and its bytes through the buffer as Latin-1 are its UTF-8", () => {
    const text = fc.oneof(
      { weight: 12, arbitrary: fc.stringMatching(/^[\w .:/-]{0,16}$/) },
      { weight: 1, arbitrary: fc.string() },
      { weight: 1, arbitrary: fc.string({ unit: "binary" }) },
      { weight: 1, arbitrary: fc.constantFrom("ü", "\n", '"', "\\", "\u007f", "\ud800") }
    )
    const decision = fc.record({
      requestId: text,
      operation: fc.constantFrom("chat", "embeddings"),
      stream: fc.boolean(),
      pool: text,
      attempts: fc.array(fc.record({ upstream: text }), { maxLength: 2 }),
      upstream: fc.option(text, { nil: undefined }),
      outcome: fc.constantFrom("success", "error"),
      durationMs: fc.nat(),
      queueWaitMs: fc.nat(),
      error: fc.option(text, { nil: undefined })
    }) as unknown as fc.Arbitrary<Decision.Decision>
    let ascii = 0
    fc.assert(
      fc.property(decision, fc.option(text, { nil: undefined }), (d, key) => {
        const line = Logging.jsonAccessLine(d, key, 200, 1_700_000_000_000)
        const said = Logging.lastAccessLineAscii()
        // Printable ASCII but `"` and `\` is what goes the quick way; anything else says not ASCII.
        const plain = (s: string | undefined) => s === undefined || (/^[\x20-\x7e]*$/.test(s) && !/["\\]/.test(s))
        const strings = [d.requestId, d.pool, d.upstream ?? d.attempts.at(-1)?.upstream, key, d.error]
        expect(said).toBe(strings.every(plain))
        if (said) ascii++
        const chunks: Array<Uint8Array> = []
        const lines = Logging.byteLines((chunk) => void chunks.push(chunk))
        lines.line(line, said)
        lines.flush()
        expect(Buffer.concat(chunks).toString("utf8")).toBe(`${line}\n`)
      }),
      { numRuns: 500, seed: 11 }
    )
    // Both kinds of line came up.
    expect(ascii).toBeGreaterThan(20)
    expect(ascii).toBeLessThan(480)
  })
})
