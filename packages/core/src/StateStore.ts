/**
 * StateStore: where mutable per-upstream and per-pool state lives (strategy counters, in-flight
 * counts, sticky sessions, budgets). Every operation is atomic on the store, so several gateway
 * instances sharing one store (Redis) never race with check-then-act. `memory` is the embedded
 * default; it keeps time with Effect's `Clock`, so `TestClock` drives expiry in tests.
 */
import { Clock, Context, Effect, Layer, Option } from "effect"

/** Atomic state operations. Keys are namespaced by the caller (`rr:<pool>`, `inflight:<upstream>`). */
export interface Service {
  /** Adds `by` (default 1) to a counter and returns the new value. Missing counters start at 0. */
  readonly increment: (key: string, by?: number) => Effect.Effect<number>
  /** Reads a value; expired values read as none. */
  readonly get: (key: string) => Effect.Effect<Option.Option<string>>
  /** Writes a value, optionally expiring after `ttlMs` milliseconds. */
  readonly set: (key: string, value: string, ttlMs?: number) => Effect.Effect<void>
  /** Removes a key. */
  readonly remove: (key: string) => Effect.Effect<void>
  /**
   * Atomically replaces the structured state under `key` with what `f` computes from the current
   * one, and returns `f`'s result. `f` must be pure and synchronous: the memory store runs it in one
   * step of the event loop; a shared store (Redis) runs it as a compare-and-set transaction and may
   * call it again if another instance changed the key meanwhile. State must be JSON-serialisable.
   * Returning `undefined` as the next state removes the key. Returning the current state object
   * itself means "unchanged": it is a read, and a shared store skips the write. Read the time (Clock)
   * before calling and close over it; never yield inside `f`.
   */
  readonly modify: <S, A>(key: string, f: (current: S | undefined) => readonly [A, S | undefined]) => Effect.Effect<A>
}

/** Where mutable routing state lives. */
export class StateStore extends Context.Tag("@sluice/core/StateStore")<StateStore, Service>() {}

/** An in-memory store: one process, atomic because the JavaScript event loop runs each operation whole. */
export const makeMemory: Effect.Effect<Service> = Effect.sync(() => {
  const counters = new Map<string, number>()
  const values = new Map<string, { value: string; expiresAt: number }>()
  const states = new Map<string, unknown>()
  return StateStore.of({
    increment: (key, by = 1) =>
      Effect.sync(() => {
        const next = (counters.get(key) ?? 0) + by
        counters.set(key, next)
        return next
      }),
    get: (key) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const entry = values.get(key)
        if (entry === undefined) return Option.none()
        if (entry.expiresAt <= now) {
          values.delete(key)
          return Option.none()
        }
        return Option.some(entry.value)
      }),
    set: (key, value, ttlMs) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        values.set(key, { value, expiresAt: ttlMs === undefined ? Number.POSITIVE_INFINITY : now + ttlMs })
      }),
    remove: (key) =>
      Effect.sync(() => {
        counters.delete(key)
        values.delete(key)
        states.delete(key)
      }),
    modify: <S, A>(key: string, f: (current: S | undefined) => readonly [A, S | undefined]) =>
      Effect.sync(() => {
        const [result, next] = f(states.get(key) as S | undefined)
        if (next === undefined) states.delete(key)
        else states.set(key, next)
        return result
      })
  })
})

/** The in-memory store (the embedded default). */
export const layerMemory = Layer.effect(StateStore, makeMemory)
