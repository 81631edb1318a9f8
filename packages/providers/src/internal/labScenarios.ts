/**
 * The lab's scenarios and how one is run: simulated upstreams behind a real router, a steady
 * arrival of streamed chat requests on the lab's virtual clock, and what the clients and the
 * upstreams saw, summed up as one row of the table.
 */
import type { Config as SluiceConfig, Decision, Strategy, Wire } from "@sluice/core"
import {
  CircuitBreaker,
  Errors,
  Guard,
  Matcher,
  RateLimiter,
  Router,
  StateStore,
  TokenCounter,
  Topology,
  Provider,
  StreamEvent
} from "@sluice/core"
import type { Layer } from "effect"
import { Clock, Effect, Either, Fiber, Layer as L, Logger, LogLevel, Option, Random } from "effect"
import type { UpstreamModel } from "../Lab.js"
import * as Lab from "../Lab.js"
import { simulate } from "./labClock.js"
import { estimatePromptTokens } from "./simulatorContent.js"

/** One upstream of a scenario: how it behaves, and what the config knows of it. */
export interface ScenarioUpstream {
  readonly id: string
  readonly model: UpstreamModel
  /** Its budgets as the config states them (the lab enforces `model.rpm` / `model.tpm`). */
  readonly limits?: { readonly rpm?: number; readonly tpm?: number }
}

/** A request of a scenario, and the session it belongs to. */
export interface Arrival {
  readonly request: Wire.ChatCompletionRequest
  readonly sessionKey?: string
}

/** A scenario: upstreams, a load, and how long it runs. */
export interface Scenario {
  /** A letter, as the issue names them. */
  readonly id: string
  readonly title: string
  /** The upstreams of a run of `minutes` (a degradation may come at half of it). */
  readonly upstreams: (minutes: number) => ReadonlyArray<ScenarioUpstream>
  /** Simulated minutes of load. */
  readonly minutes: number
  /** Requests per second, evenly spaced. */
  readonly perSecond: number
  /** The `i`th request. */
  readonly arrival: (i: number) => Arrival
  /** The pool's queue; default: the config's default. */
  readonly queue?: SluiceConfig.QueueConfig
  /** Whether the upstreams' breakers run (default true). */
  readonly breakers?: boolean
  /** An upstream that changes during the run, and when: a row also tells what came after (see {@link Row.afterChange}). */
  readonly change?: {
    readonly upstream: string
    /** Milliseconds after the run started, for a run of `minutes`. */
    readonly atMs: (minutes: number) => number
  }
}

/** How a scenario was run. */
export interface RunOptions {
  /** The `Strategy` layer that knows the strategy's name (`Strategies.layer()`). */
  readonly strategies: Layer.Layer<Strategy.Strategy, unknown, Topology.Topology | StateStore.StateStore>
  /** The pool's hedging, if it hedges. */
  readonly hedge?: SluiceConfig.HedgeConfig
  /** The seed of the run's `Random` (jitter, tails, failures, the strategies' draws). Default 1. */
  readonly seed?: number
  /**
   * `virtual` (the default): the run keeps its own time (see `Lab.simulate`). `ambient`: it sleeps on
   * the caller's `Clock`, for a caller that moves a `TestClock` itself (slow: for comparisons).
   */
  readonly clock?: "virtual" | "ambient"
  /** Overrides the scenario's minutes (shorter runs in tests). */
  readonly minutes?: number | undefined
}

/** Percentiles of a distribution, in milliseconds (NaN when it has no sample). */
export interface Percentiles {
  readonly p50: number
  readonly p99: number
  readonly p999: number
}

/** What the requests that arrived after a scenario's change saw (see {@link Scenario.change}). */
export interface AfterChange {
  /** From arrival to the first content, of the streams served. */
  readonly firstToken: Percentiles
  /** The share of those streams whose content came from the changed upstream (a hedge that won moves one away). */
  readonly changedShare: number
}

/** What a run saw: one row of the table. */
export interface Row {
  readonly scenario: string
  readonly strategy: string
  /** `afterMs` or `p<percentile>` and the cap, when the pool hedged. */
  readonly hedge: string | undefined
  readonly offered: number
  /** Streams read to their end. */
  readonly served: number
  /** Requests Sluice refused with a 429 of its own (load shed, with Retry-After). */
  readonly shed: number
  /** Requests that ended with any other error (before or after the first content). */
  readonly errors: number
  /** From arrival to the stream's end, of streams served. */
  readonly latency: Percentiles
  /** From arrival to the first content, of streams served. */
  readonly firstToken: Percentiles
  readonly costUsd: number
  /** Served while the load was offered, over the summed capacity of the upstreams' limits; undefined without limits. */
  readonly ofCapacity: number | undefined
  /** 429s the upstreams answered. */
  readonly upstream429s: number
  /** Prompt-cache hits over lookups; undefined when no upstream caches. */
  readonly cacheHitRate: number | undefined
  /** Hedges started, over requests offered. */
  readonly hedgedShare: number
  /** Hedges that delivered first content before the attempt they hedged. */
  readonly hedgesWon: number
  /** The requests that arrived after the scenario's change; undefined without one. */
  readonly afterChange: AfterChange | undefined
  /** The busiest upstream's requests over the average upstream's. */
  readonly maxOverAverage: number
  /** Requests each upstream served. */
  readonly servedBy: Readonly<Record<string, number>>
}

