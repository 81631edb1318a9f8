/**
 * The simulation lab: hours of traffic in seconds. The router runs against clock-driven in-process
 * upstreams (no HTTP) with RPM/TPM limits, and Effect's `TestClock` moves time, so a 5-minute overload
 * runs in about ten seconds and is exactly reproducible.
 *
 * The scenario (the quota issue's demonstration): 3 upstreams with RPM/TPM limits receive 10× more
 * requests than their summed capacity for 5 simulated minutes. Sluice must never let an upstream
 * answer 429, must answer every request (served, or 429 from Sluice itself with Retry-After), and
 * must keep the upstreams at ≥ 95% of their summed capacity.
 *
 * Capacity is what the upstreams' own limits allow, whichever limit binds (see {@link UpstreamReport}):
 *
 * ```
 * capacity = Σ over upstreams of min(rpm, ⌊tpm / tokensCharged⌋) × minutes
 * ```
 *
 * where `tokensCharged` is what one lab request costs against the upstream's TPM: the usage the
 * simulator reports for it (its prompt count + the completion, which the lab sets to `max_tokens`).
 * Sluice reserves its own prompt estimate + `max_tokens` when it admits the request
 * (`tokensReserved`) and corrects the reservation to the reported usage when the answer arrives. The
 * estimate runs a few tokens above the simulator's count (it adds reply priming and the role), so the
 * reservation is never an undercount (no upstream 429) — and the capacity uses the smaller
 * `tokensCharged`, so an over-reservation that wasted capacity would show as lost throughput instead
 * of lowering the bar (in the test, 86 reserved against 82 charged: ⌊1600 / 86⌋ = 18 but
 * ⌊1600 / 82⌋ = 19 requests a minute). Within any 60 s window an upstream can take at most that many
 * requests, so the formula is an upper bound on what any gateway can get served in the run (the run
 * starts with empty windows), and for a run of whole minutes it is reachable.
 *
 * Every refusal is judged afterwards against the upstreams' admissions as the lab logged them (see
 * {@link Refusal}): its Retry-After must not send the client back before Sluice could have room, nor
 * long after it surely has.
 *
 * Run it: `npx vitest run examples/test/lab.test.ts` (it needs TestClock, so it runs under the tests).
 *
 * Run as a program (`npm run lab`), this file prints the lab's scenarios per strategy instead (see
 * {@link strategyTable}).
 */
import { Errors, Guard, Matcher, Provider, RateLimiter, Router, StateStore, TokenCounter, Topology } from "@sluice/core"
import type { Wire } from "@sluice/core"
import { Lab, LabScenarios } from "@sluice/providers"
import { Strategies } from "@sluice/strategies"
import { Clock, Duration, Effect, Fiber, Layer, TestClock } from "effect"
import { pathToFileURL } from "node:url"

/** One simulated upstream: its real limits, which the config mirrors. */
export interface LabUpstream {
  readonly id: string
  readonly rpm: number
  readonly tpm: number
  readonly latencyMs: number
}

/** What one upstream could take and what it served. */
export interface UpstreamReport {
  readonly id: string
  readonly rpm: number
  readonly tpm: number
  /** Tokens Sluice reserved per request when admitting it: its prompt estimate + `max_tokens`. */
  readonly tokensReserved: number
  /** Tokens the upstream counted per request against its TPM: the usage it reported. */
  readonly tokensCharged: number
  /** Requests per minute the TPM allows: ⌊tpm / tokensCharged⌋. */
  readonly requestsPerMinuteByTpm: number
  /** The limit that caps the upstream: `tpm` when ⌊tpm / tokensCharged⌋ < rpm, else `rpm`. */
  readonly binding: "rpm" | "tpm"
  /** min(rpm, requestsPerMinuteByTpm) × minutes: the most it can serve in the run. */
  readonly capacity: number
  /** Requests it answered while the load was offered. */
  readonly servedInWindow: number
  /** Requests it answered in the end (some after the load stopped, from the queue). */
  readonly served: number
  /** Tokens it counted for the requests it answered, as it reported them. */
  readonly tokensServed: number
  /** 429s it answered (Sluice must keep this at 0). */
  readonly rateLimited: number
}

