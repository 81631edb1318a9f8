/**
 * The gateway's metrics over OTLP: the same counters, histograms and gauges `GET /metrics` shows, as
 * an OTLP `ExportMetricsServiceRequest` (cumulative, like Prometheus' counts), sent every interval
 * and once more when the gateway stops. `@effect/opentelemetry`'s own metrics exporters read Effect's
 * global registry only, while the gateway keeps its metrics in a registry of its own and reads its
 * gauges when asked: this builds the document from those, and encodes it with that package's OTLP
 * serialization (JSON or protobuf).
 */
import { Effect, MetricState, Option, Schedule } from "effect"
import type { MetricPair, Scope } from "effect"
import type { Gauge } from "./metrics.js"

/** What one export reads: every metric pair and every gauge now. */
export interface Reading {
  readonly pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>
  readonly gauges: ReadonlyArray<Gauge>
  /** The unit of a metric (`s`, `1`). */
  readonly unitOf: (name: string) => string
}

/** The resource the metrics are reported under. */
export interface Resource {
  readonly serviceName: string
  readonly serviceVersion: string
  readonly attributes: Readonly<Record<string, string>>
}

type KeyValue = { readonly key: string; readonly value: { readonly stringValue: string } }

const keyValues = (record: Readonly<Record<string, string>>): Array<KeyValue> =>
  Object.entries(record).map(([key, value]) => ({ key, value: { stringValue: value } }))

/** One OTLP metric: a cumulative monotonic sum, a cumulative histogram or a gauge, with its points. */
type OtlpMetric = {
  readonly name: string
  readonly description: string
  readonly unit: string
  readonly sum?: { aggregationTemporality: 2; isMonotonic: true; dataPoints: Array<unknown> }
  readonly histogram?: { aggregationTemporality: 2; dataPoints: Array<unknown> }
  readonly gauge?: { dataPoints: Array<unknown> }
}

/** The OTLP document of a reading at `now` (ns), counting since `start` (ns). */
export const document = (reading: Reading, resource: Resource, start: bigint, now: bigint) => {
  const startTimeUnixNano = String(start)
  const timeUnixNano = String(now)
  const byName = new Map<string, OtlpMetric>()
  const metricOf = (
    name: string,
    description: string,
    make: () => Omit<OtlpMetric, "name" | "description" | "unit">
  ) => {
    let metric = byName.get(name)
    if (metric === undefined) byName.set(name, (metric = { name, description, unit: reading.unitOf(name), ...make() }))
    return metric
  }
  for (const { metricKey, metricState } of reading.pairs) {
    const attributes = [...metricKey.tags].map((t) => ({ key: t.key, value: { stringValue: t.value } }))
    const description = Option.getOrElse(metricKey.description, () => "")
    if (MetricState.isCounterState(metricState)) {
      const metric = metricOf(metricKey.name, description, () => ({
        sum: { aggregationTemporality: 2, isMonotonic: true, dataPoints: [] }
      }))
      metric.sum?.dataPoints.push({ attributes, startTimeUnixNano, timeUnixNano, asDouble: Number(metricState.count) })
    } else if (MetricState.isHistogramState(metricState)) {
      const metric = metricOf(metricKey.name, description, () => ({
        histogram: { aggregationTemporality: 2, dataPoints: [] }
      }))
      // Effect's buckets are cumulative and end at the last finite bound; OTLP counts each bucket,
      // with one more for what is above the last bound.
      const explicitBounds: Array<number> = []
      const bucketCounts: Array<number> = []
      let below = 0
      for (const [bound, count] of metricState.buckets) {
        if (bound === Infinity) continue
        explicitBounds.push(bound)
        bucketCounts.push(count - below)
        below = count
      }
      bucketCounts.push(metricState.count - below)
      metric.histogram?.dataPoints.push({
        attributes,
        startTimeUnixNano,
        timeUnixNano,
        count: metricState.count,
        sum: metricState.sum,
        ...(metricState.count > 0 ? { min: metricState.min, max: metricState.max } : {}),
        bucketCounts,
        explicitBounds
      })
    }
  }
  for (const gauge of reading.gauges) {
    if (gauge.samples.length === 0) continue
    const metric = metricOf(gauge.name, gauge.help, () => ({ gauge: { dataPoints: [] } }))
    for (const [labels, value] of gauge.samples)
      metric.gauge?.dataPoints.push({ attributes: keyValues(labels), startTimeUnixNano, timeUnixNano, asDouble: value })
  }
  return {
    resourceMetrics: [
      {
        resource: {
          attributes: keyValues({
            ...resource.attributes,
            "service.name": resource.serviceName,
            "service.version": resource.serviceVersion
          })
        },
        scopeMetrics: [{ scope: { name: "sluice", version: resource.serviceVersion }, metrics: [...byName.values()] }]
      }
    ]
  }
}

/** How an export is sent: the URL, and the document's body and content type. */
export interface Sender {
  readonly url: string
  /** Sent with every export besides the content type (a collector's API key: never logged). */
  readonly headers: Readonly<Record<string, string>>
  readonly encode: (document: unknown) => { readonly body: Uint8Array | string; readonly contentType: string }
  /** Told once when exports start failing (true) and once when they work again (false). */
  readonly report: (message: string, failed: boolean) => void
}

/**
 * Sends one document, giving up after `timeoutMs`; a failure is reported once (and the recovery
 * once), never raised.
 */
const sender = (to: Sender) => {
  let failing = false
  return (document: unknown, timeoutMs: number): Effect.Effect<void> =>
    Effect.promise(async () => {
      let problem: string | undefined
      try {
        const { body, contentType } = to.encode(document)
        const response = await fetch(to.url, {
          method: "POST",
          headers: { ...to.headers, "content-type": contentType },
          body,
          signal: AbortSignal.timeout(timeoutMs)
        })
        await response.arrayBuffer()
        if (!response.ok) problem = `the collector answered HTTP ${response.status}`
      } catch (error) {
        problem = error instanceof Error ? error.message : String(error)
      }
      if (problem !== undefined && !failing) {
        failing = true
        to.report(`metrics cannot be exported to ${to.url}: ${problem}; trying again every interval`, true)
      } else if (problem === undefined && failing) {
        failing = false
        to.report("metrics are exported again", false)
      }
    })
}

/** How long an export may take, in ms; the last one, as the gateway stops, less. */
const TIMEOUT_MS = 10_000
const LAST_TIMEOUT_MS = 2_000

/**
 * Exports `read`'s metrics every `intervalMs` (on the `Clock`) until the scope closes, and once more
 * then (for up to 2 s), so what the last interval counted is not lost.
 */
export const exportEvery = (
  intervalMs: number,
  read: Effect.Effect<Reading>,
  resource: Resource,
  to: Sender
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const send = sender(to)
    const start = yield* Effect.clockWith((clock) => clock.currentTimeNanos)
    const once = (timeoutMs: number) =>
      Effect.flatMap(read, (reading) =>
        Effect.flatMap(
          Effect.clockWith((clock) => clock.currentTimeNanos),
          (now) => send(document(reading, resource, start, now), timeoutMs)
        )
      )
    yield* Effect.forkScoped(Effect.repeat(Effect.delay(once(TIMEOUT_MS), intervalMs), Schedule.forever))
    yield* Effect.addFinalizer(() => once(LAST_TIMEOUT_MS))
  })
