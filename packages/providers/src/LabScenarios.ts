/**
 * The lab's scenarios, per strategy: the same simulated traffic against the same simulated
 * upstreams (see `Lab`) behind a real router whose pool names a strategy, in the lab's virtual time
 * — an hour of traffic in seconds, and with the same seed the same table every time.
 *
 * - (a) upstreams with different latency distributions: steady, jittery, and one with a long tail;
 * - (b) one upstream's latency rises tenfold halfway through;
 * - (c) one upstream fails 30% of requests;
 * - (d) 10× more load than the upstreams' summed quota (RPM / TPM limits the config mirrors);
 * - (e) 60 sessions, each with a long system prompt of its own, against upstreams whose prompt
 *   caches hold 40 prefixes each: together they could keep every session, if each kept its own.
 *
 * Every request is a streamed chat completion. A row says, per strategy: latency (arrival to the
 * stream's end) and time to first token (arrival to first content), p50 and p99, of the streams
 * served; requests that ended in an error; requests Sluice shed with its own 429; what the upstreams
 * charged; the share of the summed capacity served while the load was offered (d); the 429s the
 * upstreams answered; the prompt-cache hit rate; the share of extra requests hedges made; and the
 * busiest upstream's load over the average. Strategies run hedged too in (a) (at the pool's p95) and
 * (b) (at the p95, and after a fixed 400 ms); {@link hedgeTable} sets each hedged row of (b) against
 * the same strategy unhedged, over the whole run and over the requests that arrived after the
 * slowdown, against the issue's bar (a time-to-first-token p99 cut by 40% with at most 10% extra
 * requests).
 *
 * The strategies come from the caller (the `Strategy` layer and its names), so this package knows
 * none by name: `npm run lab` and `npm run bench:strategies` pass `Strategies.layer()` and
 * `Strategies.names`, and every strategy that package knows appears in the table.
 */
import type { Config as SluiceConfig, StateStore, Strategy, Topology, Wire } from "@sluice/core"
import type { Layer } from "effect"
import { Effect } from "effect"
import type { Row, RunOptions, Scenario } from "./internal/labScenarios.js"
import { run as runScenario } from "./internal/labScenarios.js"
import type { UpstreamModel } from "./Lab.js"

export type {
  AfterChange,
  Arrival,
  Percentiles,
  Row,
  RunOptions,
  Scenario,
  ScenarioUpstream
} from "./internal/labScenarios.js"

/** Runs `scenario` with the pool's strategy named `strategy`, in virtual time; see {@link Row}. */
export const run: (scenario: Scenario, strategy: string, options: RunOptions) => Effect.Effect<Row, unknown> =
  runScenario

const PRICE = { inputPerMillion: 2.5, outputPerMillion: 10 }
const COMPLETION = 32

/** A streamed request of one user message (and what comes before it). */
const chat = (content: string, before: ReadonlyArray<Wire.ChatMessage> = []): Wire.ChatCompletionRequest => ({
  model: "lab-model",
  stream: true,
  max_tokens: COMPLETION,
  messages: [...before, { role: "user", content }]
})

const question = (i: number) => chat(`Question ${i}: summarise the quarterly report in three sentences.`)

/** Three upstreams alike but for `overrides`, 250 ms ± 100 to first token. */
const alike = (overrides: Readonly<Record<string, Partial<UpstreamModel>>> = {}) =>
  ["a", "b", "c"].map((id) => ({
    id,
    model: {
      latencyMs: 200,
      jitterMs: 100,
      perTokenMs: 10,
      completionTokens: COMPLETION,
      pricing: PRICE,
      ...overrides[id]
    }
  }))

/** A long system prompt of its own for session `s` (some 1,200 tokens). */
const systemPrompt = (s: number): Wire.ChatMessage => ({
  role: "system",
  content: `You are the assistant of workspace ${s}. ${"Follow the workspace's style guide and cite its documents. ".repeat(80)}`
})

/**
 * The session of the `i`th request of (e): a hash of `i` (murmur3's finalizer), so sessions come in
 * no order a rotation over the upstreams could fall in step with.
 */