/** The nearest-rank percentile of sorted values. */
const percentile = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted.length === 0
    ? NaN
    : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!

const percentiles = (values: Array<number>): Percentiles => {
  const sorted = values.sort((a, b) => a - b)
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), p999: percentile(sorted, 99.9) }
}

/** Requests a minute the upstreams' limits allow together, for requests like the scenario's first. */
const capacityPerMinute = (scenario: Scenario, upstreams: ReadonlyArray<ScenarioUpstream>): number | undefined => {
  const limited = upstreams.filter((u) => u.model.rpm !== undefined || u.model.tpm !== undefined)
  if (limited.length === 0) return undefined
  const { request } = scenario.arrival(0)
  let sum = 0
  for (const u of upstreams) {
    const completion = Math.min(u.model.completionTokens ?? 16, request.max_tokens ?? Infinity)
    const perRequest = estimatePromptTokens(request.messages) + completion
    sum += Math.min(u.model.rpm ?? Infinity, Math.floor((u.model.tpm ?? Infinity) / perRequest))
  }
  return sum
}

/** What one request ended as. */
interface Outcome {
  readonly kind: "served" | "shed" | "error"
  readonly endedAt: number
  readonly latencyMs: number
  readonly decision: Decision.Decision | undefined
}

/** One request from arrival to the end of its stream. */
const one = (router: Router.Service, arrival: Arrival): Effect.Effect<Outcome> =>
  Effect.gen(function* () {
    const start = yield* Clock.currentTimeMillis
    const options = arrival.sessionKey === undefined ? undefined : { sessionKey: arrival.sessionKey }
    const opened = yield* Effect.either(router.chatStream(arrival.request, options))
    if (Either.isLeft(opened)) {
      const endedAt = yield* Clock.currentTimeMillis
      const kind = opened.left instanceof Errors.RateLimited ? "shed" : "error"
      const decision = "decision" in opened.left ? (opened.left.decision as Decision.Decision | undefined) : undefined
      return { kind, endedAt, latencyMs: endedAt - start, decision }
    }
    const drained = yield* Effect.either(Effect.ensuring(drain(opened.right.source), opened.right.release))
    const decision = yield* opened.right.decision
    const endedAt = yield* Clock.currentTimeMillis
    const served = Either.isLeft(drained) && Option.isNone(drained.left)
    return { kind: served ? "served" : "error", endedAt, latencyMs: endedAt - start, decision }
  })

/** Reads a stream's source to its end, as the gateway does: fails with `None` there, `Some` on an error. */
const drain = (source: StreamEvent.Source): Effect.Effect<never, Option.Option<Errors.UpstreamError>> =>
  Effect.flatMap(StreamEvent.take(source), () => drain(source))

/** The pipeline of a run: the lab's upstreams behind the router, with breakers and budgets. */
const pipeline = (
  scenario: Scenario,
  upstreams: ReadonlyArray<ScenarioUpstream>,
  strategy: string,
  lab: Lab.Lab,
  options: RunOptions
) => {
  const breaker = { ...Topology.defaults.circuitBreaker, enabled: scenario.breakers ?? true }
  const pool = Topology.pool({
    id: "lab",
    models: ["lab-model"],
    strategy,
    hedge: options.hedge,
    upstreams: upstreams.map((u) =>
      Topology.upstream({
        id: u.id,
        provider: "lab",
        baseUrl: "http://lab.invalid",
        limits: u.limits ?? {},
        pricing: u.model.pricing,
        circuitBreaker: breaker
      })
    ),
    ...(scenario.queue === undefined ? {} : { queue: scenario.queue })
  })
  const stages = L.mergeAll(
    Matcher.layer,
    TokenCounter.layerEstimate,
    options.strategies,
    L.succeed(Provider.Provider, lab.provider),
    Guard.layer(CircuitBreaker.guard, RateLimiter.guard)
  ).pipe(L.provideMerge(L.merge(RateLimiter.layer, CircuitBreaker.layer)))
  return Router.layer.pipe(L.provide(stages), L.provide(L.merge(Topology.layerPools([pool]), StateStore.layerMemory)))
}

/** Offers the scenario's load to the router and waits for every request to end. */
const drive = (router: Router.Service, scenario: Scenario, minutes: number) =>
  Effect.gen(function* () {
    const startedAt = yield* Clock.currentTimeMillis
    const count = Math.round(scenario.perSecond * minutes * 60)
    const fibers: Array<Fiber.RuntimeFiber<Outcome>> = []
    for (let i = 0; i < count; i++) {
      const due = startedAt + Math.round((i * 1000) / scenario.perSecond)
      const now = yield* Clock.currentTimeMillis
      if (due > now) yield* Effect.sleep(due - now)
      fibers.push(yield* Effect.fork(one(router, scenario.arrival(i))))
    }
    return { startedAt, outcomes: yield* Fiber.joinAll(fibers) }
  })

