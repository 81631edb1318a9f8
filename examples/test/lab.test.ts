import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Lab from "../lab.js"

describe("simulation lab", () => {
  it.effect(
    "under 10x overload for 5 simulated minutes: no upstream 429, every request served or refused with Retry-After, >= 95% of capacity used",
    () =>
      Effect.gen(function* () {
        const report = yield* Lab.run({
          upstreams: [
            // Small absolute rates keep the fiber count (and TestClock's bookkeeping) low; the ratio
            // of offered load to capacity is what the scenario is about. TPM limits are set above what
            // the RPM allows, so capacity is the summed RPM.
            { id: "a", rpm: 12, tpm: 4_000, latencyMs: 1_000 },
            { id: "b", rpm: 6, tpm: 800, latencyMs: 2_000 },
            { id: "c", rpm: 24, tpm: 6_000, latencyMs: 1_000 }
          ],
          minutes: 5,
          overload: 10,
          maxTokens: 64
        })
        console.log("lab report:", JSON.stringify(report))
        expect(report.upstream429s).toBe(0)
        expect(report.otherErrors).toEqual([])
        expect(report.served + report.refused).toBe(report.offered)
        expect(report.refusedWithRetryAfter).toBe(report.refused)
        expect(report.servedInWindow / report.capacity).toBeGreaterThanOrEqual(0.95)
        expect(report.maxQueueWaitMs).toBeLessThanOrEqual(30_000)
      }),
    60_000
  )
})
