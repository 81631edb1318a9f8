/**
 * No secret — an upstream's key, a client key, the admin token — appears in any answer, log line,
 * span or metric, after a run that uses each of them (and fails with each on purpose).
 */
import { describe, expect, it } from "@effect/vitest"
import { Config } from "@sluice/core"
import { Effect, Metric, Schema } from "effect"
import { simulatedConfig, startGateway } from "./harness.js"

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
  it.live("never appear in answers, logs, spans or metrics", () =>
    Effect.gen(function* () {
      const base = simulatedConfig(
        [
          { id: "a", apiKeyEnv: "SLUICE_TEST_UPSTREAM_KEY", simulate: { completionTokens: 3 } },
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
          auth: { keys: [{ name: "team", keyEnv: "SLUICE_TEST_CLIENT_KEY", limits: { rpm: 4 } }] }
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
        ["metrics", metrics]
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
