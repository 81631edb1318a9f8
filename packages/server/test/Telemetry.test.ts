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

/** A span as the OTLP/JSON body carries it (and as the protobuf decoder below rebuilds it). */
interface OtlpSpan {
  readonly name: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: Record<string, unknown> }>
}

/** What a collector received: per export, its path and content type; every resource and span. */
interface Collected {
  readonly url: string
  readonly exports: Array<{ readonly path: string; readonly type: string }>
  readonly spans: Array<OtlpSpan>
  readonly resources: Array<Record<string, unknown>>
}

/**
 * The fields of one protobuf message by number, in order: varints as numbers, length-delimited
 * fields as bytes (fixed-width ones, timestamps, are skipped). Only what an OTLP trace export uses.
 */
const protobufFields = (bytes: Uint8Array): Map<number, Array<number | Uint8Array>> => {
  const fields = new Map<number, Array<number | Uint8Array>>()
  let at = 0
  const varint = () => {
    let value = 0
    for (let shift = 0; ; shift += 7) {
      const byte = bytes[at++]!
      value += (byte & 0x7f) * 2 ** shift
      if ((byte & 0x80) === 0) return value
    }
  }
  while (at < bytes.length) {
    const key = varint()
    const wire = key % 8
    let value: number | Uint8Array | undefined
    if (wire === 0) value = varint()
    else if (wire === 2) {
      const length = varint()
      value = bytes.subarray(at, at + length)
      at += length
    } else if (wire === 1 || wire === 5) at += wire === 1 ? 8 : 4
    else throw new Error(`protobuf wire type ${wire} is not one OTLP traces use`)
    if (value !== undefined) fields.set(Math.floor(key / 8), [...(fields.get(Math.floor(key / 8)) ?? []), value])
  }
  return fields
}

const bytesOf = (fields: Map<number, Array<number | Uint8Array>>, n: number): ReadonlyArray<Uint8Array> =>
  (fields.get(n) ?? []).filter((v): v is Uint8Array => v instanceof Uint8Array)
const textOf = (fields: Map<number, Array<number | Uint8Array>>, n: number) =>
  Buffer.from(bytesOf(fields, n)[0] ?? new Uint8Array()).toString("utf8")
const hexOf = (fields: Map<number, Array<number | Uint8Array>>, n: number) =>
  Buffer.from(bytesOf(fields, n)[0] ?? new Uint8Array()).toString("hex")

/** An `AnyValue` (string, or an array of them) as OTLP/JSON writes it. */
const anyValue = (bytes: Uint8Array): Record<string, unknown> => {
  const fields = protobufFields(bytes)
  if (fields.has(5)) return { arrayValue: { values: bytesOf(protobufFields(bytesOf(fields, 5)[0]!), 1).map(anyValue) } }
  return { stringValue: textOf(fields, 1) }
}

/** `KeyValue` list entries as OTLP/JSON writes them. */
const keyValues = (list: ReadonlyArray<Uint8Array>) =>
  list.map((bytes) => {
    const kv = protobufFields(bytes)
    return { key: textOf(kv, 1), value: anyValue(bytesOf(kv, 2)[0] ?? new Uint8Array()) }
  })

/**
 * An `ExportTraceServiceRequest` in protobuf as its OTLP/JSON form (the parts the assertions read),
 * field numbers from opentelemetry-proto's `trace.proto`, `resource.proto` and `common.proto`.
 */
const decodeTraces = (body: Uint8Array) => ({
  resourceSpans: bytesOf(protobufFields(body), 1).map((bytes) => {
    const rs = protobufFields(bytes)
    return {
      resource: { attributes: keyValues(bytesOf(protobufFields(bytesOf(rs, 1)[0]!), 1)) },
      scopeSpans: bytesOf(rs, 2).map((ss) => ({
        spans: bytesOf(protobufFields(ss), 2).map((bytes): OtlpSpan => {
          const span = protobufFields(bytes)
          return {
            traceId: hexOf(span, 1),
            spanId: hexOf(span, 2),
            parentSpanId: hexOf(span, 4),
            name: textOf(span, 5),
            attributes: keyValues(bytesOf(span, 9))
          }
        })
      }))
    }
  })
})

/**
 * A fake collector of OTLP traces (JSON or protobuf, by content type) answering `status()`; what it
 * received.
 */
