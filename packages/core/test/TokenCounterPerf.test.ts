import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Logger, Scope } from "effect"
import type { Wire } from "../src/index.js"
import { TokenCounter } from "../src/index.js"

// Texts are generated from a seeded generator: tests see the same prompts every run, and no two
// generated messages are alike (so the memo cannot answer for them).
const WORDS = (
  "the a of to and in that is for it as with was on be by this are from at or an which have not has " +
  "request upstream budget token model latency gateway router pool retry circuit breaker window limit " +
  "conversation assistant message function schema stream chunk response deploy region cache memory " +
  "quickly carefully however therefore although because during between without against within"
).split(" ")

const prose = (seed: number, chars: number): string => {
  let state = seed >>> 0 || 1
  const next = () => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) / 4294967296
  }
  const parts: Array<string> = []
  let length = 0
  let sentence = 0
  while (length < chars) {
    const word = WORDS[Math.floor(next() * WORDS.length)]!
    const text = sentence === 0 ? word[0]!.toUpperCase() + word.slice(1) : word
    sentence = next() < 0.08 ? 0 : sentence + 1
    const piece =
      sentence === 0 ? text + (next() < 0.5 ? ". " : ", and " + Math.floor(next() * 10_000) + ". ") : text + " "
    parts.push(piece)
    length += piece.length
  }
  return parts.join("").slice(0, chars)
}

/** A chat of `turns` user/assistant pairs after a system prompt; message texts of 200-800 chars. */
const conversation = (seed: number, turns: number): Array<Wire.ChatMessage> => {
  const messages: Array<Wire.ChatMessage> = [{ role: "system", content: prose(seed, 400) }]
  for (let i = 1; i <= turns; i++) {
    messages.push({ role: "user", content: prose(seed * 1000 + 2 * i, 200 + ((i * 137) % 400)) })
    messages.push({ role: "assistant", content: prose(seed * 1000 + 2 * i + 1, 300 + ((i * 211) % 500)) })
  }
  return messages
}

const request = (messages: ReadonlyArray<Wire.ChatMessage>): Wire.ChatCompletionRequest => ({
  model: "gpt-4o",
  messages
})

const MEGABYTE = 1024 * 1024

const statsOf = (counter: TokenCounter.Service): TokenCounter.Stats => {
  if (counter.stats === undefined) throw new Error("TokenCounter.make keeps stats")
  return counter.stats()
}

describe("TokenCounter.needsExact", () => {
  it("trusts an estimate below limit × (1 − margin) and asks for an exact count from there on", () => {
    expect(TokenCounter.needsExact(7_999, 10_000)).toBe(false)
    expect(TokenCounter.needsExact(8_000, 10_000)).toBe(true)
    expect(TokenCounter.needsExact(12_000, 10_000)).toBe(true)
    expect(TokenCounter.needsExact(8_999, 10_000, 0.1)).toBe(false)
    expect(TokenCounter.needsExact(9_000, 10_000, 0.1)).toBe(true)
    expect(TokenCounter.needsExact(1_000_000, Infinity)).toBe(false)
    expect(TokenCounter.needsExact(0, 0)).toBe(true)
  })
})

