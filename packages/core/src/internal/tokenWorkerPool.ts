/**
 * A small pool of `node:worker_threads` workers that count tokens off the event loop for
 * TokenCounter. The workers run `tokenWorker.mjs` (plain JavaScript, loading tiktoken itself: its
 * WASM at start, an encoding's tables on the first job that needs them).
 *
 * - Workers start lazily, on the first job, and stay for reuse until the owning scope closes, which
 *   terminates them and waits for their threads to exit.
 * - An idle worker is `unref`'d: it never keeps the process alive; a worker with jobs in flight is
 *   `ref`'d, so a program awaiting a count does not exit under it.
 * - A worker that fails before it reports ready (missing script, tiktoken not loadable...) disables
 *   the pool for good: every job answers `undefined` and the caller counts inline. A worker that dies
 *   later fails its jobs the same way and is replaced on the next job.
 * - An interrupted job is forgotten, not aborted: the worker finishes it (tiktoken cannot be
 *   stopped mid-encode) and its answer is dropped.
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import { Worker } from "node:worker_threads"

/** The encodings a worker knows. */
export type Encoding = "o200k_base" | "cl100k_base"

/** The pool, as TokenCounter uses it. */
export interface TokenWorkerPool {
  /**
   * Token counts of `texts` (one per text, same order), counted in a worker; `undefined` when no
   * worker could count them, so the caller counts inline. Logs a warning when the pool gives up.
   */
  readonly count: (encoding: Encoding, texts: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<number> | undefined>
  /** Worker threads alive now. */
  readonly running: () => number
  /** The encodings loaded in the worker threads alive now. */
  readonly encodings: () => ReadonlyArray<Encoding>
}

type Answer = { readonly _tag: "Counts"; readonly counts: ReadonlyArray<number> } | Unavailable

interface Unavailable {
  readonly _tag: "Unavailable"
  readonly reason: string
}

interface Slot {
  readonly _tag: "Slot"
  readonly worker: Worker
  ready: boolean
  readonly pending: Map<number, (answer: Answer) => void>
  /** The encodings this worker has loaded. */
  readonly encodings: Set<Encoding>
}

type Message =
  | { readonly type: "ready" }
  | { readonly type: "loaded"; readonly encoding: Encoding }
  | { readonly id: number; readonly counts: ReadonlyArray<number> }
  | { readonly id: number; readonly error: string }

const reasonOf = (error: unknown): string => (error instanceof Error ? error.message : String(error))

/** Starts nothing yet: workers start on the first job. `size` ≥ 1. */
export const make = (options: {
  readonly size: number
  readonly script: URL
}): Effect.Effect<TokenWorkerPool, never, Scope.Scope> =>
  Effect.gen(function* () {
    const slots: Array<Slot> = []
    let disabled: string | undefined
    let closed = false
    let nextId = 0

    const settle = (slot: Slot, id: number, answer: Answer) => {
      const resume = slot.pending.get(id)
      if (resume === undefined) return // interrupted meanwhile
      slot.pending.delete(id)
      if (slot.pending.size === 0) slot.worker.unref()
      resume(answer)
    }

    const drop = (slot: Slot, reason: string) => {
      const index = slots.indexOf(slot)
      if (index >= 0) slots.splice(index, 1)
      if (!slot.ready && disabled === undefined) disabled = reason
      const waiting = [...slot.pending.values()]
      slot.pending.clear()
      for (const resume of waiting) resume({ _tag: "Unavailable", reason })
    }

    const spawn = (): Slot | Unavailable => {
      let worker: Worker
      try {
        // No inherited flags: the script is plain JavaScript, and loaders such as tsx would only slow
        // the thread's start.
        worker = new Worker(options.script, { name: "sluice-token-counter", execArgv: [] })
      } catch (error) {
        disabled = `could not start ${options.script.href}: ${reasonOf(error)}`
        return { _tag: "Unavailable", reason: disabled }
      }
      worker.unref()
      const slot: Slot = { _tag: "Slot", worker, ready: false, pending: new Map(), encodings: new Set() }
      worker.on("message", (message: Message) => {
        if ("type" in message) {
          if (message.type === "ready") slot.ready = true
          else slot.encodings.add(message.encoding)
        } else if ("counts" in message) settle(slot, message.id, { _tag: "Counts", counts: message.counts })
        else settle(slot, message.id, { _tag: "Unavailable", reason: `the worker failed: ${message.error}` })
      })
      worker.on("error", (error) =>
        drop(
          slot,
          slot.ready ? `the worker crashed: ${reasonOf(error)}` : `the worker failed to start: ${reasonOf(error)}`
        )
      )
      worker.on("exit", (code) => drop(slot, `the worker exited with code ${code}`))
      slots.push(slot)
      return slot
    }

    const pick = (): Slot | Unavailable => {
      if (closed) return { _tag: "Unavailable", reason: "the token counter is closed" }
      if (disabled !== undefined) return { _tag: "Unavailable", reason: disabled }
      let best: Slot | undefined
      for (const slot of slots) if (best === undefined || slot.pending.size < best.pending.size) best = slot
      if (best !== undefined && (best.pending.size === 0 || slots.length >= options.size)) return best
      return spawn()
    }

    const dispatch = (encoding: Encoding, texts: ReadonlyArray<string>) =>
      Effect.async<Answer>((resume) => {
        const slot = pick()
        if (slot._tag === "Unavailable") return resume(Effect.succeed(slot))
        const id = nextId++
        slot.pending.set(id, (answer) => resume(Effect.succeed(answer)))
        if (slot.pending.size === 1) slot.worker.ref()
        try {
          slot.worker.postMessage({ id, encoding, texts })
        } catch (error) {
          settle(slot, id, { _tag: "Unavailable", reason: `could not send to the worker: ${reasonOf(error)}` })
          return
        }
        return Effect.sync(() => {
          if (slot.pending.delete(id) && slot.pending.size === 0) slot.worker.unref()
        })
      })

    let warned = false
    const count: TokenWorkerPool["count"] = (encoding, texts) =>
      Effect.flatMap(dispatch(encoding, texts), (answer) => {
        if (answer._tag === "Counts") return Effect.succeed(answer.counts)
        if (warned || closed) return Effect.succeed(undefined)
        // Once is enough: after a failed start every large prompt would say the same.
        warned = disabled !== undefined
        return Effect.as(
          Effect.logWarning(`TokenCounter: ${answer.reason}; counting large prompts on the event loop instead`),
          undefined
        )
      })

    yield* Effect.addFinalizer(() =>
      Effect.promise(async () => {
        closed = true
        const all = slots.splice(0)
        await Promise.all(all.map((slot) => slot.worker.terminate()))
      })
    )

    return {
      count,
      running: () => slots.length,
      encodings: () => [...new Set(slots.flatMap((slot) => [...slot.encodings]))]
    }
  })
