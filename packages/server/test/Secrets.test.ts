/**
 * No secret — an upstream's key, a client key, the admin token — appears in any answer, log line,
 * span, metric or audit record, after a run that uses each of them (and fails with each on purpose).
 */
import { describe, expect, it } from "@effect/vitest"
import { Config } from "@sluice/core"
import { Effect, Metric, Schema } from "effect"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { eventually, simulatedConfig, startGateway } from "./harness.js"

const UPSTREAM_KEY = "sk-upstream-SECRET-0123456789"
const CLIENT_KEY = "sk-client-SECRET-0123456789"
const ADDED_KEY = "sk-added-SECRET-0123456789"
const ADMIN_TOKEN = "adm-SECRET-0123456789abcdef"
const secrets = [UPSTREAM_KEY, CLIENT_KEY, ADDED_KEY, ADMIN_TOKEN, "SECRET"]

const env = {
  SLUICE_TEST_UPSTREAM_KEY: UPSTREAM_KEY,
  SLUICE_TEST_CLIENT_KEY: CLIENT_KEY,
  SLUICE_TEST_ADMIN: ADMIN_TOKEN
}

describe("secrets", () => {
  it.live("never appear in answers, logs, spans, /metrics, the audit file, /admin/decisions or its live stream", () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(join(tmpdir(), "sluice-secrets-"))
      const auditPath = join(dir, "audit.jsonl")
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const base = simulatedConfig(
        [
          {
            id: "a",
            apiKeyEnv: "SLUICE_TEST_UPSTREAM_KEY",
            simulate: { completionTokens: 3 },
            pricing: { inputPerMillion: 1, outputPerMillion: 1 }
          },
          { id: "broken", apiKeyEnv: "SLUICE_TEST_UPSTREAM_KEY", simulate: { failureRate: 1 } }
        ],
        [
          { id: "chat", models: ["gpt-4o-mini"], upstreams: ["a"] },
          { id: "broken", models: ["broken"], upstreams: ["broken"] }
        ]
      )
      const config = {
        ...base,
        server: Schema.decodeUnknownSync(Config.ServerConfig)({
          admin: { tokenEnv: "SLUICE_TEST_ADMIN" },
          auth: { keys: [{ name: "team", keyEnv: "SLUICE_TEST_CLIENT_KEY", limits: { rpm: 4 } }] },
          audit: { sink: "file", path: auditPath, keep: 100 }
        })
      }
      const logs: Array<string> = []
      const gateway = yield* startGateway(config, { env, logs })
      const texts: Array<string> = []
      const call = (path: string, init: RequestInit = {}) =>
        Effect.promise(async () => {
          const response = await fetch(`${gateway.url}${path}`, init)
          texts.push(JSON.stringify([...response.headers]), await response.text())
          return response.status
        })
      const chat = (key: string, model = "gpt-4o-mini", stream = false) =>
        call("/v1/chat/completions", {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ model, stream, messages: [{ role: "user", content: "Hi" }] })
        })
      const admin = (method: string, path: string, token = ADMIN_TOKEN, body?: unknown) =>
        call(`/admin${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          ...(body === undefined ? {} : { body: JSON.stringify(body) })
        })

      // The live stream of decisions, open before any traffic so it carries every decision.
      const controller = new AbortController()
      yield* Effect.addFinalizer(() => Effect.sync(() => controller.abort()))
      const live = yield* Effect.promise(() =>
        fetch(`${gateway.url}/admin/decisions/stream`, {
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
          signal: controller.signal
        })
      )
      expect(live.status).toBe(200)
      let streamed = ""
      const reader = live.body!.getReader()
      const decoder = new TextDecoder()
      void (async () => {
        for (;;) {
          const { done, value } = await reader.read()
          if (done) return
          streamed += decoder.decode(value, { stream: true })
        }
      })().catch(() => {})
      yield* eventually(() => (streamed.includes("\n\n") ? true : undefined))

      expect(yield* chat(CLIENT_KEY)).toBe(200)
      expect(yield* chat(CLIENT_KEY, "gpt-4o-mini", true)).toBe(200)
      expect(yield* chat(CLIENT_KEY, "broken")).toBe(502)
      expect(yield* chat(`${CLIENT_KEY}x`)).toBe(401)
      expect(yield* chat(ADMIN_TOKEN)).toBe(401)
      expect(yield* chat(CLIENT_KEY)).toBe(200)
      expect(yield* chat(CLIENT_KEY)).toBe(429)
      expect(yield* admin("GET", "/config")).toBe(200)
      expect(yield* admin("GET", "/keys")).toBe(200)
      expect(yield* admin("GET", "/upstreams")).toBe(200)
      expect(yield* admin("POST", "/keys", ADMIN_TOKEN, { name: "added", key: ADDED_KEY })).toBe(201)
      expect(yield* chat(ADDED_KEY)).toBe(200)
      expect(yield* admin("GET", "/config", CLIENT_KEY)).toBe(403)
      expect(yield* admin("POST", "/keys", ADMIN_TOKEN, { name: "short", key: "sk-SECRET" })).toBe(400)

      // What an operator reads back: the admin query, the audit file, the live stream and /metrics.
      const recorded = yield* Effect.promise(async () => {
        const response = await fetch(`${gateway.url}/admin/decisions`, {
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` }
        })
        expect(response.status).toBe(200)
        return response.text()
      })
      const decisions = (JSON.parse(recorded) as ReadonlyArray<{ key?: string }>).length
      // Every answered chat request is a decision, the refused ones (401, 429) are not.
      expect(decisions).toBe(5)
      expect((JSON.parse(recorded) as ReadonlyArray<{ key?: string }>).map((e) => e.key)).toContain("added")
      const auditFile = yield* eventually(() => {
        const text = readFileSync(auditPath, "utf8")
        return text.split("\n").filter((l) => l !== "").length === decisions ? text : undefined
      })
      yield* eventually(() => (streamed.split("\n\ndata: ").length - 1 === decisions ? true : undefined))
      const scraped = yield* Effect.promise(async () => {
        const response = await fetch(`${gateway.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
        expect(response.status).toBe(200)
        return response.text()
      })
      // The key names are labels of /metrics: the keys were there to leak, by name only.
      expect(scraped).toContain('key="team"')
      expect(scraped).toContain('key="added"')

      const spans = JSON.stringify(
        gateway.spans().map((span) => ({ name: span.name, attributes: span.attributes, events: span.events }))
      )
      const metrics = JSON.stringify(Metric.unsafeSnapshot(), (_, value) =>
        typeof value === "bigint" ? String(value) : value
      )
      expect(gateway.spans().length).toBeGreaterThan(0)
      expect(logs.some((line) => line.includes("admin: key added added"))).toBe(true)
      for (const [where, text] of [
        ["answers", texts.join("\n")],
        ["logs", logs.join("\n")],
        ["spans", spans],
        ["/metrics", scraped],
        ["Effect's metric registry", metrics],
        ["audit file", auditFile],
        ["/admin/decisions", recorded],
        ["/admin/decisions/stream", streamed]
      ] as const)
        for (const secret of secrets) {
          const at = text.indexOf(secret)
          expect([where, secret, at === -1 ? "" : text.slice(Math.max(0, at - 200), at + 60)]).toEqual([
            where,
            secret,
            ""
          ])
        }
    }).pipe(Effect.scoped)
  )
})