describe("TokenCounter.estimate", () => {
  it.effect("layerEstimate estimates what it counts: ~4 characters a token, never exact", () =>
    Effect.gen(function* () {
      const counter = yield* TokenCounter.TokenCounter
      const chat = request(conversation(1, 3))
      const estimate = counter.estimate(chat, "gpt-4o")
      expect(estimate.exact).toBe(false)
      expect(yield* counter.count(chat, "gpt-4o")).toEqual(estimate)
    }).pipe(Effect.provide(TokenCounter.layerEstimate))
  )

  it.scoped("calibrates its chars-per-token ratio toward the exact counts the counter performs", () =>
    Effect.gen(function* () {
      const counter = yield* TokenCounter.make({ workers: 0 })
      const probe = request(conversation(99, 10))
      const exact = yield* TokenCounter.make({ workers: 0 }).pipe(Effect.flatMap((c) => c.count(probe, "gpt-4o")))
      const before = counter.estimate(probe, "gpt-4o")
      expect(before.exact).toBe(false)
      expect(statsOf(counter).charsPerToken.o200k_base).toBe(TokenCounter.DEFAULT_CHARS_PER_TOKEN)

      // This prose runs well above 4 characters a token, so the default estimate is far off.
      const errorBefore = Math.abs(before.tokens - exact.tokens) / exact.tokens
      expect(errorBefore).toBeGreaterThan(0.1)
      for (let seed = 1; seed <= 20; seed++) yield* counter.count(request(conversation(seed, 5)), "gpt-4o")

      const after = counter.estimate(probe, "gpt-4o")
      const errorAfter = Math.abs(after.tokens - exact.tokens) / exact.tokens
      expect(after.exact).toBe(false)
      expect(errorAfter).toBeLessThan(errorBefore / 2)
      expect(errorAfter).toBeLessThan(0.05)
      // Only the encoding that counted learned anything.
      expect(statsOf(counter).charsPerToken.cl100k_base).toBe(TokenCounter.DEFAULT_CHARS_PER_TOKEN)
    })
  )
})

describe("TokenCounter memo", () => {
  it.scoped("encodes only the new message when a 20-turn conversation is resent with one more turn", () =>
    Effect.gen(function* () {
      const counter = yield* TokenCounter.make()
      const history = conversation(7, 10) // system + 20 turns
      const first = yield* counter.count(request(history), "gpt-4o")
      const afterFirst = statsOf(counter)
      // Each distinct text once: 21 contents and the three roles.
      expect(afterFirst.encodes).toBe(21 + 3)

      const next = [...history, { role: "user" as const, content: prose(12345, 500) }]
      const second = yield* counter.count(request(next), "gpt-4o")
      const afterSecond = statsOf(counter)
      expect(afterSecond.encodes - afterFirst.encodes).toBe(1)
      expect(afterSecond.encodedChars - afterFirst.encodedChars).toBe(500)

      // And the memoized count is the count: a fresh counter agrees.
      const fresh = yield* TokenCounter.make({ workers: 0 })
      expect(second).toEqual(yield* fresh.count(request(next), "gpt-4o"))
      // One more message adds its own tokens; the reply priming (3) is counted once either way.
      const alone = yield* fresh.count(request([next.at(-1)!]), "gpt-4o")
      expect(second.tokens - first.tokens).toBe(alone.tokens - 3)
    })
  )

  it.scoped("stays bounded, and keeps a system prompt sent with every request while older texts turn over", () =>
    Effect.gen(function* () {
      const counter = yield* TokenCounter.make({ workers: 0 })
      const system: Wire.ChatMessage = { role: "system", content: prose(1, 600) }
      const batch = (k: number) =>
        request([
          system,
          ...Array.from({ length: 1_000 }, (_, i) => ({ role: "user" as const, content: `note ${k}.${i}` }))
        ])
      // 60 000 distinct texts, more than the memo holds (50 000).
      for (let k = 0; k < 60; k++) yield* counter.count(batch(k), "gpt-4o")
      // Each note once; the system prompt and the two roles once too, though the oldest entries.
      expect(statsOf(counter).encodes).toBe(60_000 + 3)

      yield* counter.count(request([system]), "gpt-4o")
      expect(statsOf(counter).encodes).toBe(60_000 + 3)
      // The first notes made room: resent, they are encoded again.
      yield* counter.count(batch(0), "gpt-4o")
      expect(statsOf(counter).encodes).toBe(60_000 + 3 + 1_000)
    })
  )
})