/** One request Sluice refused with 429. */
export interface Refusal {
  /** When (ms since the run started). */
  readonly atMs: number
  /** The `Retry-After` header the client got, in seconds (NaN when there was none). */
  readonly retryAfterSeconds: number
  /**
   * Milliseconds from the refusal until Sluice's own budget could first have room for it on some
   * upstream, had it known when each request in flight would be answered (and its reservation
   * corrected to the usage reported): a client told to come back sooner is refused again. Counts
   * what was admitted by the end of that instant; 0 when there was room at once.
   */
  readonly earliestFreeMs: number
  /**
   * Milliseconds from the refusal until some upstream surely has room in Sluice's own budget as it
   * stood: requests answered before that instant weigh the usage they reported, the rest their whole
   * reservation, each until it leaves the 60 s window (as if nothing in flight gave anything back). A
   * client told to wait much longer than this waits for nothing.
   */
  readonly latestFreeMs: number
  readonly reason: string
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
  /** The summed capacity of the upstreams over the run (see the module doc for the formula). */
  readonly capacity: number
  readonly upstreams: ReadonlyArray<UpstreamReport>
  readonly maxQueueWaitMs: number
  readonly refusals: ReadonlyArray<Refusal>
}

const WINDOW_MS = 60_000

/** Every request of the lab: one short user message with an explicit `max_tokens`. */
const requestOf = (maxTokens: number): Wire.ChatCompletionRequest => ({
  model: "lab-model",
  messages: [{ role: "user", content: "Summarise the quarterly report in three sentences, please." }],
  max_tokens: maxTokens
})

/** A request an upstream admitted: when, and when it answered (`Infinity` while in flight). */
interface Admission {
  readonly at: number
  done: number
}

/**
 * Milliseconds from `now` until `upstream`'s sliding windows have room for one more request
 * reserving `need` tokens, where an admitted request weighs `cost(it, t)` tokens at time `t` until it
 * leaves the window 60 s after its admission. Only what was admitted by `now` counts. 0 when there is
 * room at once.
 */
const freeIn = (
  log: ReadonlyArray<Admission>,
  upstream: LabUpstream,
  need: number,
  cost: (admission: Admission, t: number) => number,
  now: number
): number => {
  const live = log.filter((a) => a.at <= now && a.at + WINDOW_MS > now)
  // The budget only changes when a request leaves the window or is answered.
  const moments = [now, ...live.map((a) => a.at + WINDOW_MS), ...live.map((a) => a.done)]
    .filter((t) => t >= now && Number.isFinite(t))
    .sort((x, y) => x - y)
  for (const t of moments) {
    const counted = live.filter((a) => a.at + WINDOW_MS > t)
    const tokens = counted.reduce((sum, a) => sum + cost(a, t), 0)
    if (counted.length + 1 <= upstream.rpm && tokens + need <= upstream.tpm) return t - now
  }
  return WINDOW_MS
}

/**
 * Runs `minutes` of `overload`× traffic against `upstreams`. Must run under TestClock (`it.effect`, or
 * `Effect.provide(TestContext.TestContext)`): the run adjusts the clock itself.
 */
