/**
 * Tracing. With the standard `OTEL_EXPORTER_OTLP_ENDPOINT` set (e.g. `http://127.0.0.1:4318` for a
 * local Jaeger), every request's span tree — server request → `sluice.route` → `sluice.attempt` →
 * upstream HTTP call — is exported over OTLP/HTTP. Without it, spans stay in-process and cost little.
 */
import type { SpanExporter } from "@opentelemetry/sdk-trace-base"
import { Config, Effect, Layer, Option } from "effect"

/** The service name spans are reported under. */
export const serviceName = "sluice"

/**
 * The OpenTelemetry SDK, imported on first use: a gateway that exports no traces never loads it
 * (~8 MB resident), nor the OTLP exporter.
 */
const sdk = Effect.promise(() =>
  Promise.all([import("@effect/opentelemetry"), import("@opentelemetry/sdk-trace-base")])
)

/** Exports spans to the given exporter, one at a time as they end (tests use an in-memory exporter). */
export const layerExporter = (exporter: SpanExporter) =>
  Layer.unwrapEffect(
    Effect.map(sdk, ([{ NodeSdk }, { SimpleSpanProcessor }]) =>
      NodeSdk.layer(() => ({ resource: { serviceName }, spanProcessor: new SimpleSpanProcessor(exporter) }))
    )
  )

/** OTLP/HTTP export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; nothing otherwise. */
export const layer: Layer.Layer<never> = Layer.unwrapEffect(
  Effect.gen(function* () {
    const endpoint = yield* Config.option(Config.string("OTEL_EXPORTER_OTLP_ENDPOINT")).pipe(
      Effect.orElseSucceed(() => Option.none<string>())
    )
    if (Option.isNone(endpoint)) return Layer.empty
    yield* Effect.logInfo(`exporting traces over OTLP to ${endpoint.value}`)
    const [{ NodeSdk }, { BatchSpanProcessor }] = yield* sdk
    const { OTLPTraceExporter } = yield* Effect.promise(() => import("@opentelemetry/exporter-trace-otlp-http"))
    return NodeSdk.layer(() => ({
      resource: { serviceName },
      spanProcessor: new BatchSpanProcessor(new OTLPTraceExporter())
    }))
  })
)
