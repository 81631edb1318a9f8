/**
 * Encoders load lazily: making a counter and estimating load nothing; an exact count loads the one
 * encoding its model uses, in the thread that counts — the worker, unless the counter counts inline.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { Wire } from "../src/index.js"
import { TokenCounter } from "../src/index.js"

const chat = (model: string, content: string): Wire.ChatCompletionRequest => ({
  model,
  messages: [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content }
  ]
})

const statsOf = (counter: TokenCounter.Service): TokenCounter.Stats => {
  if (counter.stats === undefined) throw new Error("TokenCounter.make keeps stats")
  return counter.stats()
}

// Real worker threads: the first exact count starts one and builds an encoder in it (~1 s).
const WORKER_TEST_TIMEOUT = 60_000

describe("TokenCounter encoder loading", () => {
  it.scopedLive(
    "loads no encoder to be made or to estimate; a gpt-4o count loads o200k_base alone, in the worker",
    () =>
      Effect.gen(function* () {
        const counter = yield* TokenCounter.make()
        expect(statsOf(counter).encoders).toEqual({ inline: [], workers: [] })

        for (const model of ["gpt-4o", "gpt-4", "claude-sonnet-4", "text-embedding-3-small"]) {
          expect(counter.estimate(chat(model, "How many tokens is this?"), model).exact).toBe(false)
        }
        expect(statsOf(counter).encoders).toEqual({ inline: [], workers: [] })
        expect(statsOf(counter).workers).toBe(0)

        const counted = yield* counter.count(chat("gpt-4o", "How many tokens is this?"), "gpt-4o")
        expect(counted.exact).toBe(true)
        expect(statsOf(counter).offThreadCounts).toBe(1)
        expect(statsOf(counter).encoders).toEqual({ inline: [], workers: ["o200k_base"] })

        // A model without a tokenizer of its own is counted with o200k_base too: nothing new loads.
        yield* counter.count(chat("claude-sonnet-4", "And this?"), "claude-sonnet-4")
        expect(statsOf(counter).encoders).toEqual({ inline: [], workers: ["o200k_base"] })

        // gpt-4 needs cl100k_base, which loads only now.
        expect((yield* counter.count(chat("gpt-4", "And this one?"), "gpt-4")).exact).toBe(true)
        expect(statsOf(counter).encoders.inline).toEqual([])
        expect([...statsOf(counter).encoders.workers].sort()).toEqual(["cl100k_base", "o200k_base"])
      }),
    WORKER_TEST_TIMEOUT
  )

  it.scoped("counting inline builds only the encoding the model uses, on its first count", () =>
    Effect.gen(function* () {
      const counter = yield* TokenCounter.make({ workers: 0 })
      counter.estimate(chat("gpt-4", "How many tokens is this?"), "gpt-4")
      expect(statsOf(counter).encoders).toEqual({ inline: [], workers: [] })

      yield* counter.count(chat("gpt-4", "How many tokens is this?"), "gpt-4")
      expect(statsOf(counter).encoders).toEqual({ inline: ["cl100k_base"], workers: [] })
      expect(statsOf(counter).offThreadCounts).toBe(0)
    })
  )

  it.scopedLive(
    "counts the same in the worker as inline, with only the lazily built encoders",
    () =>
      Effect.gen(function* () {
        const offThread = yield* TokenCounter.make()
        const inline = yield* TokenCounter.make({ workers: 0 })
        for (const model of ["gpt-4o", "gpt-4"]) {
          const request = chat(model, "The quick brown fox jumps over the lazy dog. ".repeat(20))
          expect(yield* offThread.count(request, model)).toEqual(yield* inline.count(request, model))
        }
        expect(statsOf(offThread).offThreadCounts).toBe(2)
      }),
    WORKER_TEST_TIMEOUT
  )
})
