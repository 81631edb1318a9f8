/**
 * StateStore: where mutable per-upstream and per-pool state lives (breakers, health, budgets,
 * in-flight counts, sticky sessions, strategy counters).
 *
 * Two levels, so that admitting a request never waits on a network round trip:
 *
 * - **`local`** — this instance's state, read and changed synchronously on the hot path (guards,
 *   strategies, sticky sessions). Each `modify` is atomic: it runs whole, with no yield inside.
 * - **The store itself** (`modify`, `get`, `set`, `increment`, `remove`, `lease`) — effectful and
 *   authoritative. The memory store is one process, so both levels are the same maps. A shared store
 *   (Redis, shared by many gateway instances) serves `local` as a replica it keeps in step in the
 *   background, and shares budgets through **leases**: an instance takes a slice of a budget in one
 *   round trip ({@link Service.lease}) and spends it locally, asking for the next slice before the
 *   current one runs out — so the total never passes the limit, and no request waits on the network
 *   just to be admitted.
 *
 * Time comes from Effect's `Clock` (the effectful operations read it; `local` operations are handed
 * `now`), so `TestClock` drives expiry in tests.
 */
import { Clock, Context, Effect, Layer, Option } from "effect"

/**
 * This instance's state, synchronously. Keys are namespaced by the caller (`rl:<upstream>`,
 * `cb:<upstream>`, `sticky:<pool>:<session>`).
 */
export interface Local {
  /**
   * Atomically replaces the structured state under `key` with what `f` computes from the current
   * one, and returns `f`'s result. `f` must be pure. Returning `undefined` as the next state removes
   * the key; returning the current state object itself means "unchanged" (a read: a shared store
   * writes nothing back). State must be JSON-serialisable, so a shared store can replicate it.
   */
  readonly modify: <S, A>(key: string, f: (current: S | undefined) => readonly [A, S | undefined]) => A
  /**
   * The structured state under `key` as {@link modify} last left it, without changing it: a read
   * that allocates nothing (strategies read the live state of every candidate this way). Treat it as
   * immutable.
   */
  readonly peek: <S>(key: string) => S | undefined
  /** Reads a value; a value past its expiry (epoch ms, compared with `now`) reads as undefined. */
  readonly get: (key: string, now: number) => string | undefined
  /** Writes a value that expires `ttlMs` after `now` (never, without `ttlMs`). */
  readonly set: (key: string, value: string, now: number, ttlMs?: number) => void
}

/** Atomic state operations. Keys are namespaced by the caller (`rr:<pool>`, `inflight:<upstream>`). */
export interface Service {
  /** This instance's state, for the hot path. See {@link Local}. */
  readonly local: Local
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
   * one, and returns `f`'s result — on the authoritative store. `f` must be pure and synchronous: the
   * memory store runs it in one step of the event loop (it is `local.modify`); a shared store runs it
   * as a compare-and-set transaction and may call it again if another instance changed the key
   * meanwhile. Same conventions as {@link Local.modify}.
   */
  readonly modify: <S, A>(key: string, f: (current: S | undefined) => readonly [A, S | undefined]) => Effect.Effect<A>
  /**
   * Takes a slice of a shared budget for this instance to spend locally: up to `want` units of
   * `key`, a budget of `limit` units per sliding `windowMs`. Succeeds with the units granted (0 when
   * the budget is spent; fewer than asked near its end), each counted against the budget until
   * `windowMs` after the grant. One round trip on a shared store. The memory store is the only
   * instance, so it grants whatever the budget has left.
   */
  readonly lease: (key: string, want: number, limit: number, windowMs: number) => Effect.Effect<Lease>
}

/** A slice of a shared budget granted to this instance. */
export interface Lease {
  /** Units granted. */
  readonly units: number
  /** Epoch milliseconds when the grant stops counting against the budget. */
  readonly expiresAt: number
}

/** Where mutable routing state lives. */
export class StateStore extends Context.Tag("@sluice/core/StateStore")<StateStore, Service>() {}

/** The grants of one leased budget, oldest first: `[expiresAt, units]`. */
type Grants = ReadonlyArray<readonly [number, number]>

/** An in-memory store: one process, atomic because the JavaScript event loop runs each operation whole. */
export const makeMemory: Effect.Effect<Service> = Effect.sync(() => {
  const counters = new Map<string, number>()
  const values = new Map<string, { value: string; expiresAt: number }>()
  const states = new Map<string, unknown>()
  const local: Local = {
    modify: <S, A>(key: string, f: (current: S | undefined) => readonly [A, S | undefined]): A => {
      const current = states.get(key) as S | undefined
      const [result, next] = f(current)
      if (next === undefined) {
        if (current !== undefined) states.delete(key)
      } else if (next !== current) states.set(key, next)
      return result
    },
    peek: <S>(key: string): S | undefined => states.get(key) as S | undefined,
    get: (key, now) => {
      const entry = values.get(key)
      if (entry === undefined) return undefined
      if (entry.expiresAt <= now) {
        values.delete(key)
        return undefined
      }
      return entry.value
    },
    set: (key, value, now, ttlMs) => {
      values.set(key, { value, expiresAt: ttlMs === undefined ? Number.POSITIVE_INFINITY : now + ttlMs })
    }
  }
  return StateStore.of({
    local,
    increment: (key, by = 1) =>
      Effect.sync(() => {
        const next = (counters.get(key) ?? 0) + by
        counters.set(key, next)
        return next
      }),
    get: (key) => Effect.map(Clock.currentTimeMillis, (now) => Option.fromNullable(local.get(key, now))),
    set: (key, value, ttlMs) => Effect.map(Clock.currentTimeMillis, (now) => local.set(key, value, now, ttlMs)),
    remove: (key) =>
      Effect.sync(() => {
        counters.delete(key)
        values.delete(key)
        states.delete(key)
      }),
    modify: (key, f) => Effect.sync(() => local.modify(key, f)),
    lease: (key, want, limit, windowMs) =>
      Effect.map(Clock.currentTimeMillis, (now) =>
        local.modify<Grants, Lease>(`lease:${key}`, (current) => {
          const live = (current ?? []).filter(([expiresAt]) => expiresAt > now)
          let used = 0
          for (const [, units] of live) used += units
          const units = Math.max(0, Math.min(want, limit - used))
          const expiresAt = now + windowMs
          const grants = units > 0 ? [...live, [expiresAt, units] as const] : live
          return [{ units, expiresAt }, grants.length === 0 ? undefined : grants]
        })
      )
  })
})

/** The in-memory store (the embedded default). */
export const layerMemory = Layer.effect(StateStore, makeMemory)
