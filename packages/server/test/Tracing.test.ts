import { describe, expect, it } from "@effect/vitest"
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base"
import { Effect } from "effect"
import * as Telemetry from "../src/Telemetry.js"
import { simulatedConfig, startGateway } from "./harness.js"

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
          { id: "good", simulate: { completionTokens: 3 } }
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
        "gen_ai.usage.output_tokens": 3
      })
      // Effect's OpenTelemetry bridge writes array attributes as JSON text.
      const list = (key: string) => JSON.parse(String(route!.attributes[key])) as ReadonlyArray<string>
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
      for (const a of attempts) {
        const calls = childrenOf(spans, a)
        expect(calls.map((c) => c.name)).toEqual(["http.client POST"])
        expect(calls[0]?.attributes["url.full"]).toMatch(/\/v1\/chat\/completions$/)
      }
      expect(attempts[0]?.status.code).toBe(2) // ERROR: the 500
      expect(childrenOf(spans, attempts[0]!)[0]?.attributes["http.response.status_code"]).toBe(500)
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
})
