import { describe, expect, it } from "@effect/vitest"
import { Cause, FastCheck as fc, FiberId, FiberRefs, HashMap, List, Logger, LogLevel, Redacted } from "effect"
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
