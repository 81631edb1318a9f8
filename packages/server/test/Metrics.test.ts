import { describe, expect, it } from "@effect/vitest"
import { Config } from "@sluice/core"
import { Effect, Fiber, Schema } from "effect"
import OpenAI from "openai"
import type { ServerResponse } from "node:http"
import { createServer } from "node:http"
import { createRequire } from "node:module"
import type { AddressInfo } from "node:net"
import { completionJson, eventually, simulatedConfig, startGateway, startUpstream } from "./harness.js"

type Gateway = Effect.Effect.Success<ReturnType<typeof startGateway>>

/** `GET /metrics`: status and the samples by `name{labels}` (labels as written). */
const scrape = (gateway: Gateway, token?: string) =>
  Effect.promise(async () => {
    const response = await fetch(`${gateway.url}/metrics`, {
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` }
    })
    const text = await response.text()
    const samples = new Map<string, number>()
    for (const line of text.split("\n"))
      if (line !== "" && !line.startsWith("#")) {
        const space = line.lastIndexOf(" ")
        samples.set(line.slice(0, space), Number(line.slice(space + 1)))
      }
    return { status: response.status, type: response.headers.get("content-type"), text, samples }
  })

/** Scrapes every 10 ms for up to 3 s until the samples satisfy `done`; those samples. */
const scrapeUntil = (gateway: Gateway, done: (samples: ReadonlyMap<string, number>) => boolean) =>
  Effect.gen(function* () {
    for (let i = 0; i < 300; i++) {
      const { samples } = yield* scrape(gateway)
      if (done(samples)) return samples
      yield* Effect.sleep("10 millis")
    }
    return yield* Effect.dieMessage("the metrics never showed what was awaited")
  })

const chat = (gateway: Gateway, model: string, user?: string) =>
  Effect.promise(() =>
    gateway.client.chat.completions
      .create({ model, messages: [{ role: "user", content: "Hi" }], ...(user === undefined ? {} : { user }) })
      .then(
        () => "ok",
        () => "error"
      )
  )

/** `a` answers 10 tokens at $1 per thousand output tokens; `broken` always fails and falls back to `chat`. */
const config = () =>
  simulatedConfig(
    [
      { id: "a", simulate: { completionTokens: 10 }, pricing: { inputPerMillion: 0, outputPerMillion: 1000 } },
      { id: "broken", simulate: { failureRate: 1 } }
    ],
    [
      { id: "chat", models: ["gpt-4o-mini", "sim-*"], upstreams: ["a"] },
      { id: "flaky", models: ["flaky-model"], upstreams: ["broken"], fallback: "chat" }
    ]
  )

describe("GET /metrics", () => {
  it.live("counts known traffic exactly: requests, attempts, fallbacks, tokens, spend, GenAI duration", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(config())
      for (let i = 0; i < 3; i++) expect(yield* chat(gateway, "gpt-4o-mini")).toBe("ok")
      expect(yield* chat(gateway, "flaky-model")).toBe("ok")
      const { status, type, samples } = yield* scrape(gateway)
      expect(status).toBe(200)
      expect(type).toMatch(/^text\/plain; version=0\.0\.4/)
      expect(samples.get('sluice_requests_total{pool="chat",upstream="a",outcome="success"}')).toBe(4)
      expect(samples.get('sluice_attempts_total{pool="chat",upstream="a",outcome="success"}')).toBe(4)
      expect(samples.get('sluice_attempts_total{pool="flaky",upstream="broken",outcome="failure"}')).toBe(1)
      expect(samples.get('sluice_fallbacks_total{pool="flaky",fallback="chat"}')).toBe(1)
      expect(samples.get('sluice_retries_total{pool="chat"}')).toBe(1)
      const model = 'gen_ai_operation_name="chat",gen_ai_provider_name="simulated",gen_ai_request_model="gpt-4o-mini"'
      expect(samples.get(`gen_ai_client_token_usage_count{${model},gen_ai_token_type="output"}`)).toBe(3)
      expect(samples.get(`gen_ai_client_token_usage_sum{${model},gen_ai_token_type="output"}`)).toBe(30)
      expect(samples.get(`gen_ai_client_token_usage_bucket{${model},gen_ai_token_type="output",le="16"}`)).toBe(3)
      expect(samples.get(`gen_ai_client_token_usage_bucket{${model},gen_ai_token_type="output",le="4"}`)).toBe(0)
      expect(samples.get(`gen_ai_client_operation_duration_seconds_count{${model},error_type=""}`)).toBe(3)
      expect(samples.get(`gen_ai_client_operation_duration_seconds_bucket{${model},error_type="",le="+Inf"}`)).toBe(3)
      expect(samples.get("sluice_gateway_overhead_seconds_count")).toBe(4)
      // 4 answers of 10 output tokens at $1 per thousand.
      expect(samples.get('sluice_spend_usd_total{pool="chat",upstream="a",key="anonymous"}')).toBeCloseTo(0.04, 10)
      // Gauges read when scraped.
      expect(samples.get('sluice_breaker_state{upstream="a",state="closed"}')).toBe(1)
      expect(samples.get('sluice_upstream_healthy{upstream="a"}')).toBe(1)
      expect(samples.get('sluice_in_flight{upstream="a"}')).toBe(0)
      expect(samples.get('sluice_queue_depth{pool="chat"}')).toBe(0)
    }).pipe(Effect.scoped)
  )

  it.live("times the first chunk of streamed answers", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(config())
      for (let i = 0; i < 2; i++)
        yield* Effect.promise(async () => {
          const stream = await gateway.client.chat.completions.create({
            model: "gpt-4o-mini",
            messages: [{ role: "user", content: "Hi" }],
            stream: true
          })
          for await (const _ of stream) void _
        })
      yield* chat(gateway, "gpt-4o-mini")
      const { samples } = yield* scrape(gateway)
      const labels = 'gen_ai_operation_name="chat",gen_ai_provider_name="simulated",gen_ai_request_model="gpt-4o-mini"'
      // Two streams: two first chunks; the whole answer has none.
      expect(samples.get(`gen_ai_client_operation_time_to_first_chunk_seconds_count{${labels}}`)).toBe(2)
      expect(samples.get(`gen_ai_client_operation_duration_seconds_count{${labels},error_type=""}`)).toBe(3)
    }).pipe(Effect.scoped)
  )

  it.live("counts breaker transitions and shows the open state", () =>
    Effect.gen(function* () {
      // An upstream id of this test's own: transitions are counted in Effect's global registry.
      const gateway = yield* startGateway(
        simulatedConfig(
          [
            {
              id: "metrics-tripping",
              simulate: { failureRate: 1 },
              circuitBreaker: { failureThreshold: 2, recoveryMs: 600_000, windowMs: 60_000 }
            },
            { id: "metrics-steady" }
          ],
          [
            {
              id: "chat",
              models: ["gpt-4o-mini"],
              upstreams: ["metrics-tripping", "metrics-steady"],
              strategy: "round-robin"
            }
          ]
        )
      )
      for (let i = 0; i < 6; i++) expect(yield* chat(gateway, "gpt-4o-mini")).toBe("ok")
      const { samples, text } = yield* scrape(gateway)
      expect(samples.get('sluice_circuit_breaker_transitions_total{upstream="metrics-tripping",state="open"}')).toBe(1)
      expect(samples.get('sluice_breaker_state{upstream="metrics-tripping",state="open"}')).toBe(1)
      expect(samples.get('sluice_breaker_state{upstream="metrics-tripping",state="closed"}')).toBe(0)
      expect(
        samples.get('sluice_exclusions_total{pool="chat",upstream="metrics-tripping",stage="circuit-breaker"}')
      ).toBeGreaterThan(0)
      expect(text).toContain("# TYPE sluice_circuit_breaker_transitions_total counter")
    }).pipe(Effect.scoped)
  )

  it.live(
    "keeps the series count when 1,000 distinct models and users are requested",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(config())
        // Every kind of answer once: a served wildcard model, an unknown model (404), a known one.
        yield* chat(gateway, "sim-0", "user-0")
        yield* chat(gateway, "unknown-0", "user-0")
        yield* chat(gateway, "gpt-4o-mini", "user-0")
        const before = (yield* scrape(gateway)).samples.size
        for (let batch = 0; batch < 20; batch++)
          yield* Effect.forEach(
            Array.from({ length: 50 }, (_, i) => batch * 50 + i + 1),
            (i) => chat(gateway, i % 2 === 0 ? `sim-${i}` : `unknown-${i}`, `user-${i}`),
            { concurrency: 50 }
          )
        const after = yield* scrape(gateway)
        expect(after.samples.size).toBe(before)
        expect(after.samples.get('sluice_requests_total{pool="chat",upstream="a",outcome="success"}')).toBe(502)
        expect(after.text).not.toMatch(/sim-1|user-|unknown-/)
        expect(after.text).toContain('gen_ai_request_model="_other"')
      }).pipe(Effect.scoped),
    60_000
  )

  it.live("shows the requests waiting in a pool's queue, and counts each request's wait once", () =>
    Effect.gen(function* () {
      // An upstream that answers nothing until the test opens it: the gateway lets one request at a time in.
      const held: Array<ServerResponse> = []
      let open = false
      const answer = (response: ServerResponse) => {
        response.writeHead(200, { "content-type": "application/json" })
        response.end(completionJson(3, 1))
      }
      const upstream = yield* startUpstream((_request, _body, response) =>
        open ? answer(response) : void held.push(response)
      )
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "held", provider: "openai-compatible", baseUrl: upstream.baseUrl, limits: { maxConcurrency: 1 } }],
          [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["held"], queue: { maxSize: 10, maxWaitMs: 30_000 } }]
        )
      )
      expect((yield* scrape(gateway)).samples.get('sluice_queue_depth{pool="chat"}')).toBe(0)
      const answers = yield* Effect.fork(
        Effect.all(
          Array.from({ length: 4 }, () => chat(gateway, "gpt-4o-mini")),
          { concurrency: "unbounded" }
        )
      )
      // One request at the upstream, the three others waiting behind it.
      const waiting = yield* scrapeUntil(gateway, (s) => s.get('sluice_queue_depth{pool="chat"}') === 3)
      expect(held).toHaveLength(1)
      expect(waiting.get('sluice_in_flight{upstream="held"}')).toBe(1)
      // Nothing has left the queue yet: none of the three can have waited less than this.
      yield* Effect.sleep("400 millis")
      open = true
      for (const response of held.splice(0)) answer(response)
      expect(yield* Fiber.join(answers)).toEqual(["ok", "ok", "ok", "ok"])
      const { samples } = yield* scrape(gateway)
      expect(samples.get('sluice_queue_depth{pool="chat"}')).toBe(0)
      expect(samples.get('sluice_in_flight{upstream="held"}')).toBe(0)
      // Every request's wait is observed once: the first's (none) and the three that waited over 0.32 s.
      expect(samples.get('sluice_queue_wait_seconds_count{pool="chat"}')).toBe(4)
      expect(samples.get('sluice_queue_wait_seconds_bucket{pool="chat",le="0.01"}')).toBe(1)
      expect(samples.get('sluice_queue_wait_seconds_bucket{pool="chat",le="0.32"}')).toBe(1)
      expect(samples.get('sluice_queue_wait_seconds_bucket{pool="chat",le="+Inf"}')).toBe(4)
      expect(samples.get('sluice_queue_wait_seconds_sum{pool="chat"}')).toBeGreaterThan(3 * 0.4)
      expect(samples.get('sluice_requests_total{pool="chat",upstream="held",outcome="success"}')).toBe(4)
    }).pipe(Effect.scoped)
  )

  it.live("shows the requests and tokens left of an upstream's rpm and tpm after known traffic", () =>
    Effect.gen(function* () {
      // 30 prompt and 10 completion tokens per answer, whatever is asked.
      const upstream = yield* startUpstream((_request, _body, response) => {
        response.writeHead(200, { "content-type": "application/json" })
        response.end(completionJson(30, 10))
      })
      const gateway = yield* startGateway(
        simulatedConfig(
          [
            {
              id: "budgeted",
              provider: "openai-compatible",
              baseUrl: upstream.baseUrl,
              limits: { rpm: 5, tpm: 1000 }
            },
            { id: "unlimited" }
          ],
          [
            { id: "chat", models: ["gpt-4o-mini"], upstreams: ["budgeted"] },
            { id: "other", models: ["other"], upstreams: ["unlimited"] }
          ]
        )
      )
      const before = (yield* scrape(gateway)).samples
      expect(before.get('sluice_budget_requests_left{upstream="budgeted"}')).toBe(5)
      expect(before.get('sluice_budget_tokens_left{upstream="budgeted"}')).toBe(1000)
      for (let i = 0; i < 3; i++)
        yield* Effect.promise(() =>
          gateway.client.chat.completions.create({
            model: "gpt-4o-mini",
            messages: [{ role: "user", content: "Hi" }],
            max_tokens: 10
          })
        )
      const { samples, text } = yield* scrape(gateway)
      // 3 of 5 requests and 3 × 40 tokens of 1,000 used (each reservation corrected to the usage reported).
      expect(samples.get('sluice_budget_requests_left{upstream="budgeted"}')).toBe(2)
      expect(samples.get('sluice_budget_tokens_left{upstream="budgeted"}')).toBe(880)
      // An upstream without limits has no budget to show.
      expect(text).not.toContain('sluice_budget_requests_left{upstream="unlimited"}')
      expect(text).not.toContain('sluice_budget_tokens_left{upstream="unlimited"}')
    }).pipe(Effect.scoped)
  )

  it.live("shows the holds learned from an upstream's rate-limit headers and from its 429's Retry-After", () =>
    Effect.gen(function* () {
      // Each allows 2 requests a minute, which Sluice only learns from their answers' headers.
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "reported", simulate: { rpm: 2 } }, { id: "refusing", simulate: { rpm: 2 } }, { id: "spare" }],
          [
            { id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["reported", "spare"] },
            { id: "other", models: ["other"], strategy: "priority", upstreams: ["refusing", "spare"] }
          ]
        )
      )
      const holds = (samples: ReadonlyMap<string, number>) =>
        ["reported", "refusing", "spare"].map((u) => samples.get(`sluice_learned_hold{upstream="${u}"}`))
      expect(holds((yield* scrape(gateway)).samples)).toEqual([0, 0, 0])
      // "reported" answers twice, the second time with "0 requests remaining, resets in about 60 s".
      for (let i = 0; i < 2; i++) expect(yield* chat(gateway, "gpt-4o-mini")).toBe("ok")
      // "refusing" has its budget spent behind the gateway's back: its 429 names the wait.
      const direct = new OpenAI({
        baseURL: `${gateway.simulator("refusing").url}/v1`,
        apiKey: "sk-direct",
        maxRetries: 0
      })
      for (let i = 0; i < 2; i++)
        yield* Effect.promise(() =>
          direct.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
        )
      expect(yield* chat(gateway, "other")).toBe("ok")
      expect(gateway.simulator("refusing").stats()).toMatchObject({ rateLimited: 1 })
      expect(holds((yield* scrape(gateway)).samples)).toEqual([1, 1, 0])
    }).pipe(Effect.scoped)
  )

  it.live("is behind the admin token when server.admin is set", () =>
    Effect.gen(function* () {
      const base = config()
      const gateway = yield* startGateway(
        {
          ...base,
          server: Schema.decodeUnknownSync(Config.ServerConfig)({ admin: { tokenEnv: "SLUICE_TEST_ADMIN_TOKEN" } })
        },
        { env: { SLUICE_TEST_ADMIN_TOKEN: "adm-token-0123456789abcdef" } }
      )
      expect((yield* scrape(gateway)).status).toBe(401)
      expect((yield* scrape(gateway, "not-the-token")).status).toBe(403)
      const allowed = yield* scrape(gateway, "adm-token-0123456789abcdef")
      expect(allowed.status).toBe(200)
      expect(allowed.text).toContain("# TYPE sluice_breaker_state gauge")
    }).pipe(Effect.scoped)
  )

  it.live("needs a client key on a keyed gateway other machines can reach without server.admin", () =>
    Effect.gen(function* () {
      const key = "sk-team-0123456789abcdef"
      const keyed = {
        ...config(),
        server: Schema.decodeUnknownSync(Config.ServerConfig)({
          auth: { keys: [{ name: "team", keyEnv: "SLUICE_TEST_TEAM_KEY" }] }
        })
      }
      const env = { SLUICE_TEST_TEAM_KEY: key }
      const reachable = yield* startGateway(keyed, { env, host: "0.0.0.0" })
      const none = yield* scrape(reachable)
      expect(none.status).toBe(401)
      expect(none.text).not.toContain("team")
      expect((yield* scrape(reachable, "sk-not-a-key-0123456789")).status).toBe(401)
      const allowed = yield* scrape(reachable, key)
      expect(allowed.status).toBe(200)
      expect(allowed.text).toContain("# TYPE sluice_breaker_state gauge")
      // On loopback it stays open, as the rest of the gateway's own pages.
      const local = yield* startGateway(keyed, { env })
      expect((yield* scrape(local)).status).toBe(200)
    }).pipe(Effect.scoped)
  )
})

/** A point of an OTLP/JSON metric as the assertions read it. */
interface Point {
  readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: { readonly stringValue: string } }>
  readonly asDouble?: number
  readonly count?: number
  readonly bucketCounts?: ReadonlyArray<number>
  readonly explicitBounds?: ReadonlyArray<number>
}

/**
 * A fake OTLP collector: every request's path, content type and body (parsed when JSON); it answers
 * `state.status`.
 */
const collector = Effect.gen(function* () {
  const received: Array<{ path: string; type: string; apiKey: unknown; body: unknown }> = []
  const state = { status: 200 }
  const { baseUrl } = yield* startUpstream((request, body, response) => {
    const type = request.headers["content-type"] ?? ""
    const apiKey = request.headers["x-api-key"]
    received.push({
      path: request.url ?? "",
      type,
      apiKey,
      body: type === "application/json" ? JSON.parse(body) : body
    })
    response.writeHead(state.status, { "content-type": "application/json" })
    response.end("{}")
  })
  return { origin: baseUrl.replace(/\/v1$/, ""), received, state }
})

/** The points of the metric `name` in an OTLP/JSON document, whatever its kind. */
const points = (document: unknown, name: string): ReadonlyArray<Point> => {
  const metrics = (
    document as { resourceMetrics: Array<{ scopeMetrics: Array<{ metrics: Array<Record<string, unknown>> }> }> }
  ).resourceMetrics.flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics))
  const metric = metrics.find((m) => m["name"] === name) as
    | {
        sum?: { dataPoints: Array<Point> }
        histogram?: { dataPoints: Array<Point> }
        gauge?: { dataPoints: Array<Point> }
      }
    | undefined
  return metric?.sum?.dataPoints ?? metric?.histogram?.dataPoints ?? metric?.gauge?.dataPoints ?? []
}

/** The point whose attributes are exactly `labels`. */
const at = (list: ReadonlyArray<Point>, labels: Record<string, string>) =>
  list.find(
    (p) =>
      p.attributes.length === Object.keys(labels).length &&
      p.attributes.every((a) => labels[a.key] === a.value.stringValue)
  )

/** The decoder of an OTLP metrics export, generated from opentelemetry-proto by OpenTelemetry JS. */
interface ProtoMessage {
  readonly decode: (bytes: Uint8Array) => unknown
  readonly toObject: (message: unknown, options: Record<string, unknown>) => Record<string, unknown>
}
const ExportMetricsServiceRequest = (
  createRequire(import.meta.url)("@opentelemetry/otlp-transformer/build/src/generated/root.js") as {
    opentelemetry: { proto: { collector: { metrics: { v1: { ExportMetricsServiceRequest: ProtoMessage } } } } }
  }
).opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest

/** An OTLP protobuf metrics export in its OTLP/JSON shape (64-bit integers as numbers, enums as numbers). */
const decodeMetrics = (bytes: Uint8Array) =>
  ExportMetricsServiceRequest.toObject(ExportMetricsServiceRequest.decode(bytes), { longs: Number, arrays: true })

/** A fake OTLP collector keeping each request's path, content type and raw body. */
const protobufCollector = Effect.gen(function* () {
  const received: Array<{ path: string; type: string; body: Uint8Array }> = []
  const server = createServer((request, response) => {
    const chunks: Array<Buffer> = []
    request.on("data", (chunk: Buffer) => chunks.push(chunk))
    request.on("end", () => {
      received.push({
        path: request.url ?? "",
        type: request.headers["content-type"] ?? "",
        body: Buffer.concat(chunks)
      })
      response.writeHead(200, { "content-type": "application/x-protobuf" })
      response.end()
    })
  })
  yield* Effect.acquireRelease(
    Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
    () =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
        server.closeAllConnections()
      })
  )
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/metrics`, received }
})

describe("metrics over OTLP", () => {
  it.live(
    "sends protobuf that decodes with OpenTelemetry's own proto definitions: the metric names and the counts of known traffic",
    () =>
      Effect.gen(function* () {
        const c = yield* protobufCollector
        const gateway = yield* startGateway(config(), {
          env: {
            OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: c.url,
            OTEL_SERVICE_NAME: "sluice-protobuf-test",
            OTEL_METRIC_EXPORT_INTERVAL: "20"
          }
        })
        for (let i = 0; i < 3; i++) expect(yield* chat(gateway, "gpt-4o-mini")).toBe("ok")
        expect(yield* chat(gateway, "flaky-model")).toBe("ok")
        // The first export after the fourth answer counts all four.
        const sent = yield* eventually(() => {
          const last = c.received.at(-1)
          if (last === undefined) return undefined
          const document = decodeMetrics(last.body)
          return at(points(document, "sluice.requests"), REQUESTS)?.asDouble === 4 ? { ...last, document } : undefined
        })
        expect(sent.type).toBe("application/x-protobuf")
        const { document } = sent
        const resource = (document as { resourceMetrics: Array<{ resource: { attributes: Point["attributes"] } }> })
          .resourceMetrics[0]!.resource.attributes
        expect(Object.fromEntries(resource.map((a) => [a.key, a.value.stringValue]))).toMatchObject({
          "service.name": "sluice-protobuf-test",
          "service.version": "0.1.0"
        })
        const names = (
          document as { resourceMetrics: Array<{ scopeMetrics: Array<{ metrics: Array<{ name: string }> }> }> }
        ).resourceMetrics.flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics.map((m) => m.name)))
        expect(names).toEqual(
          expect.arrayContaining([
            "sluice.requests",
            "sluice.attempts",
            "sluice.fallbacks",
            "sluice.queue.depth",
            "sluice.breaker.state",
            "gen_ai.client.token.usage",
            "gen_ai.client.operation.duration"
          ])
        )
        expect(new Set(names).size).toBe(names.length)
        // Counters: the failed attempt and the fallback it caused, once each.
        expect(
          at(points(document, "sluice.attempts"), { pool: "flaky", upstream: "broken", outcome: "failure" })?.asDouble
        ).toBe(1)
        expect(at(points(document, "sluice.fallbacks"), { pool: "flaky", fallback: "chat" })?.asDouble).toBe(1)
        // A histogram: four answers of 10 output tokens, all in the bucket above 4 and up to 16.
        const usage = at(points(document, "gen_ai.client.token.usage"), {
          "gen_ai.operation.name": "chat",
          "gen_ai.provider.name": "simulated",
          "gen_ai.request.model": "gpt-4o-mini",
          "gen_ai.token.type": "output"
        })
        expect(usage?.count).toBe(3)
        expect(usage?.explicitBounds?.slice(0, 3)).toEqual([1, 4, 16])
        expect(usage?.bucketCounts?.slice(0, 4)).toEqual([0, 0, 3, 0])
      }).pipe(Effect.scoped)
  )

  it.live("sends what /metrics shows to the collector OTEL_EXPORTER_OTLP_ENDPOINT names, every interval", () =>
    Effect.gen(function* () {
      const c = yield* collector
      const gateway = yield* startGateway(config(), {
        env: {
          OTEL_EXPORTER_OTLP_ENDPOINT: c.origin,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
          OTEL_SERVICE_NAME: "sluice-metrics-test",
          OTEL_METRIC_EXPORT_INTERVAL: "20"
        }
      })
      for (let i = 0; i < 3; i++) expect(yield* chat(gateway, "gpt-4o-mini")).toBe("ok")
      // The first export after the third answer counts all three.
      const document = yield* eventually(() => {
        const last = c.received.at(-1)
        const requests = last === undefined ? undefined : at(points(last.body, "sluice.requests"), REQUESTS)
        return requests?.asDouble === 3 ? last : undefined
      })
      expect(document.path).toBe("/v1/metrics")
      const resource = (
        document.body as { resourceMetrics: Array<{ resource: { attributes: Array<Point["attributes"][0]> } }> }
      ).resourceMetrics[0]!.resource.attributes
      expect(Object.fromEntries(resource.map((a) => [a.key, a.value.stringValue]))).toMatchObject({
        "service.name": "sluice-metrics-test",
        "service.version": "0.1.0"
      })
      const usage = at(points(document.body, "gen_ai.client.token.usage"), {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "simulated",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.token.type": "output"
      })
      // Three answers of 10 tokens, all in the bucket above 4 and up to 16.
      expect(usage?.count).toBe(3)
      expect(usage?.explicitBounds?.slice(0, 3)).toEqual([1, 4, 16])
      expect(usage?.bucketCounts?.slice(0, 4)).toEqual([0, 0, 3, 0])
      expect(
        at(points(document.body, "sluice.spend.usd"), { pool: "chat", upstream: "a", key: "anonymous" })?.asDouble
      ).toBeCloseTo(0.03, 10)
      expect(at(points(document.body, "sluice.breaker.state"), { upstream: "a", state: "closed" })?.asDouble).toBe(1)
      expect(at(points(document.body, "sluice.queue.depth"), { pool: "chat" })?.asDouble).toBe(0)
    }).pipe(Effect.scoped)
  )

  it.live("sends protobuf by default, to the metrics endpoint as given, with the headers the environment sets", () =>
    Effect.gen(function* () {
      const c = yield* collector
      yield* startGateway(config(), {
        env: {
          OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `${c.origin}/otlp/metrics`,
          OTEL_EXPORTER_OTLP_HEADERS: "x-api-key=collector-secret",
          OTEL_METRIC_EXPORT_INTERVAL: "20"
        }
      })
      const first = yield* eventually(() => c.received[0])
      expect(first.path).toBe("/otlp/metrics")
      expect(first.type).toBe("application/x-protobuf")
      // A hosted collector's key, as OTEL_EXPORTER_OTLP_HEADERS gives it.
      expect(first.apiKey).toBe("collector-secret")
    }).pipe(Effect.scoped)
  )

  it.live("logs a collector that refuses the metrics once, and once more when it takes them again", () =>
    Effect.gen(function* () {
      const c = yield* collector
      c.state.status = 503
      const logs: Array<string> = []
      yield* startGateway(config(), {
        logs,
        env: { OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `${c.origin}/v1/metrics`, OTEL_METRIC_EXPORT_INTERVAL: "10" }
      })
      const refused = () => logs.filter((l) => l.includes("metrics cannot be exported"))
      yield* eventually(() => (c.received.length >= 5 ? true : undefined))
      expect(refused()).toHaveLength(1)
      expect(refused()[0]).toContain("HTTP 503")
      c.state.status = 200
      yield* eventually(() => (logs.some((l) => l.includes("metrics are exported again")) ? true : undefined))
      expect(refused()).toHaveLength(1)
    }).pipe(Effect.scoped)
  )
})

const REQUESTS = { pool: "chat", upstream: "a", outcome: "success" }
