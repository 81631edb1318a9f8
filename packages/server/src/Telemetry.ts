/**
 * Tracing, set up from the standard OpenTelemetry environment variables, as every OpenTelemetry
 * service is: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (or `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`),
 * `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` (`http/protobuf`, the default, or `http/json`),
 * `OTEL_TRACES_EXPORTER` (`otlp`, `console`, `none`), `OTEL_SDK_DISABLED`, `OTEL_SERVICE_NAME`,
 * `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` and
 * `OTEL_BSP_SCHEDULE_DELAY`. Without an endpoint (or with the SDK disabled) nothing is loaded and the
 * gateway makes no spans at all (see core `Tracing`). {@link metricsPlan} reads where the metrics go
 * the same way (`Observe` sends them).
 *
 * Every request's span tree — server request → `sluice.route` → `sluice.attempt` → upstream HTTP
 * call — is exported; root client spans (health checks: a trace per check per upstream) are sampled
 * at `server.tracing.healthChecks` (0, off, by default). Sluice's list attributes leave as arrays,
 * HTTP header attributes are dropped, and a collector that cannot be reached is logged once (and
 * again once it is back), not dropped silently.
 */
import type { ReadableSpan, Sampler, SpanExporter } from "@opentelemetry/sdk-trace-base"
import type { Attributes, Context as OtelContext, Link, SpanKind as OtelSpanKind } from "@opentelemetry/api"
import { Config, Effect, Layer, Option, Runtime } from "effect"
import { createRequire } from "node:module"

/** The service name spans are reported under unless `OTEL_SERVICE_NAME` says otherwise. */
export const serviceName = "sluice"

/** This package's version, reported as `service.version`. */
export const serviceVersion: string = (createRequire(import.meta.url)("../package.json") as { version: string }).version

/** Where and how traces go, read from the environment. */
export interface Plan {
  readonly exporter: "otlp" | "console"
  /** The OTLP traces URL (`.../v1/traces`). */
  readonly url: string
  readonly protocol: "http/protobuf" | "http/json"
  readonly serviceName: string
  readonly resourceAttributes: Readonly<Record<string, string>>
  /** `OTEL_TRACES_SAMPLER`, lower-cased; `parentbased_always_on` by default. */
  readonly sampler: string
  /** `OTEL_TRACES_SAMPLER_ARG` as a ratio; 1 by default. */
  readonly samplerArg: number
  /** How often batches are sent, in ms (`OTEL_BSP_SCHEDULE_DELAY`, default 5000). */
  readonly scheduleDelayMs: number
  /** Settings read that were not understood (an unknown exporter or protocol), to log. */
  readonly warnings: ReadonlyArray<string>
}

const optional = (name: string) =>
  Config.option(Config.string(name)).pipe(
    Effect.map(Option.map((value) => value.trim())),
    Effect.map(Option.filter((value) => value !== "")),
    Effect.orElseSucceed(() => Option.none<string>())
  )

const SAMPLERS = [
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio"
]

/** `k=v,k2=v2` (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`) as a record; malformed pairs are left out. */
const resourceAttributes = (text: string): Record<string, string> => {
  const attributes: Record<string, string> = {}
  for (const pair of text.split(",")) {
    const eq = pair.indexOf("=")
    if (eq <= 0) continue
    try {
      attributes[decodeURIComponent(pair.slice(0, eq).trim())] = decodeURIComponent(pair.slice(eq + 1).trim())
    } catch {
      // A malformed percent-encoding: the pair is skipped, as the specification says.
    }
  }
  return attributes
}

/** Where one signal's OTLP export goes, and the resource it reports. */
interface Destination {
  readonly exporter: "otlp" | "console"
  readonly url: string
  readonly protocol: "http/protobuf" | "http/json"
  readonly serviceName: string
  readonly resourceAttributes: Readonly<Record<string, string>>
  readonly warnings: ReadonlyArray<string>
}

/**
 * Where `signal` goes according to the environment (`OTEL_<SIGNAL>_EXPORTER`, the signal's endpoint
 * or the generic one with `/v1/<signal>`, the signal's protocol or the generic one), or `undefined`
 * when nowhere.
 */
