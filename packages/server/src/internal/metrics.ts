/**
 * Metric families over an Effect `MetricRegistry` of the gateway's own, and their Prometheus text
 * exposition. A series is found by its label values through nested maps (no key string built per
 * update) and its hook is kept, so an update on the request path is a few map lookups and the
 * hook's own update: no Effect, no allocation once the series exists.
 */
import { MetricBoundaries, MetricKey, MetricRegistry, MetricState, Option } from "effect"
import type { MetricHook, MetricPair } from "effect"

/** An OpenTelemetry name (`gen_ai.client.token.usage`) as Prometheus writes it (`gen_ai_client_token_usage`). */
export const prometheusName = (name: string): string => name.replace(/[^a-zA-Z0-9_:]/g, "_")

/** A counter or histogram family: one name and help, its label names, a series per label values. */
export class Family<H extends MetricHook.MetricHook<number, unknown>> {
  private readonly series = new Map<string, unknown>()

  constructor(
    private readonly registry: MetricRegistry.MetricRegistry,
    private readonly key: (labels: ReadonlyArray<readonly [string, string]>) => MetricKey.MetricKey.Untyped,
    readonly labels: ReadonlyArray<string>
  ) {}

  /** The series of these label values (as many as the family has labels; extra ones are ignored). */
  at(a = "", b = "", c = "", d = ""): H {
    const n = this.labels.length
    let level = this.series
    if (n > 1) level = child(level, a)
    if (n > 2) level = child(level, b)
    if (n > 3) level = child(level, c)
    const last = n <= 1 ? a : n === 2 ? b : n === 3 ? c : d
    const hook = level.get(last) as H | undefined
    if (hook !== undefined) return hook
    const values = [a, b, c, d]
    const made = this.registry.get(this.key(this.labels.map((label, i) => [label, values[i]!] as const))) as H
    level.set(last, made)
    return made
  }
}

/** The map below `level` for `value`, made when missing. */
const child = (level: Map<string, unknown>, value: string): Map<string, unknown> => {
  let next = level.get(value) as Map<string, unknown> | undefined
  if (next === undefined) level.set(value, (next = new Map()))
  return next
}

/** The registry and the families made over it. */
export class Registry {
  readonly registry = MetricRegistry.make()
  /** Help text by metric name, for `# HELP`. */
  private readonly help = new Map<string, string>()
  /** The Prometheus name by metric name: counters end in `_total`, seconds in `_seconds`. */
  private readonly names = new Map<string, string>()
  /** Names of the histograms that measure seconds. */
  private readonly seconds = new Set<string>()

  /** The unit of a metric as OpenTelemetry writes it: `s` for seconds, else `1`. */
  unitOf(name: string): string {
    return this.seconds.has(name) ? "s" : "1"
  }

  counter(name: string, help: string, labels: ReadonlyArray<string>): Family<MetricHook.MetricHook.Counter<number>> {
    this.help.set(name, help)
    this.names.set(name, `${prometheusName(name)}_total`)
    const base = MetricKey.counter(name, { description: help })
    return new Family(this.registry, (tags) => tagged(base, tags), labels)
  }

  /** A histogram; `seconds` when it measures time in seconds (its Prometheus name says so). */
  histogram(
    name: string,
    help: string,
    boundaries: ReadonlyArray<number>,
    labels: ReadonlyArray<string>,
    seconds = false
  ): Family<MetricHook.MetricHook.Histogram> {
    this.help.set(name, help)
    this.names.set(name, `${prometheusName(name)}${seconds ? "_seconds" : ""}`)
    if (seconds) this.seconds.add(name)
    const base = MetricKey.histogram(name, MetricBoundaries.fromIterable(boundaries), help)
    return new Family(this.registry, (tags) => tagged(base, tags), labels)
  }

  /**
   * Every series in Prometheus' text format, families in name order, with the counters and
   * histograms of `extra` (Effect's global registry, where core counts rare events).
   */
  exposition(extra: ReadonlyArray<MetricPair.MetricPair.Untyped> = []): string {
    const byName = new Map<string, Array<MetricPair.MetricPair.Untyped>>()
    for (const pair of [...this.registry.snapshot(), ...extra]) {
      const list = byName.get(pair.metricKey.name)
      if (list === undefined) byName.set(pair.metricKey.name, [pair])
      else list.push(pair)
    }
    let text = ""
    for (const name of [...byName.keys()].sort()) {
      const pairs = byName.get(name)!
      const state = pairs[0]!.metricState
      if (!MetricState.isHistogramState(state) && !MetricState.isCounterState(state)) continue
      const type = MetricState.isHistogramState(state) ? "histogram" : "counter"
      const metric = this.names.get(name) ?? `${prometheusName(name)}${type === "counter" ? "_total" : ""}`
      const help = this.help.get(name) ?? Option.getOrElse(pairs[0]!.metricKey.description, () => name)
      text += `# HELP ${metric} ${help}\n# TYPE ${metric} ${type}\n`
      for (const { metricKey, metricState } of pairs) {
        const labels = [...metricKey.tags].map((t) => `${prometheusName(t.key)}="${escape(t.value)}"`)
        if (MetricState.isHistogramState(metricState)) {
          for (const [bound, count] of metricState.buckets)
            text += `${metric}_bucket${braces([...labels, `le="${bound === Infinity ? "+Inf" : bound}"`])} ${count}\n`
          // Effect's buckets end at the last finite boundary; +Inf is every observation.
          if (metricState.buckets.at(-1)?.[0] !== Infinity)
            text += `${metric}_bucket${braces([...labels, `le="+Inf"`])} ${metricState.count}\n`
          text += `${metric}_sum${braces(labels)} ${metricState.sum}\n`
          text += `${metric}_count${braces(labels)} ${metricState.count}\n`
        } else if (MetricState.isCounterState(metricState)) {
          text += `${metric}${braces(labels)} ${metricState.count}\n`
        }
      }
    }
    return text
  }
}

const tagged = (
  key: MetricKey.MetricKey.Untyped,
  tags: ReadonlyArray<readonly [string, string]>
): MetricKey.MetricKey.Untyped =>
  tags.reduce<MetricKey.MetricKey.Untyped>((k, [label, value]) => MetricKey.tagged(k, label, value), key)

const braces = (labels: ReadonlyArray<string>) => (labels.length === 0 ? "" : `{${labels.join(",")}}`)

/** A label value as Prometheus' text format quotes it. */
export const escape = (value: string): string => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"')

/** A gauge read when scraped or exported: its OpenTelemetry name, help, and a value per label set. */
export interface Gauge {
  readonly name: string
  readonly help: string
  readonly samples: ReadonlyArray<readonly [Readonly<Record<string, string>>, number]>
}

/** A gauge's sample lines in Prometheus' text format (none without samples). */
export const gaugeLines = ({ name, help, samples }: Gauge): string => {
  if (samples.length === 0) return ""
  const metric = prometheusName(name)
  let text = `# HELP ${metric} ${help}\n# TYPE ${metric} gauge\n`
  for (const [labels, value] of samples)
    text += `${metric}${braces(Object.entries(labels).map(([k, v]) => `${k}="${escape(v)}"`))} ${value}\n`
  return text
}