const collector = (status: () => number) =>
  Effect.acquireRelease(
    Effect.async<Collected & { close: () => void }>((resume) => {
      const collected: Collected = { url: "", exports: [], spans: [], resources: [] }
      const server = createServer((req: IncomingMessage, res: ServerResponse) => {
        const chunks: Array<Buffer> = []
        req.on("data", (chunk: Buffer) => chunks.push(chunk))
        req.on("end", () => {
          const code = status()
          const type = req.headers["content-type"] ?? ""
          collected.exports.push({ path: req.url ?? "", type })
          // The generic endpoint gets the metrics too (at /v1/metrics): only traces are read here.
          if (code === 200 && req.url === "/v1/traces") {
            const body = Buffer.concat(chunks)
            const document = (
              type === "application/x-protobuf" ? decodeTraces(body) : JSON.parse(body.toString("utf8"))
            ) as {
              resourceSpans: Array<{
                resource: { attributes: ReadonlyArray<{ key: string; value: { stringValue?: string } }> }
                scopeSpans: Array<{ spans: ReadonlyArray<OtlpSpan> }>
              }>
            }
            for (const rs of document.resourceSpans) {
              collected.resources.push(
                Object.fromEntries(rs.resource.attributes.map((a) => [a.key, a.value.stringValue]))
              )
              for (const ss of rs.scopeSpans) collected.spans.push(...ss.spans)
            }
          }
          res.writeHead(code, { "content-type": type === "" ? "application/json" : type })
          res.end(type === "application/x-protobuf" ? "" : "{}")
        })
      })
      server.listen(0, "127.0.0.1", () =>
        resume(
          Effect.succeed({
            ...collected,
            url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`,
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

  it.live(
    "exports over http/protobuf by default, to the generic endpoint's /v1/traces: the request's span tree decodes",
    () =>
      Effect.gen(function* () {
        const c = yield* exportedWith(
          (url) => ({ OTEL_EXPORTER_OTLP_ENDPOINT: url.replace(/\/v1\/traces$/, "") }),
          (gateway) => askWith(gateway)
        )
        const traces = c.exports.filter((e) => e.path === "/v1/traces")
        expect(traces.length).toBeGreaterThan(0)
        for (const sent of traces) expect(sent.type).toBe("application/x-protobuf")
        expect(c.resources[0]).toMatchObject({ "service.name": "sluice", "service.version": "0.1.0" })
        const named = (name: string) => c.spans.filter((s) => s.name === name)
        const [server] = named("http.server POST")
        const [route] = named("sluice.route")
        const [attempt] = named("sluice.attempt")
        const [call] = named("http.client POST")
        expect([server, route, attempt, call].every((s) => s !== undefined)).toBe(true)
        expect(server!.parentSpanId).toBe("")
        expect(route!.parentSpanId).toBe(server!.spanId)
        expect(attempt!.parentSpanId).toBe(route!.spanId)
        expect(call!.parentSpanId).toBe(attempt!.spanId)
        for (const name of ["sluice.route", "sluice.attempt", "http.client POST"])
          expect(tracesOf(c, name)).toEqual([server!.traceId])
        expect(route!.attributes.find((a) => a.key === "sluice.pool")?.value).toEqual({ stringValue: "chat" })
        expect(route!.attributes.find((a) => a.key === "sluice.decision.candidates")?.value).toEqual({
          arrayValue: { values: [{ stringValue: "a" }] }
        })
      }).pipe(Effect.scoped)
  )

  it.live(
    "exports no span with OTEL_TRACES_SAMPLER=always_off, not even of a caller's sampled trace, which parentbased_always_off follows",
    () =>
      Effect.gen(function* () {
        const both = (gateway: Gateway) => Effect.zipRight(askWith(gateway), askWith(gateway, `00-${LOW}-${PARENT}-01`))
        const off = yield* exportedWith(json({ OTEL_TRACES_SAMPLER: "always_off" }), both)
        expect(off.spans).toEqual([])
        // The same requests under parentbased_always_off: the caller's sampled trace only.
        const followed = yield* exportedWith(json({ OTEL_TRACES_SAMPLER: "parentbased_always_off" }), both)
        expect(tracesOf(followed, "http.server POST")).toEqual([LOW])
        expect(tracesOf(followed, "sluice.route")).toEqual([LOW])
      }).pipe(Effect.scoped)
  )

  it.live(
    "samples by trace id with OTEL_TRACES_SAMPLER=traceidratio at OTEL_TRACES_SAMPLER_ARG, whatever the caller sampled",
    () =>
      Effect.gen(function* () {
        const c = yield* exportedWith(
          json({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.5" }),
          (gateway) =>
            Effect.zipRight(
              // Below the half-way mark: sampled, though its caller did not sample it.
              askWith(gateway, `00-${LOW}-${PARENT}-00`),
              // Above it: dropped, though its caller sampled it (at the default ratio 1 it would be kept).
              askWith(gateway, `00-${HIGH}-${PARENT}-01`)
            )
        )
        expect(tracesOf(c, "http.server POST")).toEqual([LOW])
        expect(tracesOf(c, "sluice.route")).toEqual([LOW])
      }).pipe(Effect.scoped)
  )
})

type Gateway = Effect.Effect.Success<ReturnType<typeof startGateway>>

/**
 * Trace ids on either side of a 0.5 ratio: OpenTelemetry's ratio sampler keeps a trace when the XOR of
 * its id's four 32-bit words is below `ratio × 0xffffffff`.
 */
const LOW = "0000000000000000000000000000000a"
const HIGH = "f0000000000000000000000000000000"
const PARENT = "00f067aa0ba902b7"

/**
 * The trace ids of the spans named `name` the collector got, in order (a request's own spans, not
 * the simulated upstreams' start-up, a root trace of its own sampled like any).
 */
const tracesOf = (c: Collected, name: string) => c.spans.filter((s) => s.name === name).map((s) => s.traceId)

/** One chat request, sent with `traceparent` when given. */
const askWith = (gateway: Gateway, traceparent?: string) =>
  Effect.promise(() =>
    gateway.client.chat.completions.create(
      { model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] },
      traceparent === undefined ? {} : { headers: { traceparent } }
    )
  )

/** The environment exporting traces as OTLP/JSON to the collector at `url`, with `extra`. */
const json = (extra: Record<string, string>) => (url: string) => ({
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: url,
  OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
  ...extra
})

/**
 * What a fresh collector received from a gateway exporting with the environment `env` gives for its
 * URL, after `requests` ran and the gateway stopped (stopping flushes every span it still held).
 */
const exportedWith = (
  env: (url: string) => Record<string, string>,
  requests: (gateway: Gateway) => Effect.Effect<unknown>
) =>
  Effect.gen(function* () {
    const c = yield* collector(() => 200)
    yield* Effect.scoped(
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          simulatedConfig([{ id: "a" }], [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["a"] }]),
          { telemetry: Telemetry.layerConfig(), env: { OTEL_BSP_SCHEDULE_DELAY: "10", ...env(c.url) } }
        )
        yield* requests(gateway)
      })
    )
    return c
  })