const sessionOf = (i: number, sessions: number): number => {
  let h = Math.imul(i ^ (i >>> 16), 0x85ebca6b)
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35)
  return ((h ^ (h >>> 16)) >>> 0) % sessions
}

/** Milliseconds to the middle of a run of `minutes`. */
const halfway = (minutes: number) => (minutes * 60_000) / 2

/** The scenarios, (a) to (e). */
export const scenarios: ReadonlyArray<Scenario> = [
  {
    id: "a",
    title: "upstreams with different latency distributions",
    upstreams: () => [
      {
        id: "steady",
        model: { latencyMs: 300, jitterMs: 100, perTokenMs: 10, completionTokens: COMPLETION, pricing: PRICE }
      },
      {
        id: "jittery",
        model: { latencyMs: 100, jitterMs: 900, perTokenMs: 10, completionTokens: COMPLETION, pricing: PRICE }
      },
      {
        id: "tail",
        model: {
          latencyMs: 150,
          jitterMs: 50,
          tail: { probability: 0.05, multiplier: 20 },
          perTokenMs: 10,
          completionTokens: COMPLETION,
          pricing: PRICE
        }
      }
    ],
    minutes: 60,
    perSecond: 4,
    arrival: (i) => ({ request: question(i) })
  },
  {
    id: "b",
    title: "one upstream's latency rises tenfold halfway through",
    upstreams: (minutes) => alike({ c: { degrade: { atMs: halfway(minutes), latencyMultiplier: 10 } } }),
    minutes: 60,
    perSecond: 4,
    arrival: (i) => ({ request: question(i) }),
    change: { upstream: "c", atMs: halfway }
  },
  {
    id: "c",
    title: "one upstream fails 30% of requests",
    upstreams: () => alike({ c: { failureRate: 0.3 } }),
    minutes: 60,
    perSecond: 4,
    arrival: (i) => ({ request: question(i) })
  },
  {
    id: "d",
    title: "10x more load than the summed quota",
    // One upstream held by its RPM, two by their TPM.
    upstreams: () =>
      [
        { id: "a", model: { rpm: 12, tpm: 4_000, latencyMs: 1_000 }, limits: { rpm: 12, tpm: 4_000 } },
        { id: "b", model: { rpm: 20, tpm: 500, latencyMs: 2_000 }, limits: { rpm: 20, tpm: 500 } },
        { id: "c", model: { rpm: 40, tpm: 800, latencyMs: 1_000 }, limits: { rpm: 40, tpm: 800 } }
      ].map((u) => ({ ...u, model: { ...u.model, completionTokens: COMPLETION, pricing: PRICE } })),
    minutes: 20,
    // A request costs the upstream 9 prompt + 32 completion tokens: Σ min(rpm, ⌊tpm / 41⌋) =
    // 12 + 12 + 19 = 43 a minute; ten times that.
    perSecond: (10 * 43) / 60,
    arrival: (i) => ({ request: chat(`Summarise report ${i % 10} now.`) }),
    queue: { maxSize: 50, maxWaitMs: 30_000 },
    // Overload is the point: a breaker must not mistake the limits for failures.
    breakers: false
  },
  {
    id: "e",
    title: "many sessions with long shared prefixes",
    upstreams: () =>
      alike({}).map((u) => ({
        ...u,
        model: { ...u.model, latencyMs: 600, cache: { minPrefixTokens: 256, maxEntries: 40, latencyFactor: 0.25 } }
      })),
    minutes: 60,
    perSecond: 4,
    arrival: (i) => {
      const s = sessionOf(i, 60)
      return {
        request: chat(`Turn ${i}: what changed since yesterday?`, [systemPrompt(s)]),
        sessionKey: `session-${s}`
      }
    }
  }
]

/** The hedging the lab tries in (a) and (b): at the pool's p95 time to first token, at most 10% extra requests. */
export const hedge: SluiceConfig.HedgeConfig = { afterPercentile: 95, maxExtraPercent: 10 }

/**
 * The other hedging the lab tries in (b): at a fixed 400 ms, a third above the slowest first token
 * of a healthy upstream (200 ms + up to 100 of jitter), as a user who knows the pool's upstreams
 * would set it. A percentile trigger follows the pool's own times, so where more than 5% of streams
 * are slow its p95 is a slow time, and the hedges start too late to win; a fixed delay does not.
 */
