import { describe, expect, it } from "@effect/vitest"
import { Config } from "@sluice/core"
import { Effect, Fiber, Logger, Schema } from "effect"
import { createHash } from "node:crypto"
import type { ServerResponse } from "node:http"
import type OpenAI from "openai"
import { completionJson, simulatedConfig, startGateway, startUpstream, streamed } from "./harness.js"

const TOKEN = "adm-token-0123456789abcdef"
const TEAM = "sk-team-0123456789abcdef"
const env = { SLUICE_TEST_ADMIN_TOKEN: TOKEN, SLUICE_TEST_TEAM_KEY: TEAM }

/** Two simulated upstreams in one pool, an embeddings pool, the admin API on, one client key. */
const operated = (
  upstreams: ReadonlyArray<Record<string, unknown>> = [{ id: "a" }, { id: "b" }],
  strategy?: string
) => {
  const config = simulatedConfig(upstreams, [
    {
      id: "chat",
      models: ["gpt-4o-mini"],
      upstreams: upstreams.map((u) => u["id"]),
      ...(strategy === undefined ? {} : { strategy })
    },
    { id: "embeddings", models: ["text-embedding-3-small"], upstreams: [upstreams[0]!["id"]] }
  ])
  return {
    ...config,
    server: Schema.decodeUnknownSync(Config.ServerConfig)({
      admin: { tokenEnv: "SLUICE_TEST_ADMIN_TOKEN" },
      auth: { keys: [{ name: "team", keyEnv: "SLUICE_TEST_TEAM_KEY" }] }
    })
  }
}

/** `config`'s server settings with one more client key, given as its SHA-256 digest. */
const withDigestKey = (config: ReturnType<typeof operated>, name: string, sha256: string) => ({
  ...config.server,
  auth: {
    ...config.server.auth,
    keys: [...config.server.auth.keys, { ...config.server.auth.keys[0]!, name, keyEnv: undefined, sha256 }]
  }
})

type Gateway = Effect.Effect.Success<ReturnType<typeof startGateway>>