/** Runs `scenario` with the pool's strategy named `strategy`, in virtual time. */
export const run = (scenario: Scenario, strategy: string, options: RunOptions): Effect.Effect<Row, unknown> => {
  const minutes = options.minutes ?? scenario.minutes
  const program = Effect.gen(function* () {
    const upstreams = scenario.upstreams(minutes)
    const lab = yield* Lab.make(Object.fromEntries(upstreams.map((u) => [u.id, u.model])))
    const { startedAt, outcomes } = yield* Effect.flatMap(Router.Router, (router) =>
      drive(router, scenario, minutes)
    ).pipe(Effect.provide(pipeline(scenario, upstreams, strategy, lab, options)))
    const run = { scenario, upstreams, strategy, options, minutes, lab }
    return summarize(run, startedAt, outcomes)
  })
  // Quiet: a breaker opening in a scenario is a row's story, not a log line.
  return Effect.suspend(() =>
    (options.clock === "ambient" ? program : simulate(program)).pipe(
      Effect.withRandom(Random.make(options.seed ?? 1)),
      Logger.withMinimumLogLevel(LogLevel.None)
    )
  )
}

/** What the streams served that arrived after the scenario's change saw; undefined without a change. */
const afterChange = (
  scenario: Scenario,
  minutes: number,
  startedAt: number,
  served: ReadonlyArray<Outcome>
): AfterChange | undefined => {
  if (scenario.change === undefined) return undefined
  const { upstream, atMs } = scenario.change
  const after = served.filter((o) => o.decision !== undefined && o.decision.startedAt >= startedAt + atMs(minutes))
  return {
    firstToken: percentiles(after.map((o) => o.decision?.firstChunkMs ?? NaN)),
    changedShare: after.filter((o) => o.decision?.upstream === upstream).length / Math.max(1, after.length)
  }
}

/** The row of a run. */
const summarize = (
  run: {
    readonly scenario: Scenario
    readonly upstreams: ReadonlyArray<ScenarioUpstream>
    readonly strategy: string
    readonly options: RunOptions
    readonly minutes: number
    readonly lab: Lab.Lab
  },
  startedAt: number,
  outcomes: ReadonlyArray<Outcome>
): Row => {
  const { scenario, upstreams, strategy, options, minutes, lab } = run
  const served = outcomes.filter((o) => o.kind === "served")
  const stats = upstreams.map((u) => [u.id, lab.stats(u.id)] as const)
  const lookups = stats.reduce((sum, [, s]) => sum + s.cacheLookups, 0)
  const counts = stats.map(([, s]) => s.served + s.failed + s.rateLimited)
  const average = counts.reduce((sum, n) => sum + n, 0) / Math.max(1, counts.length)
  const capacity = capacityPerMinute(scenario, upstreams)
  const windowEnd = startedAt + minutes * 60_000
  const hedge = options.hedge
  const hedged = outcomes.flatMap((o) => (o.decision?.hedge === undefined ? [] : [o.decision.hedge]))
  return {
    scenario: scenario.id,
    strategy,
    hedge:
      hedge === undefined
        ? undefined
        : `${hedge.afterMs === undefined ? `p${hedge.afterPercentile}` : `${hedge.afterMs}ms`} ≤${hedge.maxExtraPercent}%`,
    offered: outcomes.length,
    served: served.length,
    shed: outcomes.filter((o) => o.kind === "shed").length,
    errors: outcomes.filter((o) => o.kind === "error").length,
    latency: percentiles(served.map((o) => o.latencyMs)),
    firstToken: percentiles(served.map((o) => o.decision?.firstChunkMs ?? NaN)),
    costUsd: stats.reduce((sum, [, s]) => sum + s.costUsd, 0),
    ofCapacity:
      capacity === undefined ? undefined : served.filter((o) => o.endedAt <= windowEnd).length / (capacity * minutes),
    upstream429s: stats.reduce((sum, [, s]) => sum + s.rateLimited, 0),
    cacheHitRate: lookups === 0 ? undefined : stats.reduce((sum, [, s]) => sum + s.cacheHits, 0) / lookups,
    hedgedShare: outcomes.reduce((sum, o) => sum + (o.decision?.hedges ?? 0), 0) / Math.max(1, outcomes.length),
    hedgesWon: hedged.filter((h) => h.winner !== undefined && h.winner === h.hedge).length,
    afterChange: afterChange(scenario, minutes, startedAt, served),
    maxOverAverage: average === 0 ? NaN : Math.max(...counts) / average,
    servedBy: Object.fromEntries(stats.map(([id, s]) => [id, s.served]))
  }
}