export const hedgeAfterMs: SluiceConfig.HedgeConfig = { afterMs: 400, maxExtraPercent: 10 }

/** The scenarios where strategies also run hedged, and how: a long tail (a), a slow upstream (b). */
const HEDGED: Readonly<Record<string, ReadonlyArray<SluiceConfig.HedgeConfig>>> = {
  a: [hedge],
  b: [hedge, hedgeAfterMs]
}

/** What a matrix runs. */
export interface MatrixOptions {
  /** The strategy names to run (`Strategies.names`). */
  readonly strategies: ReadonlyArray<string>
  /** The `Strategy` layer that knows them (`Strategies.layer()`). */
  readonly layer: Layer.Layer<Strategy.Strategy, unknown, Topology.Topology | StateStore.StateStore>
  /** The scenarios to run; default all. */
  readonly scenarios?: ReadonlyArray<Scenario>
  /** Overrides every scenario's minutes. */
  readonly minutes?: number | undefined
  /** Strategies that also run hedged in (a) (at the p95) and (b) (at the p95 and after 400 ms). Default: all of them. */
  readonly hedged?: ReadonlyArray<string>
  readonly seed?: number
  /** Told of each row as it is made (for progress). */
  readonly onRow?: (row: Row) => void
}

/** Every strategy in every scenario (and hedged in (a) and (b)), one row each, in order. */
export const matrix = (options: MatrixOptions): Effect.Effect<ReadonlyArray<Row>, unknown> => {
  const runs: Array<() => Effect.Effect<Row, unknown>> = []
  for (const scenario of options.scenarios ?? scenarios) {
    for (const strategy of options.strategies) {
      const base = { strategies: options.layer, seed: options.seed ?? 1, minutes: options.minutes }
      runs.push(() => runScenario(scenario, strategy, base))
      if ((options.hedged ?? options.strategies).includes(strategy)) {
        for (const config of HEDGED[scenario.id] ?? []) {
          runs.push(() => runScenario(scenario, strategy, { ...base, hedge: config }))
        }
      }
    }
  }
  return Effect.forEach(runs, (make) => Effect.tap(make(), (row) => Effect.sync(() => options.onRow?.(row))))
}

const COLUMNS = [
  "strategy",
  "latency p50",
  "p99",
  "TTFT p50",
  "p99",
  "errors",
  "shed",
  "cost $",
  "of capacity",
  "429s",
  "cache hits",
  "hedged",
  "max/avg"
] as const

const ms = (n: number) => (Number.isNaN(n) ? "-" : `${Math.round(n)}`)
const percent = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? "-" : `${(n * 100).toFixed(1)}%`)

/** One row's cells, in {@link COLUMNS} order. */
const cells = (row: Row): ReadonlyArray<string> => [
  row.hedge === undefined ? row.strategy : `${row.strategy} +hedge ${row.hedge}`,
  ms(row.latency.p50),
  ms(row.latency.p99),
  ms(row.firstToken.p50),
  ms(row.firstToken.p99),
  `${row.errors}`,
  `${row.shed}`,
  row.costUsd.toFixed(2),
  percent(row.ofCapacity),
  `${row.upstream429s}`,
  percent(row.cacheHitRate),
  percent(row.hedgedShare),
  Number.isNaN(row.maxOverAverage) ? "-" : row.maxOverAverage.toFixed(2)
]

/**
 * The rows as Markdown tables, one per scenario (headed by its letter, title and load), in the
 * order the rows come. Times in milliseconds.
 */
export const table = (rows: ReadonlyArray<Row>, among: ReadonlyArray<Scenario> = scenarios): string => {
  const out: Array<string> = []
  for (const scenario of among) {
    const mine = rows.filter((r) => r.scenario === scenario.id)
    if (mine.length === 0) continue
    const body = mine.map(cells)
    const widths = COLUMNS.map((c, i) => Math.max(c.length, ...body.map((r) => r[i]!.length)))
    const line = (r: ReadonlyArray<string>) =>
      `| ${r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(" | ")} |`
    out.push(
      `(${scenario.id}) ${scenario.title}: ${Object.keys(mine[0]!.servedBy).length} upstreams, ${mine[0]!.offered} requests`,
      "",
      line(COLUMNS),
      `|${widths.map((w, i) => (i === 0 ? `:${"-".repeat(w + 1)}` : `${"-".repeat(w + 1)}:`)).join("|")}|`,
      ...body.map(line),
      ""
    )
  }
  return out.join("\n")
}

