import { describe, expect, it } from "@effect/vitest"
import { Health } from "@sluice/core"
import { ConfigProvider, Effect, Logger } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import * as Telemetry from "../src/Telemetry.js"
import { eventually, simulatedConfig, startGateway } from "./harness.js"

const withEnv = <A, E>(env: Record<string, string>, effect: Effect.Effect<A, E>) =>
  Effect.withConfigProvider(effect, ConfigProvider.fromMap(new Map(Object.entries(env))))

describe("Telemetry.plan reads the standard OTEL_* variables", () => {
  it.effect("exports nothing without an endpoint, with OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none", () =>
    Effect.gen(function* () {
      expect(yield* withEnv({}, Telemetry.plan)).toBeUndefined()
      const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }
      expect(yield* withEnv({ ...endpoint, OTEL_SDK_DISABLED: "true" }, Telemetry.plan)).toBeUndefined()
      expect(yield* withEnv({ ...endpoint, OTEL_TRACES_EXPORTER: "none" }, Telemetry.plan)).toBeUndefined()
    })
  )

  it.effect("takes the traces endpoint as is, the generic one with /v1/traces, http/protobuf by default", () =>
    Effect.gen(function* () {
      const generic = yield* withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/" }, Telemetry.plan)
      expect(generic).toMatchObject({
        exporter: "otlp",
        url: "http://collector:4318/v1/traces",
        protocol: "http/protobuf",
        serviceName: "sluice",
        sampler: "parentbased_always_on"
      })
      const specific = yield* withEnv(
        {
          OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
          OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://traces:9999/custom",
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
          OTEL_SERVICE_NAME: "edge-gateway",
          OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=prod,team=ml%20ops",
          OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
          OTEL_TRACES_SAMPLER_ARG: "0.25"
        },
        Telemetry.plan
      )
      expect(specific).toMatchObject({
        url: "http://traces:9999/custom",
        protocol: "http/json",
        serviceName: "edge-gateway",
        resourceAttributes: { "deployment.environment": "prod", team: "ml ops" },
        sampler: "parentbased_traceidratio",
        samplerArg: 0.25,
        warnings: []
      })
      const odd = yield* withEnv(
        { OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc", OTEL_TRACES_SAMPLER: "sometimes" },
        Telemetry.plan
      )
      expect(odd?.url).toBe("http://localhost:4318/v1/traces")
      expect(odd?.protocol).toBe("http/protobuf")
      expect(odd?.warnings).toHaveLength(2)
    })
  )

  it.effect("reads where metrics go the same way, with their own endpoint, exporter and interval", () =>
    Effect.gen(function* () {
      expect(yield* withEnv({}, Telemetry.metricsPlan)).toBeUndefined()
      // A traces endpoint says nothing of metrics.
      expect(
        yield* withEnv({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://t:1/v1/traces" }, Telemetry.metricsPlan)
      ).toBe(undefined)
      const generic = yield* withEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }, Telemetry.metricsPlan)
      expect(generic).toMatchObject({
        url: "http://collector:4318/v1/metrics",
        protocol: "http/protobuf",
        intervalMs: 60_000
      })
      const specific = yield* withEnv(
        {
          OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318",
          OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "http://metrics:9999/m",
          OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "http/json",
          OTEL_METRIC_EXPORT_INTERVAL: "15000"
        },
        Telemetry.metricsPlan
      )
      expect(specific).toMatchObject({ url: "http://metrics:9999/m", protocol: "http/json", intervalMs: 15_000 })
      const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }
      expect(yield* withEnv({ ...endpoint, OTEL_METRICS_EXPORTER: "none" }, Telemetry.metricsPlan)).toBeUndefined()
      expect(
        yield* withEnv({ ...endpoint, OTEL_METRICS_EXPORTER: "prometheus" }, Telemetry.metricsPlan)
      ).toBeUndefined()
      const unknown = yield* withEnv({ ...endpoint, OTEL_METRICS_EXPORTER: "statsd" }, Telemetry.metricsPlan)
      expect(unknown).toMatchObject({ url: "", warnings: ["OTEL_METRICS_EXPORTER=statsd is not supported"] })
    })
  )
})

/** A span as the OTLP/JSON body carries it. */
interface OtlpSpan {
  readonly name: string
  readonly parentSpanId?: string
  readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: Record<string, unknown> }>
}

