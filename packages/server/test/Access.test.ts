import { describe, expect, it } from "@effect/vitest"
import type { Decision } from "@sluice/core"
import { Config, StateStore, Topology } from "@sluice/core"
import { Clock, Duration, Effect, Schema, TestClock } from "effect"
import * as Access from "../src/Access.js"

const KEY = "sk-policy-0123456789"

/** $1 per input token (and nothing per output token) on `u`; `dear` costs $1 per output token too. */
const u = Topology.upstream({
  id: "u",
  provider: "openai",
  baseUrl: "http://127.0.0.1:1/v1",
  pricing: { inputPerMillion: 1_000_000, outputPerMillion: 0 }
})
const dear = Topology.upstream({
  id: "dear",
  provider: "openai",
  baseUrl: "http://127.0.0.1:2/v1",
  pricing: { inputPerMillion: 1_000_000, outputPerMillion: 1_000_000 }
})

/**
 * Access rules for one key held as its digest, over a fresh memory store: model `m` is served by
 * pool `chat` (upstream `u`, 10 completion tokens by default) which falls back to `dear`'s pool.
 */
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
        ["u", u],
        ["dear", dear]
      ]),
      pools: new Map([
        [
          "chat",
          Topology.pool({ id: "chat", models: ["m"], upstreams: [u], fallback: "backup", defaultMaxTokens: 10 })
        ],
        ["backup", Topology.pool({ id: "backup", models: [], upstreams: [dear] })]
      ])
    })
  )

/** Asks `access` to admit one request of `k` for `m` (no prompt, no completion unless told). */
const ask = (access: Access.Service, k: Access.Client, at: number, prompt = 0, output = 0) =>
  access.admit(k, "m", at, prompt, output)

/** The refusal of an admission, or undefined when it admitted the request. */
const refusal = (admitted: Access.Client | Access.Refusal) =>
  admitted instanceof Access.Refusal ? admitted : undefined

/** The client of an admitted request (with what it holds); throws when it was refused. */
const admitted = (result: Access.Client | Access.Refusal) => {
  if (result instanceof Access.Refusal) throw new Error(`refused: ${result.message}`)
  return result
}

const client = (access: Access.Service) => {
  const found = access.authenticate({ authorization: `Bearer ${KEY}` })
  if (found instanceof Access.Refusal) throw new Error("the key was refused")
  return found
}

/** A decision as far as recording usage reads it. */
const used = (inputTokens: number, outputTokens = 0, upstream: string | undefined = "u") =>
  ({ upstream, inputTokens, outputTokens }) as unknown as Decision.Decision

/** A failed request's decision: no upstream served it, no usage. */
const failed = {
  upstream: undefined,
  inputTokens: undefined,
  outputTokens: undefined,
  attempts: []
} as unknown as Decision.Decision

const now = Clock.currentTimeMillis

