import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as CustomStrategy from "../custom-strategy.js"
import * as InProcess from "../in-process.js"

describe("examples", () => {
  it.live("in-process: the router composed from layers serves chat in 3:1 weighted turns and streams", () =>
    Effect.gen(function* () {
      const result = yield* InProcess.program
      // Smooth weighted round robin with weights 3:1 over 4 picks: three primaries, one secondary.
      expect(result.served.filter((u) => u === "primary")).toHaveLength(3)
      expect(result.served.filter((u) => u === "secondary")).toHaveLength(1)
      expect(result.streamed.split(" ").filter((w) => w !== "")).toHaveLength(6)
      expect(result.streamDecision.outcome).toBe("success")
      expect(result.streamDecision.outputTokens).toBe(6)
    })
  )

  it.live("custom strategy: cheapest-first, failing over to the dear upstream while the cheap one errors", () =>
    Effect.gen(function* () {
      const [first, second, third] = yield* CustomStrategy.program
      expect(first?.strategy).toBe("cheapest")
      expect(first?.upstream).toBe("cheap")
      expect(second?.attempts.map((a) => [a.upstream, a.outcome])).toEqual([
        ["cheap", "failure"],
        ["dear", "success"]
      ])
      expect(third?.upstream).toBe("cheap")
    })
  )
})