/** A fake collector of OTLP/JSON traces answering `status()`; every resource and span it got. */
const collector = (status: () => number) =>
  Effect.acquireRelease(
    Effect.async<{
      url: string
      spans: Array<OtlpSpan>
      resources: Array<Record<string, unknown>>
      close: () => void
    }>((resume) => {
      const spans: Array<OtlpSpan> = []
      const resources: Array<Record<string, unknown>> = []
      const server = createServer((req: IncomingMessage, res: ServerResponse) => {
        let body = ""
        req.on("data", (chunk: Buffer) => (body += chunk.toString()))
        req.on("end", () => {
          const code = status()
          if (code === 200) {
            const document = JSON.parse(body) as {
              resourceSpans: Array<{
                resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> }
                scopeSpans: Array<{ spans: Array<OtlpSpan> }>
              }>
            }
            for (const rs of document.resourceSpans) {
              resources.push(Object.fromEntries(rs.resource.attributes.map((a) => [a.key, a.value.stringValue])))
              for (const ss of rs.scopeSpans) spans.push(...ss.spans)
            }
          }
          res.writeHead(code, { "content-type": "application/json" })
          res.end("{}")
        })
      })
      server.listen(0, "127.0.0.1", () =>
        resume(
          Effect.succeed({
            url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`,
            spans,
            resources,
            close: () => server.close()
          })
        )
      )
    }),
    (c) => Effect.sync(c.close)
  )

const ask = (gateway: Effect.Effect.Success<ReturnType<typeof startGateway>>) =>
  Effect.promise(() =>
    gateway.client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
  )

describe("traces over OTLP from the environment", () => {
  it.live(
    "exports over http/json with OTEL_SERVICE_NAME and service.version, lists as arrays, no health-check traces",
    () =>
      Effect.gen(function* () {
        const c = yield* collector(() => 200)
        const config = simulatedConfig(
          [
            { id: "a", healthCheck: { type: "inference", intervalMs: 20 } },
            { id: "off", enabled: false }
          ],
          [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["a", "off"] }]
        )
        const gateway = yield* startGateway(config, {
          telemetry: Telemetry.layerConfig(config.server.tracing),
          env: {
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: c.url,
            OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
            OTEL_SERVICE_NAME: "sluice-under-test",
            OTEL_BSP_SCHEDULE_DELAY: "10"
          }
        })
        yield* ask(gateway)
        const route = yield* eventually(() => c.spans.find((s) => s.name === "sluice.route"))
        expect(c.resources[0]).toMatchObject({ "service.name": "sluice-under-test", "service.version": "0.1.0" })
        const candidates = route.attributes.find((a) => a.key === "sluice.decision.candidates")?.value
        expect(candidates).toEqual({ arrayValue: { values: [{ stringValue: "a" }] } })
        // Health checks ran meanwhile, and none became a trace of its own.
        const health = gateway.service(Health.Health)
        yield* eventually(() => (Effect.runSync(health.status("a")).consecutiveSuccesses >= 3 ? true : undefined))
        yield* ask(gateway)
        yield* eventually(() => (c.spans.filter((s) => s.name === "sluice.route").length === 2 ? true : undefined))
        const roots = c.spans.filter((s) => s.parentSpanId === undefined || s.parentSpanId === "")
        expect(roots.filter((s) => s.name.startsWith("http.server")).map((s) => s.name)).toEqual([
          "http.server POST",
          "http.server POST"
        ])
        expect(roots.filter((s) => s.name.startsWith("http.client"))).toEqual([])
      }).pipe(Effect.scoped)
  )

  it.live("logs a collector that refuses traces once, and once more when it takes them again", () =>
    Effect.gen(function* () {
      let status = 500
      const c = yield* collector(() => status)
      const logs: Array<string> = []
      const logger = Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ message }) => void logs.push(String(message)))
      )
      const config = simulatedConfig([{ id: "a" }], [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["a"] }])
      const gateway = yield* startGateway(config, {
        // The gateway gives tracing its own loggers.
        telemetry: Telemetry.layerConfig(),
        logging: logger,
        env: {
          OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: c.url,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
          OTEL_BSP_SCHEDULE_DELAY: "10"
        }
      })
      const failures = () => logs.filter((l) => l.includes("traces cannot be exported"))
      yield* ask(gateway)
      yield* eventually(() => (failures().length === 1 ? true : undefined))
      yield* ask(gateway)
      yield* ask(gateway)
      // Let both batches fail too: still one warning.
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 200)))
      expect(failures()).toHaveLength(1)
      status = 200
      yield* ask(gateway)
      yield* eventually(() => (logs.some((l) => l.includes("traces are exported again")) ? true : undefined))
      expect(c.spans.some((s) => s.name === "sluice.route")).toBe(true)
    }).pipe(Effect.scoped)
  )
})