describe("Access: a key's limits over time", () => {
  it.effect("admits rpm requests a minute, then again as the window slides past the first", () =>
    Effect.gen(function* () {
      const access = yield* rules({ limits: { rpm: 2 } })
      const k = client(access)
      // A key without a TPM or a budget holds nothing: its requests get the key's own client back.
      expect(ask(access, k, yield* now)).toBe(k)
      yield* TestClock.adjust(Duration.seconds(10))
      expect(ask(access, k, yield* now)).toBe(k)
      const over = refusal(ask(access, k, yield* now))
      expect(over?.status).toBe(429)
      // The first request leaves the window 50 s from now.
      expect(over?.headers["retry-after"]).toBe("50")
      yield* TestClock.adjust(Duration.seconds(50))
      expect(ask(access, k, yield* now)).toBe(k)
    })
  )

  it.effect("refuses a key past its daily budget until the next UTC day, and counts the month on", () =>
    Effect.gen(function* () {
      const access = yield* rules({ budget: { dailyUsd: 2, monthlyUsd: 3 } })
      const k = client(access)
      // $1 per input token here.
      access.record(k, used(2), yield* now)
      const over = refusal(ask(access, k, yield* now))
      expect(over?.code).toBe("budget_exceeded")
      expect(Number(over?.headers["retry-after"])).toBe(24 * 60 * 60)
      yield* TestClock.adjust(Duration.days(1))
      expect(refusal(ask(access, k, yield* now))).toBeUndefined()
      access.record(k, used(1), yield* now)
      expect(refusal(ask(access, k, yield* now))?.message).toContain("monthly budget of $3")
      expect(access.keys(yield* now)[0]?.usage).toMatchObject({ spentTodayUsd: 1, spentThisMonthUsd: 3 })
    })
  )

  it.effect("holds a burst's tokens at admission, so concurrent requests never pass the key's TPM together", () =>
    Effect.gen(function* () {
      const access = yield* rules({ limits: { tpm: 100 } })
      const k = client(access)
      const at = yield* now
      // 10 prompt tokens + max_tokens 20 each: three fit in 100, the fourth does not — none has answered yet.
      const burst = [1, 2, 3, 4].map(() => ask(access, k, at, 10, 20))
      expect(burst.slice(0, 3).every((r) => refusal(r) === undefined)).toBe(true)
      expect(refusal(burst[3]!)?.message).toContain("100 tokens per minute")
      expect(access.keys(at)[0]?.usage.tokensLastMinute).toBe(90)
      // The answers used less than they held: the difference is given back at once.
      for (const r of burst.slice(0, 3)) access.record(admitted(r), used(10, 5), at)
      expect(access.keys(at)[0]?.usage.tokensLastMinute).toBe(45)
      expect(refusal(ask(access, k, at, 10, 20))).toBeUndefined()
    })
  )

  it.effect("admits a request larger than the TPM only when the key has nothing else in its minute", () =>
    Effect.gen(function* () {
      const access = yield* rules({ limits: { tpm: 50 } })
      const k = client(access)
      const at = yield* now
      // No max_tokens: the pool's 10 default completion tokens are held with the prompt.
      const big = admitted(access.admit(k, "m", at, 60, undefined))
      expect(big.held?.tokens).toBe(70)
      expect(refusal(ask(access, k, at, 1, 1))?.code).toBe("rate_limit_exceeded")
      access.record(big, used(5, 5), at)
      expect(refusal(ask(access, k, at, 1, 1))).toBeUndefined()
    })
  )

  it.effect("gives back what a request held when it fails before any upstream served it", () =>
    Effect.gen(function* () {
      const access = yield* rules({ limits: { tpm: 100 }, budget: { dailyUsd: 100 } })
      const k = client(access)
      const at = yield* now
      const first = admitted(ask(access, k, at, 40, 40))
      // Priced at the dearest upstream it may reach (the fallback's): $1 per token, in and out.
      expect(first.held?.costUsd).toBe(80)
      expect(refusal(ask(access, k, at, 40, 40))?.code).toBe("budget_exceeded")
      access.record(first, failed, at)
      // Settled once: releasing it again (the request's end) gives nothing back twice.
      access.release(first, at)
      expect(access.keys(at)[0]?.usage).toMatchObject({ tokensLastMinute: 0, spentTodayUsd: 0, requestsLastMinute: 1 })
      const second = admitted(ask(access, k, at, 40, 40))
      access.release(second, at)
      expect(access.keys(at)[0]?.usage).toMatchObject({ tokensLastMinute: 0, spentTodayUsd: 0 })
    })
  )

  it.effect("refuses a request whose most it may cost is more than what is left of the budget", () =>
    Effect.gen(function* () {
      const access = yield* rules({ budget: { dailyUsd: 10 } })
      const k = client(access)
      const at = yield* now
      // $8 held (4 prompt + 4 completion tokens at the fallback's prices), then the answer costs $3 on `u`.
      const first = admitted(ask(access, k, at, 4, 4))
      const over = refusal(ask(access, k, at, 2, 2))
      expect(over?.message).toContain("may cost up to $4, more than the $2 left")
      access.record(first, used(3, 4), at)
      expect(access.keys(at)[0]?.usage.spentTodayUsd).toBe(3)
      expect(refusal(ask(access, k, at, 2, 2))).toBeUndefined()
    })
  )

  it.effect(
    "keeps the hold of an answer that reported no usage or was cut off, and counts a late answer in the new day",
    () =>
      Effect.gen(function* () {
        const access = yield* rules({ budget: { dailyUsd: 100 } })
        const k = client(access)
        const start = yield* now
        const silent = admitted(ask(access, k, start, 2, 2))
        access.record(silent, { ...failed, upstream: "u" } as Decision.Decision, start)
        expect(access.keys(start)[0]?.usage.spentTodayUsd).toBe(4)
        // A call its client cut off may have been billed too: its hold stays.
        const cut = admitted(ask(access, k, start, 1, 1))
        access.record(cut, { ...failed, attempts: [{ outcome: "interrupted" }] } as unknown as Decision.Decision, start)
        access.release(cut, start)
        expect(access.keys(start)[0]?.usage.spentTodayUsd).toBe(6)
        const late = admitted(ask(access, k, start, 2, 2))
        yield* TestClock.adjust(Duration.days(1))
        access.record(late, used(1, 0), yield* now)
        expect(access.keys(yield* now)[0]?.usage).toMatchObject({ spentTodayUsd: 1, spentThisMonthUsd: 7 })
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