export const run = (options: {
  readonly upstreams: ReadonlyArray<LabUpstream>
  readonly minutes: number
  readonly overload: number
  /** `max_tokens` of every request; the simulated upstreams answer with exactly that many tokens. */
  readonly maxTokens: number
}) =>
  Effect.gen(function* () {
    const request = requestOf(options.maxTokens)
    const models = Object.fromEntries(
      options.upstreams.map((u) => [
        u.id,
        { rpm: u.rpm, tpm: u.tpm, latencyMs: u.latencyMs, completionTokens: options.maxTokens }
      ])
    )
    // What one request costs an upstream, as it reports it: asked of an unlimited twin, so the run's
    // upstreams start with empty windows.
    const probe = yield* Lab.make({ probe: { completionTokens: options.maxTokens } })
    const probed = yield* probe.provider.chat(
      Topology.upstream({ id: "probe", provider: "lab", baseUrl: "http://lab.invalid" }),
      { request, model: request.model }
    )
    const tokensCharged = probed.value.usage?.total_tokens ?? 0
    const limitsOf = options.upstreams.map((u) => {
      const byTpm = Math.floor(u.tpm / tokensCharged)
      return { upstream: u, byTpm, perMinute: Math.min(u.rpm, byTpm), binding: byTpm < u.rpm ? "tpm" : "rpm" } as const
    })
    const capacityPerMinute = limitsOf.reduce((sum, l) => sum + l.perMinute, 0)

    const lab = yield* Lab.make(models)
    // The upstreams' admissions, logged as they happen: the ground truth Retry-After is checked against.
    const admissions = new Map<string, Array<Admission>>(options.upstreams.map((u) => [u.id, []]))
    const recorded: Provider.Service = Provider.Provider.of({
      ...lab.provider,
      chat: (upstream, call) =>
        Effect.gen(function* () {
          const admission: Admission = { at: yield* Clock.currentTimeMillis, done: Infinity }
          const log = admissions.get(upstream.id)
          log?.push(admission)
          return yield* lab.provider.chat(upstream, call).pipe(
            Effect.tap(() =>
              Effect.map(Clock.currentTimeMillis, (now) => {
                admission.done = now
              })
            ),
            Effect.tapError((error) =>
              Effect.map(Clock.currentTimeMillis, (now) => {
                admission.done = now
                // The upstream did not count a request it answered 429.
                if (error.status === 429 && log !== undefined) log.splice(log.indexOf(admission), 1)
              })
            )
          )
        })
    })
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
      // Small enough to fill within each minute, so refusals take both paths: "the queue is full" and
      // "the wait would pass the queue's limit".
      queue: { maxSize: 50, maxWaitMs: 30_000 }
    })
    const stages = Layer.mergeAll(
      Matcher.layer,
      TokenCounter.layerEstimate,
      Strategies.layer(),
      Layer.succeed(Provider.Provider, recorded),
      Guard.layer(RateLimiter.guard)
    ).pipe(Layer.provideMerge(RateLimiter.layer))
    const RouterLive = Router.layer.pipe(
      Layer.provide(stages),
      Layer.provide(Layer.merge(Topology.layerPools([pool]), StateStore.layerMemory))
    )
    return yield* Effect.gen(function* () {
      const router = yield* Router.Router
      const startedAt = yield* Clock.currentTimeMillis
      const perSecond = (capacityPerMinute * options.overload) / 60
      const seconds = options.minutes * 60
      let served = 0
      let refused = 0
      let refusedWithRetryAfter = 0
      let maxQueueWaitMs = 0
      let tokensReserved = 0
      const otherErrors: Array<string> = []
      const refusedAt: Array<Omit<Refusal, "earliestFreeMs" | "latestFreeMs">> = []
      const one = router.chat(request).pipe(
        Effect.matchEffect({
          onSuccess: ({ decision }) =>
            Effect.sync(() => {
              served++
              maxQueueWaitMs = Math.max(maxQueueWaitMs, decision.queueWaitMs)
              tokensReserved = Math.max(tokensReserved, decision.promptTokens + options.maxTokens)
            }),
          onFailure: (error) =>
            Effect.map(Clock.currentTimeMillis, (now) => {
              if (!(error instanceof Errors.RateLimited)) {
                otherErrors.push(`${error._tag}: ${error.message}`)
                return
              }
              refused++
              const header = Errors.toOpenAI(error).headers["retry-after"]
              const retryAfterSeconds = header === undefined ? NaN : Number(header)
              if (Number.isInteger(retryAfterSeconds) && retryAfterSeconds > 0) refusedWithRetryAfter++
              refusedAt.push({ atMs: now - startedAt, retryAfterSeconds, reason: error.reason })
            })
        })
      )
      // Offer the load evenly over the window, each request on its own fiber, from a driver fiber that
      // sleeps on the (test) clock between arrivals.
      const fibers: Array<Fiber.RuntimeFiber<void>> = []
      let offered = 0
      let servedInWindow = 0
      const servedInWindowBy = new Map<string, number>()
      const driver = yield* Effect.fork(
        Effect.gen(function* () {
          for (let second = 0; second < seconds; second++) {
            const due = Math.floor(perSecond * (second + 1)) - offered
            for (let i = 0; i < due; i++) fibers.push(yield* Effect.forkDaemon(one))
            offered += due
            yield* Effect.sleep(Duration.seconds(1))
          }
          servedInWindow = served
          for (const u of options.upstreams) servedInWindowBy.set(u.id, lab.stats(u.id).served)
        })
      )
      // The whole window, plus a minute for the last queued requests to finish or time out.
      yield* TestClock.adjust(Duration.minutes(options.minutes + 1))
      yield* Fiber.join(driver)
      yield* Fiber.joinAll(fibers)
      // Judged once the run is over, so that what the upstreams admitted in the same instant as a
      // refusal (fibers run one after another within an instant) counts.
      const soonest = (free: (log: ReadonlyArray<Admission>, u: LabUpstream) => number) =>
        Math.min(...options.upstreams.map((u) => free(admissions.get(u.id) ?? [], u)))
      const refusals = refusedAt.map((r): Refusal => {
        const now = startedAt + r.atMs
        // A request weighs its reservation until answered, then the usage the upstream reported.
        const weight = (answered: boolean) => (answered ? tokensCharged : tokensReserved)
        return {
          ...r,
          earliestFreeMs: soonest((log, u) => freeIn(log, u, tokensReserved, (a, t) => weight(a.done <= t), now)),
          // Strictly before: an answer in the same instant may have come after the refusal.
          latestFreeMs: soonest((log, u) => freeIn(log, u, tokensReserved, (a) => weight(a.done < now), now))
        }
      })
      const upstreams = limitsOf.map(({ binding, byTpm, perMinute, upstream: u }): UpstreamReport => {
        const stats = lab.stats(u.id)
        return {
          id: u.id,
          rpm: u.rpm,
          tpm: u.tpm,
          tokensReserved,
          tokensCharged,
          requestsPerMinuteByTpm: byTpm,
          binding,
          capacity: perMinute * options.minutes,
          servedInWindow: servedInWindowBy.get(u.id) ?? 0,
          served: stats.served,
          tokensServed: stats.tokens,
          rateLimited: stats.rateLimited
        }
      })
      return {
        offered,
        served,
        servedInWindow,
        refused,
        refusedWithRetryAfter,
        otherErrors,
        upstream429s: upstreams.reduce((sum, u) => sum + u.rateLimited, 0),
        capacity: capacityPerMinute * options.minutes,
        upstreams,
        maxQueueWaitMs,
        refusals
      } satisfies LabReport
    }).pipe(Effect.provide(RouterLive))
  })

