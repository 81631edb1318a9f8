/**
 * The simulation lab: hours of traffic in seconds. The router runs against clock-driven in-process
 * upstreams (no HTTP) with RPM/TPM limits, and Effect's `TestClock` moves time, so a 5-minute overload
 * runs in about a second and is exactly reproducible.
 *
 * The scenario (the quota issue's demonstration): 3 upstreams with RPM/TPM limits receive 10× more
 * requests than their summed capacity for 5 simulated minutes. Sluice must never let an upstream
 * answer 429, must answer every request (served, or 429 from Sluice itself with Retry-After), and
 * must keep the upstreams at ≥ 95% of their summed capacity.
 *
 * Run it: `npx vitest run --project examples lab` (it needs TestClock, so it runs under the tests).
 */
import { Errors, Guard, Matcher, Provider, RateLimiter, Router, StateStore, TokenCounter, Topology } from "@sluice/core"
import { Lab } from "@sluice/providers"
import { Strategies } from "@sluice/strategies"
import { Duration, Effect, Fiber, Layer, TestClock } from "effect"

/** One simulated upstream: its real limits, which the config mirrors. */
export interface LabUpstream {
  readonly id: string
  readonly rpm: number
  readonly tpm: number
  readonly latencyMs: number
}

/** What a lab run saw. */
export interface LabReport {
  readonly offered: number
  /** Requests served in the end (some after the load stopped, from the queue). */
  readonly served: number
  /** Requests served while the load was offered: what the capacity comparison uses. */
  readonly servedInWindow: number
  readonly refused: number
  readonly refusedWithRetryAfter: number
  readonly otherErrors: ReadonlyArray<string>
  readonly upstream429s: number
  readonly capacity: number
  readonly servedPerUpstream: Readonly<Record<string, number>>
  readonly maxQueueWaitMs: number
}

/** Runs `minutes` of `overload`× traffic against `upstreams`; must run under TestClock (`it.effect`). */
export const run = (options: {
  readonly upstreams: ReadonlyArray<LabUpstream>
  readonly minutes: number
  readonly overload: number
  readonly maxTokens: number
}) =>
  Effect.gen(function* () {
    const lab = yield* Lab.make(
      Object.fromEntries(
        options.upstreams.map((u) => [
          u.id,
          { rpm: u.rpm, tpm: u.tpm, latencyMs: u.latencyMs, completionTokens: options.maxTokens }
        ])
      )
    )
    const pool = Topology.pool({
      id: "chat",
      models: ["lab-model"],
      strategy: "round-robin",
      upstreams: options.upstreams.map((u) =>
        Topology.upstream({
          id: u.id,
          provider: "lab",
          baseUrl: "http://lab.invalid",
          limits: { rpm: u.rpm, tpm: u.tpm },
          // Overload is the point here: a breaker must not mistake the limits for failures.
          circuitBreaker: { ...Topology.defaults.circuitBreaker, enabled: false }
        })
      ),
      queue: { maxSize: 200, maxWaitMs: 30_000 }
    })
    const stages = Layer.mergeAll(
      Matcher.layer,
      TokenCounter.layerEstimate,
      Strategies.layer(),
      Layer.succeed(Provider.Provider, lab.provider),
      Guard.layer(RateLimiter.guard)
    ).pipe(Layer.provideMerge(RateLimiter.layer))
    const RouterLive = Router.layer.pipe(
      Layer.provide(stages),
      Layer.provide(Layer.merge(Topology.layerPools([pool]), StateStore.layerMemory))
    )
    return yield* Effect.gen(function* () {
      const router = yield* Router.Router
      const capacityPerMinute = options.upstreams.reduce((sum, u) => sum + u.rpm, 0)
      const perSecond = (capacityPerMinute * options.overload) / 60
      const seconds = options.minutes * 60
      let served = 0
      let refused = 0
      let refusedWithRetryAfter = 0
      let maxQueueWaitMs = 0
      const otherErrors: Array<string> = []
      const one = router
        .chat({
          model: "lab-model",
          messages: [{ role: "user", content: "Summarise the quarterly report in three sentences, please." }],
          max_tokens: options.maxTokens
        })
        .pipe(
          Effect.match({
            onSuccess: ({ decision }) => {
              served++
              maxQueueWaitMs = Math.max(maxQueueWaitMs, decision.queueWaitMs)
            },
            onFailure: (error) => {
              if (error instanceof Errors.RateLimited) {
                refused++
                if (Errors.toOpenAI(error).headers["retry-after"] !== undefined && error.retryAfterSeconds >= 1) {
                  refusedWithRetryAfter++
                }
              } else otherErrors.push(`${error._tag}: ${error.message}`)
            }
          })
        )
      // Offer the load evenly over the window, each request on its own fiber, from a driver fiber that
      // sleeps on the (test) clock between arrivals.
      const fibers: Array<Fiber.RuntimeFiber<void>> = []
      let offered = 0
      let servedInWindow = 0
      const driver = yield* Effect.fork(
        Effect.gen(function* () {
          for (let second = 0; second < seconds; second++) {
            const due = Math.floor(perSecond * (second + 1)) - offered
            for (let i = 0; i < due; i++) fibers.push(yield* Effect.forkDaemon(one))
            offered += due
            yield* Effect.sleep(Duration.seconds(1))
          }
          servedInWindow = served
        })
      )
      // The whole window, plus a minute for the last queued requests to finish or time out.
      yield* TestClock.adjust(Duration.minutes(options.minutes + 1))
      yield* Fiber.join(driver)
      yield* Fiber.joinAll(fibers)
      const servedPerUpstream = Object.fromEntries(options.upstreams.map((u) => [u.id, lab.stats(u.id).served]))
      const upstream429s = options.upstreams.reduce((sum, u) => sum + lab.stats(u.id).rateLimited, 0)
      return {
        offered,
        served,
        servedInWindow,
        refused,
        refusedWithRetryAfter,
        otherErrors,
        upstream429s,
        capacity: capacityPerMinute * options.minutes,
        servedPerUpstream,
        maxQueueWaitMs
      } satisfies LabReport
    }).pipe(Effect.provide(RouterLive))
  })
