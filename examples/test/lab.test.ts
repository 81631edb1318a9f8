import { beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, TestContext } from "effect"
import * as Lab from "../lab.js"

const upstreams: ReadonlyArray<Lab.LabUpstream> = [
  // Small absolute rates keep the fiber count (and TestClock's bookkeeping) low; the ratio of offered
  // load to capacity is what the scenario is about. A lab request costs its upstream 82 tokens (18
  // prompt + 64 completion), so a is held by its RPM (12 < ⌊4000 / 82⌋ = 48), b and c by their TPM
  // (⌊1000 / 82⌋ = 12 < 20, ⌊1600 / 82⌋ = 19 < 40).
  { id: "a", rpm: 12, tpm: 4_000, latencyMs: 1_000 },
  { id: "b", rpm: 20, tpm: 1_000, latencyMs: 2_000 },
  { id: "c", rpm: 40, tpm: 1_600, latencyMs: 1_000 }
]

/** How many times each value occurs: `{ "1": 151, "55": 190, ... }`. */
const histogram = (values: ReadonlyArray<string | number>): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const v of values) counts[String(v)] = (counts[String(v)] ?? 0) + 1
  return counts
}

/** A refusal's reason without its numbers, so that refusals group by path. */
const pathOf = (refusal: Lab.Refusal) => refusal.reason.replace(/\d+/g, "N")

describe("simulation lab: 10x overload for 5 simulated minutes", () => {
  // One run (~10 s of real time) judged by every test below, under a TestClock of its own.
  let report: Lab.LabReport
  beforeAll(async () => {
    report = await Effect.runPromise(
      Lab.run({ upstreams, minutes: 5, overload: 10, maxTokens: 64 }).pipe(Effect.provide(TestContext.TestContext))
    )
    const { refusals, ...summary } = report
    console.log(
      "lab report:",
      JSON.stringify({
        ...summary,
        ofCapacity: report.servedInWindow / report.capacity,
        retryAfterSeconds: histogram(refusals.map((r) => r.retryAfterSeconds)),
        refusalPaths: histogram(refusals.map(pathOf))
      })
    )
  }, 60_000)

  it("binds one upstream by its RPM and two by their TPM; capacity is Σ min(rpm, ⌊tpm / tokens per request⌋) × minutes", () => {
    expect(report.upstreams.map((u) => [u.id, u.binding])).toEqual([
      ["a", "rpm"],
      ["b", "tpm"],
      ["c", "tpm"]
    ])
    expect(report.upstreams.map((u) => u.capacity)).toEqual([12 * 5, 12 * 5, 19 * 5])
    expect(report.capacity).toBe((12 + 12 + 19) * 5)
    for (const u of report.upstreams) {
      // Each request cost the upstream what the capacity assumes...
      expect(u.tokensCharged).toBe(18 + 64)
      expect(u.tokensServed).toBe(u.served * u.tokensCharged)
      // ...Sluice reserved its prompt estimate (3 priming + 3 framing + 1 role + 15 text) + max_tokens,
      // never less than the upstream counted...
      expect(u.tokensReserved).toBe(22 + 64)
      // ...and no upstream served more than its capacity: the formula does not undercount.
      expect(u.servedInWindow).toBeLessThanOrEqual(u.capacity)
    }
  })

  it("lets no upstream answer 429 and answers every request: served, or refused by Sluice with a Retry-After", () => {
    expect(report.upstream429s).toBe(0)
    expect(report.otherErrors).toEqual([])
    expect(report.served + report.refused).toBe(report.offered)
    expect(report.refusedWithRetryAfter).toBe(report.refused)
    expect(report.maxQueueWaitMs).toBeLessThanOrEqual(30_000)
  })

  it("serves at least 95% of the upstreams' summed capacity while the load is offered", () => {
    expect(report.servedInWindow / report.capacity).toBeGreaterThanOrEqual(0.95)
  })

  it("tells a refused client to come back when capacity frees: not before Sluice could have room, not long after it surely has", () => {
    // Allowed past `latestFreeMs`: 1 s for whole seconds, plus the upstreams' latency, because Sluice
    // anchors a reset an upstream reports (`x-ratelimit-reset-*`) when the answer arrives, and the
    // lab's upstreams state it as of the request's arrival, so a learned limit may hold that much
    // longer than the window. Conservative, not dishonest.
    const slackMs = 1_000 + Math.max(...upstreams.map((u) => u.latencyMs))
    const dishonest = report.refusals.flatMap((r) => {
      const ms = r.retryAfterSeconds * 1000
      const at = `Retry-After ${r.retryAfterSeconds}s, room from ${r.earliestFreeMs / 1000}s, surely by ${r.latestFreeMs / 1000}s`
      if (ms < r.earliestFreeMs) return [`too soon: ${pathOf(r)}: ${at}`]
      if (ms > r.latestFreeMs + slackMs) return [`too late: ${pathOf(r)}: ${at}`]
      return []
    })
    expect(histogram(dishonest)).toEqual({})
  })
})