/** One admin call: status and parsed body. */
const admin = (gateway: Gateway, method: string, path: string, body?: unknown, token: string | null = TOKEN) =>
  Effect.promise(async () => {
    const headers: Record<string, string> = {}
    if (token !== null) headers["authorization"] = `Bearer ${token}`
    if (body !== undefined) headers["content-type"] = "application/json"
    const response = await fetch(`${gateway.url}/admin${path}`, {
      method,
      headers,
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    const text = await response.text()
    // A JSON answer the assertions read field by field; its shape is what they check.
    // oxlint-disable-next-line typescript/no-explicit-any
    const answer: any = text === "" ? undefined : JSON.parse(text)
    return { status: response.status, body: answer, text }
  })

/** The upstreams that served `n` chat requests of the team's key. */
const servedBy = (client: OpenAI, n: number) =>
  Effect.promise(async () => {
    const seen: Array<string | null> = []
    for (let i = 0; i < n; i++) {
      const { response } = await client.chat.completions
        .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
        .withResponse()
      seen.push(response.headers.get("x-sluice-upstream"))
    }
    return [...new Set(seen)].sort()
  })

describe("admin API, end to end", () => {
  it.live("answers 401 without the token and 403 with another one, on every group and the OpenAPI document", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(operated(), { env })
      for (const path of ["/config", "/upstreams", "/keys", "/models", "/openapi.json"]) {
        const none = yield* admin(gateway, "GET", path, undefined, null)
        expect([path, none.status]).toEqual([path, 401])
        expect(none.body._tag).toBe("Unauthorized")
        expect((yield* admin(gateway, "GET", path, undefined, "not-the-token")).status).toBe(403)
        // A client key is not the admin token.
        expect((yield* admin(gateway, "GET", path, undefined, TEAM)).status).toBe(403)
      }
    }).pipe(Effect.scoped)
  )

  it.live("serves the config with secrets redacted, and an OpenAPI document of every endpoint", () =>
    Effect.gen(function* () {
      const config = operated()
      const digest = "c".repeat(64)
      const gateway = yield* startGateway(
        {
          ...config,
          upstreams: config.upstreams.map((u) => ({ ...u, headers: { "x-upstream-secret": "hdr-secret-value" } })),
          server: withDigestKey(config, "d", digest)
        },
        { env }
      )
      const got = yield* admin(gateway, "GET", "/config")
      expect(got.status).toBe(200)
      expect(got.body.pools.map((p: { id: string }) => p.id)).toEqual(["chat", "embeddings"])
      expect(got.text).not.toContain(digest)
      expect(got.text).not.toContain("hdr-secret-value")
      expect(got.text).not.toContain(TEAM)
      expect(got.text).not.toContain(TOKEN)
      const openapi = yield* admin(gateway, "GET", "/openapi.json")
      expect(openapi.status).toBe(200)
      expect(openapi.body.openapi).toMatch(/^3\./)
      expect(Object.keys(openapi.body.paths)).toEqual(
        expect.arrayContaining([
          "/admin/config",
          "/admin/config/validate",
          "/admin/config/reload",
          "/admin/upstreams",
          "/admin/upstreams/{id}/breaker/reset",
          "/admin/upstreams/{id}/disable",
          "/admin/upstreams/{id}/enable",
          "/admin/upstreams/{id}/health-check",
          "/admin/upstreams/{id}",
          "/admin/keys",
          "/admin/keys/{name}",
          "/admin/models"
        ])
      )
      expect(JSON.stringify(openapi.body.components.securitySchemes)).toContain("bearer")
    }).pipe(Effect.scoped)
  )

  it.live("validates and replaces the config: problems by path and the running config kept, or swapped at once", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(operated(), { env })
      const current = (yield* admin(gateway, "GET", "/config")).body
      const bad = {
        ...current,
        upstreams: [{ ...current.upstreams[0], weight: -3 }, current.upstreams[1]],
        pools: [...current.pools, { id: "x", models: ["m"], upstreams: ["nope"] }]
      }
      const validated = yield* admin(gateway, "POST", "/config/validate", bad)
      expect(validated.status).toBe(200)
      expect(validated.body.valid).toBe(false)
      expect(validated.body.problems).toEqual([
        "upstreams[0].weight: Expected a positive number, actual -3",
        "pools[2].upstreams[0]: unknown upstream 'nope'; known: a, b"
      ])
      const refused = yield* admin(gateway, "PUT", "/config", bad)
      expect(refused.status).toBe(400)
      expect(refused.body._tag).toBe("InvalidConfig")
      expect(refused.body.problems).toHaveLength(2)
      const client = gateway.clientWith(TEAM)
      const ask = (model: string) =>
        Effect.promise(() =>
          client.chat.completions.create({ model, messages: [{ role: "user", content: "Hi" }] }).then(
            () => 200,
            (e: { status: number }) => e.status
          )
        )
      expect(yield* ask("gpt-4o")).toBe(404)
      const good = { ...current, pools: [{ ...current.pools[0], models: ["gpt-4o-mini", "gpt-4o"] }, current.pools[1]] }
      expect((yield* admin(gateway, "POST", "/config/validate", good)).body).toEqual({ valid: true, problems: [] })
      const replaced = yield* admin(gateway, "PUT", "/config", good)
      expect(replaced.status).toBe(200)
      expect(replaced.body).toEqual({ generation: 2 })
      expect(yield* ask("gpt-4o")).toBe(200)
      // Not started from a file: nothing to reload.
      expect((yield* admin(gateway, "POST", "/config/reload")).status).toBe(409)
    }).pipe(Effect.scoped)
  )

  it.live(
    "takes back the config it served: each redacted secret stands for its running value, and one with none is refused by path",
    () =>
      Effect.gen(function* () {
        const received: Array<string | undefined> = []
        const upstream = yield* startUpstream((request, _body, response) => {
          received.push(request.headers["x-upstream-secret"] as string | undefined)
          response.writeHead(200, { "content-type": "application/json" })
          response.end(completionJson(3, 1))
        })
        const config = operated()
        const digested = "sk-digested-0123456789abcdef"
        const gateway = yield* startGateway(
          {
            ...config,
            upstreams: [
              {
                ...config.upstreams[0]!,
                provider: "openai-compatible",
                baseUrl: upstream.baseUrl,
                headers: { "x-upstream-secret": "hdr-secret-value" }
              },
              config.upstreams[1]!
            ],
            pools: [{ ...config.pools[0]!, upstreams: ["a"] }, config.pools[1]!],
            server: withDigestKey(config, "digested", createHash("sha256").update(digested).digest("hex"))
          },
          { env }
        )
        // A key added through the API is kept as its digest too.
        expect(
          (yield* admin(gateway, "POST", "/keys", { name: "added", key: "sk-added-0123456789abcdef" })).status
        ).toBe(201)
        const current = (yield* admin(gateway, "GET", "/config")).body
        const edited = {
          ...current,
          pools: [{ ...current.pools[0], models: ["gpt-4o-mini", "gpt-4o"] }, current.pools[1]]
        }
        expect((yield* admin(gateway, "POST", "/config/validate", edited)).body).toEqual({ valid: true, problems: [] })
        expect((yield* admin(gateway, "PUT", "/config", edited)).status).toBe(200)
        for (const key of [digested, "sk-added-0123456789abcdef"]) {
          const answer = yield* Effect.promise(() =>
            gateway
              .clientWith(key)
              .chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "Hi" }] })
          )
          expect(answer.choices[0]?.message.content).toBe("ok")
        }
        expect(received).toEqual(["hdr-secret-value", "hdr-secret-value"])
        // A placeholder where nothing runs (a renamed key, a new header) is refused, and nothing changes.
        const orphaned = {
          ...edited,
          upstreams: [
            { ...edited.upstreams[0], headers: { ...edited.upstreams[0].headers, "x-new": "<redacted>" } },
            edited.upstreams[1]
          ],
          server: {
            ...edited.server,
            auth: {
              ...edited.server.auth,
              keys: edited.server.auth.keys.map((k: { name: string }) =>
                k.name === "added" ? { ...k, name: "renamed" } : k
              )
            }
          }
        }
        const refused = yield* admin(gateway, "PUT", "/config", orphaned)
        expect(refused.status).toBe(400)
        expect(refused.body.problems).toEqual([
          expect.stringMatching(/^upstreams\[0\]\.headers\.x-new: '<redacted>' stands for the running value/),
          expect.stringMatching(/^server\.auth\.keys\[2\]\.sha256: '<redacted>' stands for the running value/)
        ])
        const validated = yield* admin(gateway, "POST", "/config/validate", orphaned)
        expect(validated.body.valid).toBe(false)
        expect(validated.body.problems).toEqual(refused.body.problems)
        expect((yield* admin(gateway, "GET", "/upstreams")).body.generation).toBe(3)
      }).pipe(Effect.scoped)
  )

  it.live("logs each config it refuses as a warning with its problems, as a refused reload is", () =>
    Effect.gen(function* () {
      const logs: Array<string> = []
      const logging = Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ logLevel, message }) => void logs.push(`${logLevel.label} ${String(message)}`))
      )
      const gateway = yield* startGateway(operated(), { env, logging })
      const current = (yield* admin(gateway, "GET", "/config")).body
      const bad = { ...current, upstreams: [{ ...current.upstreams[0], weight: -3 }, current.upstreams[1]] }
      expect((yield* admin(gateway, "PUT", "/config", bad)).status).toBe(400)
      const added = yield* admin(gateway, "POST", "/upstreams", {
        pools: ["chat"],
        upstream: { id: "z", provider: "acme", baseUrl: "http://127.0.0.1:1/v1" }
      })
      expect(added.status).toBe(400)
      const refusals = logs.filter((l) => l.includes("refused"))
      expect(refusals).toHaveLength(2)
      expect(refusals[0]).toContain("WARN admin: config replacement refused, the running config stays")
      expect(refusals[0]).toContain("upstreams[0].weight: Expected a positive number, actual -3")
      expect(refusals[1]).toContain("WARN admin: adding upstream z refused")
      expect(refusals[1]).toContain("upstreams[2].provider: unknown provider 'acme'")
    }).pipe(Effect.scoped)
  )

  it.live("disables and enables an upstream, adds and removes one at run time, as routing shows", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(operated(), { env })
      const client = gateway.clientWith(TEAM)
      expect(yield* servedBy(client, 4)).toEqual(["a", "b"])
      expect((yield* admin(gateway, "POST", "/upstreams/a/disable")).status).toBe(200)
      expect(yield* servedBy(client, 4)).toEqual(["b"])
      expect((yield* admin(gateway, "POST", "/upstreams/a/enable")).status).toBe(200)
      expect(yield* servedBy(client, 4)).toEqual(["a", "b"])
      const added = yield* admin(gateway, "POST", "/upstreams", {
        pools: ["chat"],
        upstream: { id: "c", provider: "simulated", simulate: { latencyMs: 1 } }
      })
      expect(added.status).toBe(201)
      expect(yield* servedBy(client, 6)).toEqual(["a", "b", "c"])
      expect((yield* admin(gateway, "DELETE", "/upstreams/b")).status).toBe(200)
      expect(yield* servedBy(client, 6)).toEqual(["a", "c"])
      // The last upstream of a pool stays.
      const last = yield* admin(gateway, "DELETE", "/upstreams/a")
      expect(last.status).toBe(409)
      expect(last.body.message).toContain("would leave pool 'embeddings' without upstreams")
      expect((yield* admin(gateway, "POST", "/upstreams/nope/disable")).status).toBe(404)
      expect(
        (yield* admin(gateway, "POST", "/upstreams", { pools: ["chat"], upstream: { id: "c", provider: "simulated" } }))
          .status
      ).toBe(409)
      const status = yield* admin(gateway, "GET", "/upstreams")
      expect(status.body.generation).toBe(5)
      expect(status.body.upstreams.map((u: { id: string }) => u.id)).toEqual(["a", "c"])
    }).pipe(Effect.scoped)
  )

  it.live("names every bad field of a body by path", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(operated(), { env })
      const bad = yield* admin(gateway, "POST", "/upstreams", { pools: [], upstream: { id: 3, weight: "x" } })
      expect(bad.status).toBe(400)
      const paths = (bad.body.issues as Array<{ path: Array<string | number> }>).map((i) => i.path.join("."))
      expect(paths).toEqual(expect.arrayContaining(["pools", "upstream.id", "upstream.provider", "upstream.weight"]))
      const provider = yield* admin(gateway, "POST", "/upstreams", {
        pools: ["chat"],
        upstream: { id: "z", provider: "acme", baseUrl: "http://127.0.0.1:1/v1" }
      })
      expect(provider.status).toBe(400)
      expect(provider.body.problems[0]).toContain("upstreams[2].provider: unknown provider 'acme'")
    }).pipe(Effect.scoped)
  )

  it.live(
    "shows what a strategy that reads the load sees of each upstream: in flight, reserved tokens, latency per token, error rate",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          operated(
            [
              { id: "a", simulate: { failureRate: 1 }, circuitBreaker: { failureThreshold: 2 } },
              { id: "b", simulate: { latencyMs: 300 } }
            ],
            "least-connections"
          ),
          { env }
        )
        const client = gateway.clientWith(TEAM)
        // Every request ends on b; a failed each one it was tried on. Least connections breaks the
        // ties of two idle upstreams at random: requests go until one has been tried on a first (its
        // answer tells of two attempts), at most 30 (a chance of 2^-30 that a never is).
        let sent = 0
        for (let tried = false; !tried && sent < 30; sent++) {
          const attempts = yield* Effect.promise(async () => {
            const { response } = await client.chat.completions
              .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
              .withResponse()
            expect(response.headers.get("x-sluice-upstream")).toBe("b")
            return response.headers.get("x-sluice-attempts")
          })
          tried = attempts === "2"
        }
        const upstreams = () =>
          Effect.map(
            admin(gateway, "GET", "/upstreams"),
            (status) =>
              // oxlint-disable-next-line typescript/no-explicit-any
              new Map<string, any>(status.body.upstreams.map((u: { id: string }) => [u.id, u]))
          )
        const before = yield* upstreams()
        const [a, b] = [before.get("a"), before.get("b")]
        expect(a.live.counted).toBe(true)
        expect(a.live.errorRate).toBeGreaterThan(0)
        expect(b.live).toMatchObject({ counted: true, inFlight: 0, reservedTokens: 0, errorRate: 0 })
        expect(b.latency.perOutputToken.samples).toBe(sent)
        expect(b.latency.perOutputToken.ms).toBeGreaterThan(0)
        // A request on its way: counted in flight on b with what it reserved, until it is answered.
        const pending = Effect.runPromise(servedBy(client, 1))
        let busy: { inFlight: number; reservedTokens: number } | undefined
        for (let i = 0; i < 100 && busy === undefined; i++) {
          const live = (yield* upstreams()).get("b").live
          if (live.inFlight === 1) busy = live
          else yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 10)))
        }
        expect(busy?.reservedTokens).toBeGreaterThan(0)
        expect(yield* Effect.promise(() => pending)).toEqual(["b"])
        expect((yield* upstreams()).get("b").live).toMatchObject({ inFlight: 0, reservedTokens: 0 })
      }).pipe(Effect.scoped)
  )

  it.live("shows each upstream's health, breaker and budget; resets a breaker; runs a health check now", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        operated([
          {
            id: "a",
            simulate: { failureRate: 1 },
            circuitBreaker: { failureThreshold: 2 },
            limits: { rpm: 100 },
            healthCheck: { type: "tcp", intervalMs: 600_000 }
          },
          { id: "b" }
        ]),
        { env }
      )
      const client = gateway.clientWith(TEAM)
      // a fails every time: its breaker opens and b serves.
      yield* servedBy(client, 4)
      const status = yield* admin(gateway, "GET", "/upstreams")
      expect(status.status).toBe(200)
      const a = status.body.upstreams.find((u: { id: string }) => u.id === "a")
      expect(a.breaker.state).toBe("open")
      expect(a.breaker.lastFailure).toContain("500")
      expect(a.budget.limits).toEqual({ rpm: 100 })
      expect(a.budget.requestsUsed).toBeGreaterThan(0)
      expect(a.budget.requestsLeft).toBe(100 - a.budget.requestsUsed)
      expect(a.health.healthy).toBe(true)
      expect(a.inFlight).toBe(0)
      // Round robin reads no load: the live view counts no attempts; the budget left is the RPM's share.
      expect(a.live).toEqual({
        counted: false,
        inFlight: 0,
        reservedTokens: 0,
        errorRate: 0,
        budgetLeft: a.budget.requestsLeft / 100
      })
      // a never answered: no latency yet; b's answers are averaged (decayed latency).
      expect(a.latency).toEqual({})
      const b = status.body.upstreams.find((u: { id: string }) => u.id === "b")
      expect(b.latency.answer.samples).toBe(4)
      expect(b.latency.answer.ms).toBeGreaterThanOrEqual(0)
      expect(Date.parse(b.latency.answer.updatedAt)).not.toBeNaN()
      expect(status.body.pools[0]).toMatchObject({ id: "chat", queueDepth: 0, upstreams: ["a", "b"] })
      const reset = yield* admin(gateway, "POST", "/upstreams/a/breaker/reset")
      expect(reset.status).toBe(200)
      expect(reset.body.breaker.state).toBe("closed")
      const checked = yield* admin(gateway, "POST", "/upstreams/a/health-check")
      expect(checked.status).toBe(200)
      expect(checked.body.health.lastCheckAt).toBeGreaterThan(0)
      expect((yield* admin(gateway, "POST", "/upstreams/nope/breaker/reset")).status).toBe(404)
    }).pipe(Effect.scoped)
  )

  it.live(
    "shows the holds learned from an upstream's rate-limit headers and from a 429's Retry-After, and a pool's queue depth",
    () =>
      Effect.gen(function* () {
        // Answers 429 with Retry-After: 120 to every request.
        const throttling = yield* startUpstream((_request, _body, response) => {
          response.writeHead(429, { "content-type": "application/json", "retry-after": "120" })
          response.end(JSON.stringify({ error: { message: "slow down", type: "rate_limit_exceeded" } }))
        })
        // Holds every request until the test lets them go.
        const held: Array<ServerResponse> = []
        const holding = yield* startUpstream((_request, _body, response) => void held.push(response))
        const release = () => {
          for (const response of held.splice(0)) {
            response.writeHead(200, { "content-type": "application/json" })
            response.end(completionJson(3, 1))
          }
        }
        yield* Effect.addFinalizer(() => Effect.sync(release))
        const gateway = yield* startGateway(
          {
            ...simulatedConfig(
              [
                // Sluice is not told its budget of 2 a minute; it learns it from x-ratelimit-* headers.
                { id: "limited", simulate: { rpm: 2 } },
                { id: "throttling", provider: "openai-compatible", baseUrl: throttling.baseUrl },
                { id: "spare" },
                {
                  id: "holding",
                  provider: "openai-compatible",
                  baseUrl: holding.baseUrl,
                  limits: { maxConcurrency: 1 }
                }
              ],
              [
                { id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["limited", "spare"] },
                { id: "throttled", models: ["throttled"], strategy: "priority", upstreams: ["throttling", "spare"] },
                { id: "queued", models: ["queued"], upstreams: ["holding"], queue: { maxSize: 10, maxWaitMs: 30_000 } }
              ]
            ),
            server: operated().server
          },
          { env }
        )
        const client = gateway.clientWith(TEAM)
        const ask = (model: string) =>
          Effect.promise(() =>
            client.chat.completions
              .create({ model, messages: [{ role: "user", content: "Hi" }] })
              .withResponse()
              .then(({ response }) => response.headers.get("x-sluice-upstream"))
          )
        const status = Effect.map(admin(gateway, "GET", "/upstreams"), (answer) => {
          expect(answer.status).toBe(200)
          return answer.body
        })
        const upstream = (body: { upstreams: ReadonlyArray<{ id: string }> }, id: string) =>
          // A status the assertions read field by field.
          // oxlint-disable-next-line typescript/no-explicit-any
          body.upstreams.find((u) => u.id === id) as any
        const before = yield* status
        expect(upstream(before, "limited").budget).not.toHaveProperty("learnedUntil")
        expect(upstream(before, "throttling").budget).not.toHaveProperty("blockedUntil")

        // The second answer of "limited" reports 0 requests remaining for about a minute.
        expect([yield* ask("gpt-4o-mini"), yield* ask("gpt-4o-mini")]).toEqual(["limited", "limited"])
        // "throttling" answers 429 with Retry-After: 120; "spare" serves instead.
        expect(yield* ask("throttled")).toBe("spare")
        const after = yield* status
        const limited = upstream(after, "limited").budget
        expect(limited.remainingRequests).toBe(0)
        expect(limited.learnedUntil - Date.now()).toBeGreaterThan(50_000)
        expect(limited.learnedUntil - Date.now()).toBeLessThanOrEqual(60_000)
        expect(limited).not.toHaveProperty("blockedUntil")
        const throttled = upstream(after, "throttling").budget
        expect(throttled.blockedUntil - Date.now()).toBeGreaterThan(110_000)
        expect(throttled.blockedUntil - Date.now()).toBeLessThanOrEqual(120_000)
        expect(throttled.learnedUntil).toBe(throttled.blockedUntil)
        expect(upstream(after, "spare").budget).not.toHaveProperty("learnedUntil")

        // One request at "holding", three waiting for it in the pool's queue.
        const answers = yield* Effect.fork(
          Effect.all(
            Array.from({ length: 4 }, () => ask("queued")),
            { concurrency: "unbounded" }
          )
        )
        let queued: { id: string; queueDepth: number } | undefined
        for (let i = 0; i < 300 && queued?.queueDepth !== 3; i++) {
          if (i > 0) yield* Effect.sleep("10 millis")
          queued = (yield* status).pools.find((p: { id: string }) => p.id === "queued")
        }
        expect(queued).toMatchObject({ id: "queued", queueDepth: 3 })
        expect(held).toHaveLength(1)
        expect(upstream(yield* status, "holding").inFlight).toBe(1)
        // Each released answer lets the next waiting request through.
        for (let i = 0; i < 4; i++) {
          while (held.length === 0) yield* Effect.sleep("10 millis")
          release()
        }
        expect(yield* Fiber.join(answers)).toEqual(["holding", "holding", "holding", "holding"])
        expect((yield* status).pools.find((p: { id: string }) => p.id === "queued").queueDepth).toBe(0)
      }).pipe(Effect.scoped)
  )

  it.live("lists keys without their secret, adds one (kept as its digest) and revokes it", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(operated(), { env })
      const fresh = "sk-fresh-0123456789abcdef"
      const added = yield* admin(gateway, "POST", "/keys", {
        name: "fresh",
        key: fresh,
        limits: { rpm: 5 },
        pools: ["chat"]
      })
      expect(added.status).toBe(201)
      expect(yield* servedBy(gateway.clientWith(fresh), 1)).toHaveLength(1)
      const listed = yield* admin(gateway, "GET", "/keys")
      expect(listed.body.map((k: { name: string }) => k.name)).toEqual(["team", "fresh"])
      expect(listed.body[1]).toMatchObject({ source: "sha256", pools: ["chat"], usage: { requestsLastMinute: 1 } })
      expect(listed.text).not.toContain(fresh)
      expect((yield* admin(gateway, "GET", "/config")).text).not.toContain(fresh)
      expect((yield* admin(gateway, "POST", "/keys", { name: "fresh", key: "sk-other-0123456789abcdef" })).status).toBe(
        409
      )
      expect((yield* admin(gateway, "DELETE", "/keys/fresh")).status).toBe(200)
      const revoked = yield* Effect.promise(() =>
        gateway
          .clientWith(fresh)
          .models.list()
          .then(
            () => 200,
            (e: { status: number }) => e.status
          )
      )
      expect(revoked).toBe(401)
      expect((yield* admin(gateway, "DELETE", "/keys/fresh")).status).toBe(404)
      const models = yield* admin(gateway, "GET", "/models")
      expect(models.body).toEqual([
        { pool: "chat", models: ["gpt-4o-mini"], aliases: {} },
        { pool: "embeddings", models: ["text-embedding-3-small"], aliases: {} }
      ])
    }).pipe(Effect.scoped)
  )

  it.live("counts the last hour minute by minute: requests, errors, tokens, spend and latency of known traffic", () =>
    Effect.gen(function* () {
      const config = simulatedConfig(
        [
          // Priced at a dollar a token (two per output token), so spend counts tokens exactly.
          { id: "ok", simulate: { completionTokens: 7 }, pricing: { inputPerMillion: 1e6, outputPerMillion: 2e6 } },
          { id: "down", simulate: { failureRate: 1 } }
        ],
        [
          { id: "chat", models: ["gpt-4o-mini"], upstreams: ["ok"] },
          { id: "broken", models: ["broken-model"], upstreams: ["down"] }
        ]
      )
      const gateway = yield* startGateway(
        {
          ...config,
          server: Schema.decodeUnknownSync(Config.ServerConfig)({ admin: { tokenEnv: "SLUICE_TEST_ADMIN_TOKEN" } })
        },
        { env }
      )
      let inputTokens = 0
      for (let i = 0; i < 3; i++) {
        const answer = yield* Effect.promise(() =>
          gateway.client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
        )
        inputTokens += answer.usage!.prompt_tokens
        expect(answer.usage!.completion_tokens).toBe(7)
      }
      const stream = yield* streamed(gateway.client)
      expect(stream.error).toBeUndefined()
      for (let i = 0; i < 2; i++) {
        const failed = yield* Effect.promise(() =>
          gateway.client.chat.completions
            .create({ model: "broken-model", messages: [{ role: "user", content: "Hi" }] })
            .then(
              () => undefined,
              (error: unknown) => error
            )
        )
        expect(failed).toBeDefined()
      }
      // A decision is recorded as its request ends, which may be just after the client has its answer.
      type Minute = { requests: number; errors: number; inputTokens: number; outputTokens: number; spendUsd: number }
      const total = (minutes: ReadonlyArray<Minute>, field: keyof Minute) => minutes.reduce((n, m) => n + m[field], 0)
      let stats = yield* admin(gateway, "GET", "/stats")
      for (let i = 0; i < 300 && total(stats.body.minutes, "requests") < 6; i++) {
        yield* Effect.sleep("10 millis")
        stats = yield* admin(gateway, "GET", "/stats")
      }
      expect(stats.status).toBe(200)
      const minutes: ReadonlyArray<Minute & { start: number; latencyMs: unknown; firstChunkMs: unknown }> =
        stats.body.minutes
      expect(minutes).toHaveLength(60)
      expect(minutes[59]!.start - minutes[0]!.start).toBe(59 * 60_000)
      expect(total(minutes, "requests")).toBe(6)
      expect(total(minutes, "errors")).toBe(2)
      // The streamed answer's usage is the simulator's too: 7 completion tokens, the prompt as counted.
      expect(total(minutes, "outputTokens")).toBe(4 * 7)
      expect(total(minutes, "inputTokens")).toBe((inputTokens / 3) * 4)
      expect(total(minutes, "spendUsd")).toBeCloseTo((inputTokens / 3) * 4 + 2 * 4 * 7, 6)
      const busy = minutes.filter((m) => m.requests > 0)
      for (const m of busy) expect(m.latencyMs).toEqual({ p50: expect.any(Number), p99: expect.any(Number) })
      expect(busy.some((m) => m.firstChunkMs !== null)).toBe(true)
      expect(minutes.filter((m) => m.requests === 0).every((m) => m.latencyMs === null)).toBe(true)
      // Behind the admin token like the rest, and described in the OpenAPI document.
      expect((yield* admin(gateway, "GET", "/stats", undefined, null)).status).toBe(401)
      expect(Object.keys((yield* admin(gateway, "GET", "/openapi.json")).body.paths)).toContain("/admin/stats")
    }).pipe(Effect.scoped)
  )
})
