import { describe, expect, it } from "@effect/vitest"
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base"
import { Config, Health } from "@sluice/core"
import { Effect, Schema } from "effect"
import * as Telemetry from "../src/Telemetry.js"
import { eventually, simulatedConfig, startGateway } from "./harness.js"

const childrenOf = (spans: ReadonlyArray<ReadableSpan>, parent: ReadableSpan) =>
  spans.filter((s) => s.parentSpanContext?.spanId === parent.spanContext().spanId)

describe("decision tracing", () => {
  it.live("records a span tree server → route → attempts → upstream call with the decision's attributes", () =>
    Effect.gen(function* () {
      const exporter = new InMemorySpanExporter()
      const config = simulatedConfig(
        [
          { id: "off", enabled: false },
          { id: "small", contextWindow: 10 },
          { id: "broken", simulate: { failureRate: 1 } },
          // It answers with the dated model it is asked for: the route tells both.
          { id: "good", model: "gpt-4o-mini-2024-07-18", simulate: { completionTokens: 3 } }
        ],
        [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["off", "small", "broken", "good"] }]
      )
      const { client } = yield* startGateway(config, { telemetry: Telemetry.layerExporter(exporter) })
      yield* Effect.promise(() =>
        client.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: "Tell me a long story about tracing please" }]
        })
      )
      const spans = exporter.getFinishedSpans()
      const route = spans.find((s) => s.name === "sluice.route")
      expect(route).toBeDefined()
      const server = spans.find((s) => s.spanContext().spanId === route!.parentSpanContext?.spanId)
      expect(server?.name).toMatch(/^http\.server POST/)
      expect(route!.attributes).toMatchObject({
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "sluice.pool": "chat",
        "sluice.strategy": "priority",
        "sluice.upstream": "good",
        "sluice.attempts": 2,
        "sluice.outcome": "success",
        "gen_ai.usage.output_tokens": 3,
        "gen_ai.provider.name": "simulated",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18"
      })
      // List attributes are exported as arrays, not as JSON text.
      const list = (key: string) => route!.attributes[key] as ReadonlyArray<string>
      expect(Array.isArray(route!.attributes["sluice.pools"])).toBe(true)
      expect(list("sluice.decision.candidates")).toEqual(["broken", "good"])
      const excluded = list("sluice.decision.excluded")
      expect(excluded).toContain("off: config: disabled in config")
      expect(excluded.some((e) => /^small: context-window: needs \d+ tokens, context window is 10$/.test(e))).toBe(true)
      expect(route!.attributes["sluice.tokens.prompt"]).toBeGreaterThan(0)
      expect(route!.attributes["gen_ai.usage.input_tokens"]).toBeGreaterThan(0)
      const attempts = childrenOf(spans, route!).filter((s) => s.name === "sluice.attempt")
      expect(attempts.map((a) => [a.attributes["sluice.attempt"], a.attributes["sluice.upstream"]])).toEqual([
        [1, "broken"],
        [2, "good"]
      ])
      expect(attempts.map((a) => a.attributes["gen_ai.response.model"])).toEqual([undefined, "gpt-4o-mini-2024-07-18"])
      for (const a of attempts) {
        const calls = childrenOf(spans, a)
        expect(calls.map((c) => c.name)).toEqual(["http.client POST"])
        expect(calls[0]?.attributes["url.full"]).toMatch(/\/v1\/chat\/completions$/)
      }
      expect(attempts[0]?.status.code).toBe(2) // ERROR: the 500
      expect(childrenOf(spans, attempts[0]!)[0]?.attributes["http.response.status_code"]).toBe(500)
    }).pipe(Effect.scoped)
  )

  it.live("keeps a stream's route and attempt spans open until the stream ends, with its usage and outcome", () =>
    Effect.gen(function* () {
      const exporter = new InMemorySpanExporter()
      const config = simulatedConfig(
        [
          { id: "broken", simulate: { failureRate: 1 } },
          { id: "good", simulate: { completionTokens: 4 } }
        ],
        [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["broken", "good"] }]
      )
      const { client } = yield* startGateway(config, { telemetry: Telemetry.layerExporter(exporter) })
      const text = yield* Effect.promise(async () => {
        const stream = await client.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: "Stream a story" }],
          stream: true
        })
        let out = ""
        for await (const chunk of stream) out += chunk.choices[0]?.delta.content ?? ""
        return out
      })
      expect(text).toBe("[good] lorem ipsum dolor")
      const spans = exporter.getFinishedSpans()
      const route = spans.find((s) => s.name === "sluice.route")
      expect(route?.attributes).toMatchObject({
        "sluice.stream": true,
        "sluice.upstream": "good",
        "sluice.attempts": 2,
        "sluice.outcome": "success",
        "gen_ai.usage.output_tokens": 4,
        "gen_ai.provider.name": "simulated",
        "gen_ai.response.model": "gpt-4o-mini"
      })
      expect(route?.status.code).not.toBe(2)
      const attempts = childrenOf(spans, route!).filter((s) => s.name === "sluice.attempt")
      expect(attempts.map((a) => [a.attributes["sluice.upstream"], a.attributes["sluice.attempt.outcome"]])).toEqual([
        ["broken", "failure"],
        ["good", "success"]
      ])
      expect(attempts[1]?.attributes["gen_ai.response.model"]).toBe("gpt-4o-mini")
      // The successful attempt ended with the stream, after its upstream call had answered.
      const call = childrenOf(spans, attempts[1]!)[0]!
      const endOf = (s: ReadableSpan) => s.endTime[0] * 1e9 + s.endTime[1]
      expect(endOf(attempts[1]!)).toBeGreaterThanOrEqual(endOf(call))
      expect(endOf(route!)).toBeGreaterThanOrEqual(endOf(attempts[1]!))
    }).pipe(Effect.scoped)
  )

  it.live("records a stream cut after its first chunk as an error on the route and attempt spans", () =>
    Effect.gen(function* () {
      const exporter = new InMemorySpanExporter()
      const config = simulatedConfig(
        [{ id: "cut", simulate: { midStreamCutRate: 1, completionTokens: 30 } }],
        [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["cut"] }]
      )
      const { client } = yield* startGateway(config, { telemetry: Telemetry.layerExporter(exporter) })
      const failure = yield* Effect.promise(async () => {
        const stream = await client.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: "Stream a story" }],
          stream: true
        })
        try {
          for await (const _ of stream) {
            // read to the end
          }
          return "completed"
        } catch (error) {
          return String(error)
        }
      })
      expect(failure).not.toBe("completed")
      const spans = exporter.getFinishedSpans()
      const route = spans.find((s) => s.name === "sluice.route")
      expect(route?.attributes).toMatchObject({
        "sluice.upstream": "cut",
        "sluice.attempts": 1,
        "sluice.outcome": "error"
      })
      expect(String(route?.attributes["sluice.error"])).toMatch(/broke off|without \[DONE\]/)
      expect(route?.status.code).toBe(2)
      const attempt = childrenOf(spans, route!).find((s) => s.name === "sluice.attempt")
      expect(attempt?.attributes["sluice.attempt.outcome"]).toBe("failure")
      expect(attempt?.status.code).toBe(2)
    }).pipe(Effect.scoped)
  )

  it.live("records a stream's time to first chunk on its route span, and none on a whole answer", () =>
    Effect.gen(function* () {
      const exporter = new InMemorySpanExporter()
      // The first chunk comes 50 ms after the upstream was asked, at the earliest.
      const config = simulatedConfig(
        [{ id: "a", simulate: { ttftMs: 50, completionTokens: 3 } }],
        [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["a"] }]
      )
      const { client } = yield* startGateway(config, { telemetry: Telemetry.layerExporter(exporter) })
      yield* Effect.promise(async () => {
        const stream = await client.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: "Hi" }],
          stream: true
        })
        for await (const _ of stream) {
          // read to the end
        }
      })
      yield* Effect.promise(() =>
        client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
      )
      const routes = exporter.getFinishedSpans().filter((s) => s.name === "sluice.route")
      expect(routes.map((r) => r.attributes["sluice.stream"])).toEqual([true, false])
      const [streamed, whole] = routes
      const firstChunk = streamed!.attributes["sluice.time_to_first_chunk_ms"]
      expect(typeof firstChunk).toBe("number")
      // Counted from routing to the first content, which the upstream held back for 50 ms.
      expect(firstChunk).toBeGreaterThanOrEqual(50)
      expect(whole!.attributes).not.toHaveProperty("sluice.time_to_first_chunk_ms")
    }).pipe(Effect.scoped)
  )

  it.live(
    "exports no request or response header as a span attribute: not of health checks, the admin API or upstream calls",
    () =>
      Effect.gen(function* () {
        const exporter = new InMemorySpanExporter()
        const token = "adm-token-0123456789abcdef"
        const config = simulatedConfig(
          [{ id: "a", healthCheck: { type: "http", intervalMs: 20 } }],
          [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["a"] }],
          { admin: { tokenEnv: "SLUICE_TEST_ADMIN" }, tracing: { healthChecks: 1 } }
        )
        const gateway = yield* startGateway(config, {
          telemetry: Telemetry.layerExporter(exporter, config.server.tracing),
          env: { SLUICE_TEST_ADMIN: token }
        })
        const status = yield* Effect.promise(() =>
          fetch(`${gateway.url}/admin/upstreams`, { headers: { authorization: `Bearer ${token}` } })
        )
        expect(status.status).toBe(200)
        yield* Effect.promise(() =>
          gateway.client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
        )
        const health = gateway.service(Health.Health)
        yield* eventually(() => (Effect.runSync(health.status("a")).consecutiveSuccesses >= 3 ? true : undefined))
        const spans = exporter.getFinishedSpans()
        // Each is traced with its other HTTP attributes: a health check's GET, the admin API's
        // request, the upstream call.
        const check = spans.find((s) => s.name === "http.client GET")
        expect(check?.attributes).toMatchObject({ "http.request.method": "GET", "http.response.status_code": 200 })
        expect(String(check?.attributes["url.full"])).toMatch(/\/health$/)
        const admin = spans.find((s) => s.name === "http.server GET")
        expect(admin?.attributes).toMatchObject({ "url.path": "/admin/upstreams", "http.response.status_code": 200 })
        const call = spans.find((s) => s.name === "http.client POST")
        expect(call?.attributes).toMatchObject({ "http.request.method": "POST", "http.response.status_code": 200 })
        // No header of either direction, on these or any other span.
        const headers = spans.flatMap((s) =>
          Object.keys(s.attributes)
            .filter((k) => k.startsWith("http.request.header.") || k.startsWith("http.response.header."))
            .map((k) => `${s.name}: ${k}`)
        )
        expect(headers).toEqual([])
      }).pipe(Effect.scoped)
  )

  it.live(
    "traces health checks as root traces of their own at server.tracing.healthChecks: all at 1, some at 0.5, none by default",
    () =>
      Effect.gen(function* () {
        /** The root spans of health checks once `checks` have succeeded, and how many had by then. */
        const traced = (healthChecks: number | undefined, checks: number) =>
          Effect.gen(function* () {
            const exporter = new InMemorySpanExporter()
            const config = simulatedConfig(
              [{ id: "a", healthCheck: { type: "http", intervalMs: 10 } }],
              [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["a"] }],
              healthChecks === undefined ? {} : { tracing: { healthChecks } }
            )
            const gateway = yield* startGateway(config, {
              telemetry: Telemetry.layerExporter(exporter, config.server.tracing)
            })
            const health = gateway.service(Health.Health)
            const ran = yield* eventually(() => {
              const n = Effect.runSync(health.status("a")).consecutiveSuccesses
              return n >= checks ? n : undefined
            })
            const roots = exporter
              .getFinishedSpans()
              .filter((s) => s.parentSpanContext === undefined && s.name.startsWith("http.client"))
            return { roots, ran }
          }).pipe(Effect.scoped)
        const all = yield* traced(1, 3)
        // Each finished check is a trace (the last may still be ending when counted).
        expect(all.roots.length).toBeGreaterThanOrEqual(all.ran - 1)
        for (const check of all.roots) expect(String(check.attributes["url.full"])).toMatch(/\/health$/)
        // At 0.5, by trace id: of 40 checks, neither none nor all (each way a chance of 2^-40).
        const half = yield* traced(0.5, 40)
        expect(half.roots.length).toBeGreaterThan(0)
        expect(half.roots.length).toBeLessThan(half.ran - 1)
        expect((yield* traced(undefined, 3)).roots).toEqual([])
      }).pipe(Effect.scoped)
  )

  it.live("never puts an API key on a span", () =>
    Effect.gen(function* () {
      const exporter = new InMemorySpanExporter()
      process.env["SLUICE_TEST_SECRET_KEY"] = "sk-super-secret-value"
      const config = simulatedConfig(
        [{ id: "keyed", apiKeyEnv: "SLUICE_TEST_SECRET_KEY" }],
        [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["keyed"] }]
      )
      const gateway = yield* startGateway(config, { telemetry: Telemetry.layerExporter(exporter) })
      yield* Effect.promise(() =>
        gateway.client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
      )
      // The key did reach the upstream...
      expect(gateway.simulator("keyed").requests().at(-1)?.headers["authorization"]).toBe(
        "Bearer sk-super-secret-value"
      )
      // ...and appears nowhere in the trace.
      const dump = JSON.stringify(
        exporter.getFinishedSpans().map((s) => ({ name: s.name, attributes: s.attributes, events: s.events }))
      )
      expect(dump).not.toContain("sk-super-secret-value")
      delete process.env["SLUICE_TEST_SECRET_KEY"]
    }).pipe(Effect.scoped)
  )

  it.live("traces no readiness probe, /metrics scrape or admin status read: no root span but the server's", () =>
    Effect.gen(function* () {
      const token = "adm-token-0123456789abcdef"
      const config = simulatedConfig(
        [{ id: "a", limits: { rpm: 100 } }, { id: "b" }],
        [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["a", "b"] }]
      )
      const gateway = yield* startGateway(
        {
          ...config,
          server: Schema.decodeUnknownSync(Config.ServerConfig)({ admin: { tokenEnv: "SLUICE_TEST_ADMIN" } })
        },
        { env: { SLUICE_TEST_ADMIN: token } }
      )
      const get = (path: string) =>
        Effect.promise(() =>
          fetch(`${gateway.url}${path}`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.status)
        )
      // What starting the gateway traced (its simulators) is not the probes' doing.
      const before = gateway.spans().length
      for (let i = 0; i < 5; i++)
        for (const path of ["/health/ready", "/metrics", "/admin/upstreams"]) expect(yield* get(path)).toBe(200)
      const roots = gateway
        .spans()
        .slice(before)
        .filter((s) => s.parentSpanContext === undefined)
      expect(roots.filter((s) => !s.name.startsWith("http.server")).map((s) => s.name)).toEqual([])
    }).pipe(Effect.scoped)
  )
})