/** The issue's bar for hedging: a time-to-first-token p99 cut by at least this share... */
const BAR_CUT = 0.4
/** ...with at most this share of extra requests. */
const BAR_EXTRA = 0.1

const HEDGE_COLUMNS = [
  "strategy",
  "hedge",
  "TTFT p99",
  "hedged",
  "cut",
  "after change p99",
  "hedged",
  "cut",
  "p99.9",
  "hedged",
  "extra",
  "won",
  "changed upstream's share after",
  "bar: run",
  "after change"
] as const

const cut = (before: number, after: number) => (before > 0 ? 1 - after / before : NaN)
/** A cut as a change: `-78%` for a cut of 78%, `+1%` for a rise, `0%` for less than half a percent. */
const signed = (n: number) => {
  if (Number.isNaN(n)) return "-"
  const points = Math.round(n * 100)
  return points === 0 ? "0%" : `${points > 0 ? "-" : "+"}${Math.abs(points)}%`
}
const verdict = (reduction: number, extra: number) =>
  reduction >= BAR_CUT && extra <= BAR_EXTRA ? "met" : extra > BAR_EXTRA ? "not met: extra" : "not met"

/**
 * The hedging bar, per hedged row of a scenario with a change ((b)): its time to first token against
 * the same strategy's unhedged row, over the whole run and over the requests after the change, the
 * extra requests, the hedges that won, the share of streams the changed upstream still served after
 * the change (unhedged → hedged), and whether the cut reaches 40% with at most 10% extra requests.
 * Markdown, one table per scenario; empty when no row fits.
 */
export const hedgeTable = (rows: ReadonlyArray<Row>, among: ReadonlyArray<Scenario> = scenarios): string => {
  const out: Array<string> = []
  for (const scenario of among) {
    if (scenario.change === undefined) continue
    const body: Array<ReadonlyArray<string>> = []
    for (const row of rows) {
      if (row.scenario !== scenario.id || row.hedge === undefined) continue
      const plain = rows.find(
        (r) => r.scenario === row.scenario && r.strategy === row.strategy && r.hedge === undefined
      )
      if (plain === undefined || plain.afterChange === undefined || row.afterChange === undefined) continue
      const whole = cut(plain.firstToken.p99, row.firstToken.p99)
      const later = cut(plain.afterChange.firstToken.p99, row.afterChange.firstToken.p99)
      body.push([
        row.strategy,
        row.hedge,
        ms(plain.firstToken.p99),
        ms(row.firstToken.p99),
        signed(whole),
        ms(plain.afterChange.firstToken.p99),
        ms(row.afterChange.firstToken.p99),
        signed(later),
        ms(plain.firstToken.p999),
        ms(row.firstToken.p999),
        percent(row.hedgedShare),
        `${row.hedgesWon}`,
        `${percent(plain.afterChange.changedShare)} → ${percent(row.afterChange.changedShare)}`,
        verdict(whole, row.hedgedShare),
        verdict(later, row.hedgedShare)
      ])
    }
    if (body.length === 0) continue
    const widths = HEDGE_COLUMNS.map((c, i) => Math.max(c.length, ...body.map((r) => r[i]!.length)))
    const line = (r: ReadonlyArray<string>) =>
      `| ${r.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(" | ")} |`
    out.push(
      `(${scenario.id}) hedging: time to first token cut by ${BAR_CUT * 100}% or more with at most ${BAR_EXTRA * 100}% extra requests, against the same strategy unhedged; "after change": requests that arrived once '${scenario.change.upstream}' had changed`,
      "",
      line(HEDGE_COLUMNS),
      `|${widths.map((w, i) => (i < 2 ? `:${"-".repeat(w + 1)}` : `${"-".repeat(w + 1)}:`)).join("|")}|`,
      ...body.map(line),
      ""
    )
  }
  return out.join("\n")
}
