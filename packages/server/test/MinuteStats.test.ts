import { describe, expect, it } from "@effect/vitest"
import type { Decision } from "@sluice/core"
import { Clock, Effect, TestClock } from "effect"
import * as MinuteStats from "../src/internal/minuteStats.js"

const MINUTE = 60_000

/** A decision that finishes now (the TestClock's time), with the fields the per-minute totals read. */
const finished = (fields: Partial<Decision.Decision> = {}) =>
  Effect.map(
    Clock.currentTimeMillis,
    (now) =>
      ({
        outcome: "success",
        inputTokens: 10,
        outputTokens: 5,
        firstChunkMs: undefined,
        durationMs: 100,
        ...fields,
        startedAt: now - (fields.durationMs ?? 100)
      }) as Decision.Decision
  )

/** The minutes up to the TestClock's now. */
const read = (stats: MinuteStats.MinuteStats) => Effect.map(Clock.currentTimeMillis, (now) => stats.minutes(now))

describe("per-minute totals of the last hour", () => {
  it.effect("counts requests, errors, tokens and spend in the minute they finished", () =>
    Effect.gen(function* () {
      const stats = new MinuteStats.MinuteStats()
      yield* TestClock.setTime(10 * MINUTE + 5_000)
      for (let i = 0; i < 3; i++) stats.add(yield* finished(), 0.25)
      stats.add(yield* finished({ outcome: "error", inputTokens: undefined, outputTokens: undefined }), 0)
      const minutes = yield* read(stats)
      expect(minutes).toHaveLength(60)
      const last = minutes[59]!
      expect(last).toMatchObject({
        start: 10 * MINUTE,
        requests: 4,
        errors: 1,
        inputTokens: 30,
        outputTokens: 15,
        spendUsd: 0.75,
        latencyMs: { p50: 100, p99: 100 },
        firstChunkMs: null
      })
      expect(minutes.slice(0, 59).every((m) => m.requests === 0 && m.latencyMs === null)).toBe(true)
      expect(minutes[0]!.start).toBe(-49 * MINUTE)
    })
  )

  it.effect("rolls over to a new minute and drops minutes older than the hour", () =>
    Effect.gen(function* () {
      const stats = new MinuteStats.MinuteStats()
      yield* TestClock.setTime(100 * MINUTE)
      stats.add(yield* finished(), 0)
      yield* TestClock.adjust(MINUTE)
      stats.add(yield* finished(), 0)
      stats.add(yield* finished(), 0)
      let minutes = yield* read(stats)
      expect(minutes.slice(-2).map((m) => [m.start, m.requests])).toEqual([
        [100 * MINUTE, 1],
        [101 * MINUTE, 2]
      ])
      // 59 minutes on, the first of those minutes is the oldest one kept; one more and it is gone.
      yield* TestClock.adjust(58 * MINUTE)
      minutes = yield* read(stats)
      expect(minutes[0]).toMatchObject({ start: 100 * MINUTE, requests: 1 })
      yield* TestClock.adjust(MINUTE)
      minutes = yield* read(stats)
      expect(minutes[0]).toMatchObject({ start: 101 * MINUTE, requests: 2 })
      expect(minutes.reduce((n, m) => n + m.requests, 0)).toBe(2)
      // The slot of minute 100 is reused by minute 160, counted afresh.
      yield* TestClock.adjust(MINUTE)
      stats.add(yield* finished(), 0)
      minutes = yield* read(stats)
      expect(minutes.map((m) => m.requests).filter((n) => n > 0)).toEqual([1])
      expect(minutes[59]!.start).toBe(161 * MINUTE)
      // A decision finished more than an hour ago does not overwrite a newer minute.
      stats.add({ ...(yield* finished()), startedAt: 101 * MINUTE }, 0)
      expect((yield* read(stats)).reduce((n, m) => n + m.requests, 0)).toBe(1)
    })
  )

  it.effect("gives p50 and p99 of latency and time to first chunk within a bucket's width", () =>
    Effect.gen(function* () {
      const stats = new MinuteStats.MinuteStats()
      yield* TestClock.setTime(5 * MINUTE)
      // 1..100 ms: p50 is 50 ms, p99 is 99 ms; streams' first chunk at 20 ms, one at 2 s.
      for (let ms = 1; ms <= 100; ms++)
        stats.add(yield* finished({ durationMs: ms, firstChunkMs: ms === 100 ? 2_000 : 20 }), 0)
      const last = (yield* read(stats))[59]!
      const within = (value: number | undefined, exact: number) => {
        expect(value).toBeGreaterThanOrEqual(exact)
        expect(value).toBeLessThanOrEqual(exact * 1.19)
      }
      within(last.latencyMs?.p50, 50)
      within(last.latencyMs?.p99, 99)
      within(last.firstChunkMs?.p50, 20)
      within(last.firstChunkMs?.p99, 20)
      // The slowest minute's largest value bounds every quantile.
      expect(last.latencyMs!.p99).toBeLessThanOrEqual(100)
    })
  )
})