const destination = (signal: "traces" | "metrics"): Effect.Effect<Destination | undefined> =>
  Effect.gen(function* () {
    const warnings: Array<string> = []
    const upper = signal.toUpperCase()
    if (Option.getOrUndefined(yield* optional("OTEL_SDK_DISABLED"))?.toLowerCase() === "true") return undefined
    const exporters = Option.map(yield* optional(`OTEL_${upper}_EXPORTER`), (v) =>
      v
        .toLowerCase()
        .split(",")
        .map((e) => e.trim())
    )
    const signalEndpoint = yield* optional(`OTEL_EXPORTER_OTLP_${upper}_ENDPOINT`)
    const endpoint = yield* optional("OTEL_EXPORTER_OTLP_ENDPOINT")
    let exporter: Destination["exporter"] | undefined
    if (Option.isNone(exporters))
      exporter = Option.isSome(signalEndpoint) || Option.isSome(endpoint) ? "otlp" : undefined
    else if (exporters.value.includes("none")) exporter = undefined
    else {
      exporter = exporters.value.includes("otlp") ? "otlp" : exporters.value.includes("console") ? "console" : undefined
      // Prometheus is pulled from GET /metrics whatever this says: only other exporters are unknown.
      if (exporter === undefined && !(signal === "metrics" && exporters.value.every((e) => e === "prometheus")))
        warnings.push(`OTEL_${upper}_EXPORTER=${exporters.value.join(",")} is not supported`)
    }
    if (exporter === undefined) return warnings.length === 0 ? undefined : { ...NOWHERE, warnings }
    const url = Option.isSome(signalEndpoint)
      ? signalEndpoint.value
      : `${Option.getOrElse(endpoint, () => "http://localhost:4318").replace(/\/+$/, "")}/v1/${signal}`
    const signalProtocol = yield* optional(`OTEL_EXPORTER_OTLP_${upper}_PROTOCOL`)
    const protocolText = Option.getOrElse(
      Option.isSome(signalProtocol) ? signalProtocol : yield* optional("OTEL_EXPORTER_OTLP_PROTOCOL"),
      () => "http/protobuf"
    ).toLowerCase()
    let protocol: Destination["protocol"] = "http/protobuf"
    if (protocolText === "http/json") protocol = "http/json"
    else if (protocolText !== "http/protobuf")
      warnings.push(`OTEL_EXPORTER_OTLP_PROTOCOL=${protocolText} is not supported; using http/protobuf`)
    return {
      exporter,
      url,
      protocol,
      serviceName: Option.getOrElse(yield* optional("OTEL_SERVICE_NAME"), () => serviceName),
      resourceAttributes: resourceAttributes(Option.getOrElse(yield* optional("OTEL_RESOURCE_ATTRIBUTES"), () => "")),
      warnings
    }
  })

/** A destination that exports nothing, carrying only the warnings of what was not understood. */
const NOWHERE: Destination = {
  exporter: "console",
  url: "",
  protocol: "http/protobuf",
  serviceName,
  resourceAttributes: {},
  warnings: []
}

/** Where traces go according to the environment, or `undefined` when nowhere. */
export const plan: Effect.Effect<Plan | undefined> = Effect.gen(function* () {
  const to = yield* destination("traces")
  if (to === undefined || to.url === "") return undefined
  const warnings = [...to.warnings]
  let sampler = Option.getOrElse(yield* optional("OTEL_TRACES_SAMPLER"), () => "parentbased_always_on").toLowerCase()
  if (!SAMPLERS.includes(sampler)) {
    warnings.push(`OTEL_TRACES_SAMPLER=${sampler} is not supported; using parentbased_always_on`)
    sampler = "parentbased_always_on"
  }
  const arg = Number(Option.getOrElse(yield* optional("OTEL_TRACES_SAMPLER_ARG"), () => "1"))
  const delay = Number(Option.getOrElse(yield* optional("OTEL_BSP_SCHEDULE_DELAY"), () => "5000"))
  return {
    ...to,
    sampler,
    samplerArg: Number.isFinite(arg) && arg >= 0 && arg <= 1 ? arg : 1,
    scheduleDelayMs: Number.isFinite(delay) && delay >= 0 ? delay : 5000,
    warnings
  }
})

