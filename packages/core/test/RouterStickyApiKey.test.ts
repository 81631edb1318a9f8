import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Guard, Matcher, Router, StateStore, Strategy, TokenCounter, Topology } from "../src/index.js"
import { answer, chatRequest, completion, provider, upstream } from "./fixtures.js"

/**
 * The memory store, recording every key and value that goes in or is asked for, at both levels
 * (`local`, where sticky sessions live, and the store itself): the keys of every operation, the
 * values set and the JSON of every state `modify` stores.
 */
const recordingStore = (seen: Array<string>) =>
  Layer.effect(
    StateStore.StateStore,
    Effect.map(StateStore.makeMemory, (memory) => {
      const recorded =
        <S, A>(f: (current: S | undefined) => readonly [A, S | undefined]) =>
        (current: S | undefined) => {
          const result = f(current)
          seen.push(JSON.stringify(result[1]) ?? "")
          return result
        }
      return StateStore.StateStore.of({
        local: {
          modify: <S, A>(key: string, f: (current: S | undefined) => readonly [A, S | undefined]) => {
            seen.push(key)
            return memory.local.modify<S, A>(key, recorded(f))
          },
          peek: <S>(key: string) => {
            seen.push(key)
            return memory.local.peek<S>(key)
          },
          get: (key, now) => {
            seen.push(key)
            return memory.local.get(key, now)
          },
          set: (key, value, now, ttlMs) => {
            seen.push(key, value)
            memory.local.set(key, value, now, ttlMs)
          }
        },
        increment: (key, by) => Effect.suspend(() => (seen.push(key), memory.increment(key, by))),
        get: (key) => Effect.suspend(() => (seen.push(key), memory.get(key))),
        set: (key, value, ttlMs) => Effect.suspend(() => (seen.push(key, value), memory.set(key, value, ttlMs))),
        remove: (key) => Effect.suspend(() => (seen.push(key), memory.remove(key))),
        modify: <S, A>(key: string, f: (current: S | undefined) => readonly [A, S | undefined]) =>
          Effect.suspend(() => {
            seen.push(key)
            return memory.modify<S, A>(key, recorded(f))
          }),
        lease: (key, want, limit, windowMs) =>
          Effect.suspend(() => (seen.push(key), memory.lease(key, want, limit, windowMs)))
      })
    })
  )

/** Each new selection takes the next candidate: without affinity, requests rotate. */
const rotating = () => {
  let turn = 0
  return Strategy.make("rotating", (selection) => selection.candidates[turn++ % selection.candidates.length]!)
}

const ALICE = "sk-alice-SECRET-0123456789"
const BOB = "sk-bob-SECRET-9876543210"

describe("Router sticky sessions by API key", () => {
  it.effect("keeps each API key on its own upstream and never puts the raw key in the state store", () => {
    const seen: Array<string> = []
    const pools = [
      Topology.pool({
        id: "gpt",
        models: ["gpt-4o"],
        upstreams: ["a", "b", "c"].map((id) => upstream(id)),
        sticky: { key: "api-key", header: "x-session-id", ttlMs: 60_000 }
      })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const asAlice = yield* router.chat(chatRequest(), { apiKey: ALICE })
      const asBob = yield* router.chat(chatRequest(), { apiKey: BOB })
      expect([asAlice.decision.sticky, asBob.decision.sticky]).toEqual(["miss", "miss"])
      expect(asBob.decision.upstream).not.toBe(asAlice.decision.upstream)
      for (let i = 0; i < 3; i++) {
        const alice = yield* router.chat(chatRequest(), { apiKey: ALICE })
        const bob = yield* router.chat(chatRequest(), { apiKey: BOB })
        expect([alice.decision.upstream, alice.decision.sticky]).toEqual([asAlice.decision.upstream, "hit"])
        expect([bob.decision.upstream, bob.decision.sticky]).toEqual([asBob.decision.upstream, "hit"])
      }
      // Affinities were stored (and read)...
      expect(seen.some((entry) => entry.startsWith("sticky:gpt:"))).toBe(true)
      // ...under something other than the keys themselves.
      const leaked = seen.filter((entry) => entry.includes("SECRET"))
      expect(leaked).toEqual([])
    }).pipe(
      Effect.provide(
        Router.layer.pipe(
          Layer.provide(Matcher.layer),
          Layer.provide(
            Layer.mergeAll(
              Topology.layerPools(pools),
              TokenCounter.layerEstimate,
              provider({ chat: (u) => Effect.succeed(answer(completion(u.id))) }),
              Strategy.layer(rotating()),
              Guard.none,
              recordingStore(seen)
            )
          )
        )
      )
    )
  })

  it.effect("gives requests without an API key no affinity", () => {
    const pools = [
      Topology.pool({
        id: "gpt",
        models: ["gpt-4o"],
        upstreams: ["a", "b"].map((id) => upstream(id)),
        sticky: { key: "api-key", header: "x-session-id", ttlMs: 60_000 }
      })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const first = yield* router.chat(chatRequest())
      const second = yield* router.chat(chatRequest())
      expect(first.decision.sticky).toBeUndefined()
      expect([first.decision.upstream, second.decision.upstream]).toEqual(["a", "b"])
    }).pipe(
      Effect.provide(
        Router.layer.pipe(
          Layer.provide(Matcher.layer),
          Layer.provide(
            Layer.mergeAll(
              Topology.layerPools(pools),
              TokenCounter.layerEstimate,
              provider({ chat: (u) => Effect.succeed(answer(completion(u.id))) }),
              Strategy.layer(rotating()),
              Guard.none,
              StateStore.layerMemory
            )
          )
        )
      )
    )
  })
})
