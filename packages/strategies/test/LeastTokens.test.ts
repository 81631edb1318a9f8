import { describe, expect, it } from "@effect/vitest"
import { Live } from "@sluice/core"
import { LeastTokens } from "../src/index.js"
import { memoryLocal, pick, poolOf, selection, upstreams } from "./fixtures.js"

describe("LeastTokens", () => {
  const strategy = LeastTokens.service
  const pool = poolOf("chat", upstreams({ a: 1, b: 1 }), "least-tokens")

  it("weighs load in reserved tokens, not requests: one long generation outweighs three short answers", () => {
    const local = memoryLocal()
    Live.started(local, "a", 8000)
    for (let i = 0; i < 3; i++) Live.started(local, "b", 500)
    expect(pick(strategy, selection(pool, { local, promptTokens: 100, reservedOutputTokens: 400 }))).toBe("b")
    const choice = strategy.select(selection(pool, { local, promptTokens: 100, reservedOutputTokens: 400 }))
    expect("scores" in choice && choice.scores).toEqual({ a: 8500, b: 2000 })
  })

  it("frees the tokens when the attempt finishes", () => {
    const local = memoryLocal()
    Live.started(local, "a", 8000)
    Live.finished(local, "a", 8000, { _tag: "Success", latencyMs: 10, inputTokens: 10, outputTokens: 10 }, 10)
    Live.started(local, "b", 10)
    expect(pick(strategy, selection(pool, { local }))).toBe("a")
  })
})
