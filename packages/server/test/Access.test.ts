import { describe, expect, it } from "@effect/vitest"
import type { Decision } from "@sluice/core"
import { Config, StateStore, Topology } from "@sluice/core"
import { Clock, Duration, Effect, Schema, TestClock } from "effect"
import * as Access from "../src/Access.js"

const KEY = "sk-policy-0123456789"

/** Access rules for one key held as its digest, over a fresh memory store. */
const rules = (key: Record<string, unknown>) =>
  Effect.map(StateStore.makeMemory, (store) =>
    Access.make({
      server: Schema.decodeUnknownSync(Config.ServerConfig)({
        auth: { keys: [{ name: "k", sha256: Access.digest(KEY), ...key }] }
      }),
      environment: { clientKeys: new Map(), priorityKeys: [] },
      local: store.local,
      poolOf: () => "chat",
      upstreams: new Map([
        [
          "u",
          Topology.upstream({
            id: "u",
            provider: "openai",
            baseUrl: "http://127.0.0.1:1/v1",
            pricing: { inputPerMillion: 1_000_000, outputPerMillion: 0 }
          })
        ]
      ])
    })
  )

const client = (access: Access.Service) => {
  const found = access.authenticate({ authorization: `Bearer ${KEY}` })
  if (found instanceof Access.Refusal) throw new Error("the key was refused")
  return found
}

/** A decision as far as recording usage reads it. */
const used = (inputTokens: number) => ({ upstream: "u", inputTokens, outputTokens: 0 }) as unknown as Decision.Decision

const now = Clock.currentTimeMillis

describe("Access: a key's limits over time", () => {
  it.effect("admits rpm requests a minute, then again as the window slides past the first", () =>
    Effect.gen(function* () {
      const access = yield* rules({ limits: { rpm: 2 } })
      const k = client(access)
      expect(access.admit(k, "m", yield* now)).toBeUndefined()
      yield* TestClock.adjust(Duration.seconds(10))
      expect(access.admit(k, "m", yield* now)).toBeUndefined()
      const over = access.admit(k, "m", yield* now)
      expect(over?.status).toBe(429)
      // The first request leaves the window 50 s from now.
      expect(over?.headers["retry-after"]).toBe("50")
      yield* TestClock.adjust(Duration.seconds(50))
      expect(access.admit(k, "m", yield* now)).toBeUndefined()
    })
  )

  it.effect("refuses a key past its daily budget until the next UTC day, and counts the month on", () =>
    Effect.gen(function* () {
      const access = yield* rules({ budget: { dailyUsd: 2, monthlyUsd: 3 } })
      const k = client(access)
      // $1 per input token here.
      access.record(k, used(2), yield* now)
      const over = access.admit(k, "m", yield* now)
      expect(over?.code).toBe("budget_exceeded")
      expect(Number(over?.headers["retry-after"])).toBe(24 * 60 * 60)
      yield* TestClock.adjust(Duration.days(1))
      expect(access.admit(k, "m", yield* now)).toBeUndefined()
      access.record(k, used(1), yield* now)
      expect(access.admit(k, "m", yield* now)?.message).toContain("monthly budget of $3")
      expect(access.keys(yield* now)[0]?.usage).toMatchObject({ spentTodayUsd: 1, spentThisMonthUsd: 3 })
    })
  )

  it.effect("never shows the key or its digest in what it lists", () =>
    Effect.gen(function* () {
      const access = yield* rules({})
      const listed = JSON.stringify(access.keys(yield* now))
      expect(listed).not.toContain(KEY)
      expect(listed).not.toContain(Access.digest(KEY))
      expect(listed).toContain('"name":"k"')
    })
  )
})
