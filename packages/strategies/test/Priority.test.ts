import { describe, expect, it } from "@effect/vitest"
import { Strategy } from "@sluice/core"
import { Effect } from "effect"
import { Priority } from "../src/index.js"
import { pick, picks, poolOf, selection, upstreams } from "./fixtures.js"

describe("Priority", () => {
  const pool = poolOf("chat", upstreams({ primary: 1, secondary: 5, tertiary: 1 }), "priority")

  it.effect("always picks the first candidate in config order", () =>
    Effect.gen(function* () {
      const strategy = yield* Priority.make
      expect(strategy.name).toBe("priority")
      expect(picks(strategy, selection(pool), 5)).toEqual(Array(5).fill("primary"))
    })
  )

  it.effect("fails over to the next candidate when the primary is not a candidate", () =>
    Effect.gen(function* () {
      const strategy = yield* Priority.make
      const [, secondary, tertiary] = pool.upstreams
      expect(pick(strategy, selection(pool, { candidates: [secondary!, tertiary!] }))).toBe("secondary")
    })
  )

  it.effect("is provided as the Strategy service by its layer", () =>
    Effect.gen(function* () {
      const strategy = yield* Strategy.Strategy
      expect(strategy.name).toBe("priority")
    }).pipe(Effect.provide(Priority.layer))
  )
})