/**
 * The lab's scenarios (a) to (e) for every strategy the strategies package knows (`Strategies.names`,
 * so a strategy added there shows up here), each `minutes` of simulated traffic in the lab's virtual
 * time, as one Markdown table per scenario (see `LabScenarios`). Progress goes to `progress`.
 */
export const strategyTable = (minutes: number, progress: (line: string) => void = () => {}) =>
  Effect.map(
    LabScenarios.matrix({
      strategies: Strategies.names,
      layer: Strategies.layer(),
      minutes,
      onRow: (row) => progress(`(${row.scenario}) ${row.strategy}${row.hedge === undefined ? "" : " +hedge"}`)
    }),
    (rows) => `${LabScenarios.table(rows)}\n${LabScenarios.hedgeTable(rows)}`
  )

// `npm run lab`: LAB_MINUTES simulated minutes per run (default 10).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const minutes = Number(process.env["LAB_MINUTES"] ?? 10)
  if (!(minutes > 0))
    throw new Error(`LAB_MINUTES: expected a positive number of minutes, got '${process.env["LAB_MINUTES"]}'`)
  const started = Date.now()
  void Effect.runPromise(strategyTable(minutes, (line) => process.stderr.write(`${line}\n`))).then((table) => {
    console.log(
      `Sluice lab: ${minutes} simulated minutes per run, in ${((Date.now() - started) / 1000).toFixed(1)} s\n`
    )
    console.log(table)
  })
}