/** Where metrics go over OTLP, read from the environment. */
export interface MetricsPlan {
  /** The OTLP metrics URL (`.../v1/metrics`). */
  readonly url: string
  readonly protocol: "http/protobuf" | "http/json"
  readonly serviceName: string
  readonly resourceAttributes: Readonly<Record<string, string>>
  /** How often the metrics are sent, in ms (`OTEL_METRIC_EXPORT_INTERVAL`, default 60000). */
  readonly intervalMs: number
  /**
   * Headers sent with each export (`OTEL_EXPORTER_OTLP_METRICS_HEADERS` over
   * `OTEL_EXPORTER_OTLP_HEADERS`, `k=v,k2=v2`): a hosted collector's API key, so never logged.
   */
  readonly headers: Readonly<Record<string, string>>
  /** Settings read that were not understood, to log. */
  readonly warnings: ReadonlyArray<string>
}

/**
 * Where the metrics go over OTLP (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, or
 * `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/metrics`; `OTEL_METRICS_EXPORTER`, the protocol variables,
 * `OTEL_METRIC_EXPORT_INTERVAL`), with what was not understood; `url` is empty when they go nowhere
 * (`/metrics` serves them anyway).
 */
export const metricsPlan: Effect.Effect<MetricsPlan | undefined> = Effect.gen(function* () {
  const to = yield* destination("metrics")
  if (to === undefined) return undefined
  const warnings = [...to.warnings]
  if (to.exporter === "console" && to.url !== "") warnings.push("OTEL_METRICS_EXPORTER=console is not supported")
  const interval = Number(Option.getOrElse(yield* optional("OTEL_METRIC_EXPORT_INTERVAL"), () => "60000"))
  const headers = {
    ...resourceAttributes(Option.getOrElse(yield* optional("OTEL_EXPORTER_OTLP_HEADERS"), () => "")),
    ...resourceAttributes(Option.getOrElse(yield* optional("OTEL_EXPORTER_OTLP_METRICS_HEADERS"), () => ""))
  }
  return {
    url: to.exporter === "otlp" ? to.url : "",
    protocol: to.protocol,
    serviceName: to.serviceName,
    resourceAttributes: to.resourceAttributes,
    intervalMs: Number.isFinite(interval) && interval > 0 ? interval : 60_000,
    headers,
    warnings
  }
})

/** Tracing settings of the config (`server.tracing`). */
export interface Settings {
  /** The share of health checks traced (root client spans), 0 to 1; default 0. */
  readonly healthChecks?: number
}

/**
 * The OpenTelemetry SDK, imported on first use: a gateway that exports no traces never loads it
 * (~8 MB resident), nor the OTLP exporter.
 */
const sdk = Effect.promise(() =>
  Promise.all([import("@effect/opentelemetry"), import("@opentelemetry/sdk-trace-base"), import("@opentelemetry/api")])
)

type Sdk = Effect.Effect.Success<typeof sdk>

/** The sampler named by the plan, with root client spans (health checks) sampled at `healthChecks`. */
const samplerOf = ([, base, api]: Sdk, plan: Pick<Plan, "sampler" | "samplerArg">, healthChecks: number): Sampler => {
  const ratio = new base.TraceIdRatioBasedSampler(plan.samplerArg)
  const root = plan.sampler.endsWith("always_off")
    ? new base.AlwaysOffSampler()
    : plan.sampler.endsWith("traceidratio")
      ? ratio
      : new base.AlwaysOnSampler()
  const configured = plan.sampler.startsWith("parentbased") ? new base.ParentBasedSampler({ root }) : root
  const checks =
    healthChecks >= 1
      ? configured
      : healthChecks <= 0
        ? new base.AlwaysOffSampler()
        : new base.TraceIdRatioBasedSampler(healthChecks)
  return {
    shouldSample: (
      context: OtelContext,
      traceId: string,
      name: string,
      kind: OtelSpanKind,
      attributes: Attributes,
      links: Array<Link>
    ) =>
      kind === api.SpanKind.CLIENT && api.trace.getSpanContext(context) === undefined
        ? checks.shouldSample(context, traceId, name, kind, attributes, links)
        : configured.shouldSample(context, traceId, name, kind, attributes, links),
    toString: () => `SluiceSampler{${configured.toString()}, health checks: ${healthChecks}}`
  }
}

/** `ExportResultCode.SUCCESS` of `@opentelemetry/core` (not a dependency of its own here). */
const SUCCESS = 0

