import { describe, expect, it } from "@effect/vitest"
import { Errors, Live } from "@sluice/core"
import { Latency } from "../src/index.js"
import { memoryLocal, pick, poolOf, selection, upstreams } from "./fixtures.js"

/** A retryable failure on `upstream`, as a 503 is. */
const failure = (upstream: string) =>
  new Errors.UpstreamError({ upstream, kind: "http", status: 503, message: "HTTP 503", retryable: true })

describe("Latency", () => {
  const strategy = Latency.service
  const pool = poolOf("chat", upstreams({ fast: 1, slow: 1 }), "latency")
  const slow = pool.upstreams[1]!

  it("takes the lowest decayed latency, and for a stream the lowest time to first content", () => {
    const local = memoryLocal()
    Live.recordLatency(local, "answer", "fast", 100, 0)
    Live.recordLatency(local, "answer", "slow", 900, 0)
    Live.recordLatency(local, "first-content", "fast", 800, 0)
    Live.recordLatency(local, "first-content", "slow", 50, 0)
    expect(pick(strategy, selection(pool, { local }))).toBe("fast")
    expect(pick(strategy, selection(pool, { local, stream: true }))).toBe("slow")
    const choice = strategy.select(selection(pool, { local }))
    expect("scores" in choice && choice.scores).toEqual({ fast: 100, slow: 900 })
  })

  it("counts failures: a fast upstream failing half its requests loses to one 1.5× slower that does not", () => {
    const local = memoryLocal()
    Live.recordLatency(local, "answer", "fast", 100, 0)
    Live.recordLatency(local, "answer", "slow", 150, 0)
    // Alternating failures and successes on `fast`: its error rate settles near one half.
    for (let i = 0; i < 40; i++) {
      Live.started(local, "fast", 10)
      Live.finished(
        local,
        "fast",
        10,
        i % 2 === 0
          ? { _tag: "Failure", latencyMs: 5, error: failure("fast") }
          : { _tag: "Success", latencyMs: 100, inputTokens: 5, outputTokens: 5 },
        1
      )
    }
    expect(selection(pool, { local, now: 1 }).live.errorRate(pool.upstreams[0]!)).toBeGreaterThan(0.4)
    expect(pick(strategy, selection(pool, { local, now: 1 }))).toBe("slow")
  })

  it("explores an upstream without a sample, one request at a time", () => {
    const local = memoryLocal()
    Live.recordLatency(local, "answer", "fast", 100, 0)
    expect(pick(strategy, selection(pool, { local }))).toBe("slow")
    // Its first request is in flight: the next requests wait for its sample.
    Live.started(local, "slow", 10)
    expect(pick(strategy, selection(pool, { local }))).toBe("fast")
  })

  it("explores nothing for a selection that may not (a hedge's): a stale average counts as it is, no sample loses", () => {
    const local = memoryLocal()
    Live.recordLatency(local, "answer", "fast", 100, Latency.STALE_MS)
    Live.recordLatency(local, "answer", "slow", 1000, 0)
    const now = Latency.STALE_MS + 1
    expect(pick(strategy, selection(pool, { local, now }))).toBe("slow")
    expect(pick(strategy, selection(pool, { local, now, explore: false }))).toBe("fast")
    const unknown = memoryLocal()
    Live.recordLatency(unknown, "answer", "fast", 100, 0)
    expect(pick(strategy, selection(pool, { local: unknown }))).toBe("slow")
    expect(pick(strategy, selection(pool, { local: unknown, explore: false }))).toBe("fast")
  })

  it("tries a recovered upstream again once its old average has aged below the best one's", () => {
    const local = memoryLocal()
    Live.recordLatency(local, "answer", "slow", 1000, 0)
    // `fast` keeps serving at 100 ms; `slow`'s 1000 ms halves every 10 s while it is idle.
    for (const now of [0, 10_000, 20_000, 30_000]) {
      Live.recordLatency(local, "answer", "fast", 100, now)
      expect(pick(strategy, selection(pool, { local, now }))).toBe("fast")
    }
    Live.recordLatency(local, "answer", "fast", 100, 40_000)
    expect(pick(strategy, selection(pool, { local, now: 40_000 }))).toBe("slow")
    // While that probe is in flight, its old average counts as it is: one probe, not a stampede.
    Live.started(local, slow.id, 10)
    expect(pick(strategy, selection(pool, { local, now: 40_000 }))).toBe("fast")
  })
})