describe("TokenCounter off-thread counting", () => {
  // Real worker threads: the first count starts a worker and loads tiktoken in it (~1 s).
  const WORKER_TEST_TIMEOUT = 60_000

  it.scopedLive(
    "counts a 1 MB prompt in a worker thread, to the same count as inline",
    () =>
      Effect.gen(function* () {
        const big = request([
          { role: "system", content: "You summarize documents." },
          { role: "user", content: prose(2024, MEGABYTE) }
        ])
        const counter = yield* TokenCounter.make()
        const inline = yield* TokenCounter.make({ workers: 0 })
        const offThread = yield* counter.count(big, "gpt-4o")
        expect(statsOf(counter).offThreadCounts).toBe(1)
        expect(statsOf(counter).workers).toBe(1)
        expect(offThread).toEqual(yield* inline.count(big, "gpt-4o"))
        expect(statsOf(inline).offThreadCounts).toBe(0)

        // The worker's counts are memoized and calibrate the estimate like inline ones.
        expect(statsOf(counter).charsPerToken).toEqual(statsOf(inline).charsPerToken)
        yield* counter.count(big, "gpt-4o")
        expect(statsOf(counter).offThreadCounts).toBe(1)
      }),
    WORKER_TEST_TIMEOUT
  )

  it.scopedLive(
    "keeps the event loop responsive while a worker counts a 1 MB prompt",
    () =>
      Effect.gen(function* () {
        const counter = yield* TokenCounter.make()
        const big = request([{ role: "user", content: prose(31337, MEGABYTE) }])
        let ticks = 0
        const ticker = yield* Effect.acquireRelease(
          Effect.sync(() => setInterval(() => ticks++, 10)),
          (timer) => Effect.sync(() => clearInterval(timer))
        )
        yield* counter.count(big, "gpt-4o")
        const ticked = ticks
        clearInterval(ticker)
        // Counting 1 MB on the event loop would let no tick through until it finished.
        expect(statsOf(counter).offThreadCounts).toBe(1)
        expect(ticked).toBeGreaterThanOrEqual(3)
      }),
    WORKER_TEST_TIMEOUT
  )

  it.scopedLive(
    "ends an interrupted off-thread count as interrupted, and the worker serves the next count",
    () =>
      Effect.gen(function* () {
        const counter = yield* TokenCounter.make()
        const inline = yield* TokenCounter.make({ workers: 0 })
        const fiber = yield* Effect.fork(
          counter.count(request([{ role: "user", content: prose(5, MEGABYTE) }]), "gpt-4o")
        )
        yield* Effect.yieldNow()
        expect(Exit.isInterrupted(yield* Fiber.interrupt(fiber))).toBe(true)

        const next = request([{ role: "user", content: prose(6, MEGABYTE) }])
        expect(yield* counter.count(next, "gpt-4o")).toEqual(yield* inline.count(next, "gpt-4o"))
        expect(statsOf(counter).offThreadCounts).toBe(1)
      }),
    WORKER_TEST_TIMEOUT
  )

  it.live(
    "terminates the worker when the counter's scope closes",
    () =>
      Effect.gen(function* () {
        const scope = yield* Scope.make()
        const counter = yield* TokenCounter.make().pipe(Scope.extend(scope))
        expect(statsOf(counter).workers).toBe(0) // started lazily
        yield* counter.count(request([{ role: "user", content: prose(8, 100 * 1024) }]), "gpt-4o")
        expect(statsOf(counter).workers).toBe(1)
        yield* Scope.close(scope, Exit.void)
        expect(statsOf(counter).workers).toBe(0)
      }),
    WORKER_TEST_TIMEOUT
  )

  it.scopedLive(
    "counts inline, with one warning, when the worker cannot start",
    () => {
      const warnings: Array<unknown> = []
      const capture = Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ logLevel, message }) => {
          if (logLevel._tag === "Warning") warnings.push(message)
        })
      )
      return Effect.gen(function* () {
        const counter = yield* TokenCounter.make({
          workerScript: new URL("./no-such-worker.mjs", import.meta.url)
        })
        const inline = yield* TokenCounter.make({ workers: 0 })
        for (const seed of [1, 2]) {
          const big = request([{ role: "user", content: prose(seed, 100 * 1024) }])
          expect(yield* counter.count(big, "gpt-4o")).toEqual(yield* inline.count(big, "gpt-4o"))
        }
        expect(statsOf(counter).offThreadCounts).toBe(0)
        expect(statsOf(counter).workers).toBe(0)
        expect(warnings).toHaveLength(1)
        expect(String(warnings[0])).toContain("counting large prompts on the event loop")
      }).pipe(Effect.provide(capture))
    },
    WORKER_TEST_TIMEOUT
  )
})