/** A span as exported: `sluice.*` list attributes (JSON text in Effect's spans) as arrays, no HTTP headers. */
const tidy = (span: ReadableSpan): ReadableSpan => {
  let attributes: Record<string, unknown> | undefined
  for (const key in span.attributes) {
    const value = span.attributes[key]
    if (key.startsWith("http.request.header.") || key.startsWith("http.response.header.")) {
      attributes ??= { ...span.attributes }
      delete attributes[key]
    } else if (key.startsWith("sluice.") && typeof value === "string" && value.startsWith("[")) {
      try {
        const parsed: unknown = JSON.parse(value)
        if (Array.isArray(parsed)) {
          attributes ??= { ...span.attributes }
          attributes[key] = parsed
        }
      } catch {
        // Not a list after all: left as text.
      }
    }
  }
  return attributes === undefined ? span : (Object.create(span, { attributes: { value: attributes } }) as ReadableSpan)
}

/**
 * An exporter that tidies spans ({@link tidy}) and reports a failing export once (and the recovery
 * once) through `report`, rather than dropping spans silently.
 */
export const exporter = (inner: SpanExporter, report: (message: string, failed: boolean) => void): SpanExporter => {
  let failing = false
  return {
    export: (spans, done) =>
      inner.export(spans.map(tidy), (result) => {
        if (result.code !== SUCCESS && !failing) {
          failing = true
          report(
            `traces cannot be exported: ${result.error?.message ?? "the collector refused them"}; dropping them until it answers`,
            true
          )
        } else if (result.code === SUCCESS && failing) {
          failing = false
          report("traces are exported again", false)
        }
        done(result)
      }),
    shutdown: () => inner.shutdown(),
    forceFlush: () => inner.forceFlush?.() ?? Promise.resolve()
  }
}

/** Exports spans to the given exporter, one at a time as they end (tests use an in-memory exporter). */
export const layerExporter = (spanExporter: SpanExporter, settings: Settings = {}) =>
  Layer.unwrapEffect(
    Effect.map(sdk, (loaded) => {
      const [{ NodeSdk }, { SimpleSpanProcessor }] = loaded
      return NodeSdk.layer(() => ({
        resource: { serviceName, serviceVersion },
        spanProcessor: new SimpleSpanProcessor(exporter(spanExporter, () => {})),
        tracerConfig: {
          sampler: samplerOf(loaded, { sampler: "parentbased_always_on", samplerArg: 1 }, settings.healthChecks ?? 0)
        }
      }))
    })
  )

/** Tracing as the environment asks ({@link plan}); nothing when it asks for none. */
export const layerConfig = (settings: Settings = {}): Layer.Layer<never> =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const planned = yield* plan
      if (planned === undefined) return Layer.empty
      for (const warning of planned.warnings) yield* Effect.logWarning(warning)
      const loaded = yield* sdk
      const [{ NodeSdk }, { BatchSpanProcessor, ConsoleSpanExporter }] = loaded
      const runtime = yield* Effect.runtime<never>()
      const report = (message: string, failed: boolean) =>
        void Runtime.runFork(runtime)(failed ? Effect.logWarning(message) : Effect.logInfo(message))
      let inner: SpanExporter
      if (planned.exporter === "console") inner = new ConsoleSpanExporter()
      else if (planned.protocol === "http/json") {
        const { OTLPTraceExporter } = yield* Effect.promise(() => import("@opentelemetry/exporter-trace-otlp-http"))
        inner = new OTLPTraceExporter({ url: planned.url })
      } else {
        const { OTLPTraceExporter } = yield* Effect.promise(() => import("@opentelemetry/exporter-trace-otlp-proto"))
        inner = new OTLPTraceExporter({ url: planned.url })
      }
      yield* Effect.logInfo(
        planned.exporter === "console"
          ? "exporting traces to the console"
          : `exporting traces over OTLP (${planned.protocol}) to ${planned.url}`
      )
      return NodeSdk.layer(() => ({
        resource: { serviceName: planned.serviceName, serviceVersion, attributes: planned.resourceAttributes },
        spanProcessor: new BatchSpanProcessor(exporter(inner, report), {
          scheduledDelayMillis: planned.scheduleDelayMs
        }),
        tracerConfig: { sampler: samplerOf(loaded, planned, settings.healthChecks ?? 0) }
      }))
    })
  )

/** {@link layerConfig} with the default settings (health checks not traced). */
export const layer: Layer.Layer<never> = layerConfig()
