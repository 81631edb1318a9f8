/**
 * Reloading the config file into the running gateway: on `SIGHUP`, and when the file changes with
 * `sluice serve --watch`. The file is loaded and checked as at start (every problem by path); an
 * invalid one is refused with its problems logged and the running config stays. A valid one is
 * swapped in by {@link Routing.Routing.replace}.
 */
import { Config as SluiceConfig } from "@sluice/core"
import { Effect, Fiber, Layer, Runtime } from "effect"
import { watch as watchFile } from "node:fs"
import { basename, dirname } from "node:path"
import * as ConfigFile from "./ConfigFile.js"
import * as Routing from "./Routing.js"

/** Loads `path` and swaps it in; fails with the `ConfigError` listing every problem. */
export const fromFile = Effect.fn("Reload.fromFile")(function* (path: string) {
  const routing = yield* Routing.Routing
  const config = yield* ConfigFile.load(path)
  return yield* routing.replace(config)
})

/** {@link fromFile}, its outcome logged (a refused config's problems by path; never a secret). */
export const logged = (path: string) =>
  fromFile(path).pipe(
    Effect.tap((generation) => Effect.logInfo(`reloaded ${path}: generation ${generation.number} serves new requests`)),
    Effect.catchTag("ConfigError", (error: SluiceConfig.ConfigError) =>
      Effect.logError(`reload refused, the running config stays: ${error.message}`)
    ),
    Effect.asVoid
  )

/** How a file is watched. */
export interface Options {
  /** Also reload when the file changes (its directory is watched, so editors that replace it work). */
  readonly watch?: boolean
  /** Changes closer together than this are one reload, in milliseconds. Default 200. */
  readonly debounceMs?: number
}

/**
 * Reloads `path` on `SIGHUP` (which otherwise ends the process), and on changes with
 * `options.watch`, for as long as the layer lives. One reload runs at a time; a signal during one
 * runs another after it.
 */
export const layer = (path: string, options: Options = {}): Layer.Layer<never, never, Routing.Routing> =>
  Layer.scopedDiscard(
    Effect.gen(function* () {
      const runtime = yield* Effect.runtime<Routing.Routing>()
      const lock = yield* Effect.makeSemaphore(1)
      const run = Runtime.runFork(runtime)
      const running = new Set<Fiber.RuntimeFiber<void>>()
      const reload = () => {
        const fiber = run(lock.withPermits(1)(logged(path)))
        running.add(fiber)
        fiber.addObserver(() => running.delete(fiber))
      }
      yield* Effect.acquireRelease(
        Effect.sync(() => process.on("SIGHUP", reload)),
        () => Effect.sync(() => process.off("SIGHUP", reload))
      )
      yield* Effect.addFinalizer(() => Fiber.interruptAll(running))
      if (options.watch !== true) return
      const name = basename(path)
      let timer: ReturnType<typeof setTimeout> | undefined
      yield* Effect.acquireRelease(
        Effect.sync(() =>
          watchFile(dirname(path), (_event, changed) => {
            if (changed !== null && changed !== name) return
            clearTimeout(timer)
            timer = setTimeout(reload, options.debounceMs ?? 200)
          })
        ),
        (watcher) =>
          Effect.sync(() => {
            clearTimeout(timer)
            watcher.close()
          })
      )
    })
  )
