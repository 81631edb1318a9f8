import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { createHash } from "node:crypto"
import type { ServerResponse } from "node:http"
import OpenAI from "openai"
import { Config } from "@sluice/core"
import * as Server from "../src/Server.js"
import { completionJson, eventually, simulatedConfig, startGateway, startUpstream } from "./harness.js"

const TEAM = "sk-team-0123456789abcdef"
const INTERN = "sk-intern-0123456789abcdef"
const BATCH = "sk-batch-0123456789abcdef"
const env = { SLUICE_TEST_TEAM_KEY: TEAM, SLUICE_TEST_INTERN_KEY: INTERN }

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex")

const decodeServer = (server: Record<string, unknown>) =>
  Schema.decodeUnknownSync(Config.ServerConfig)({ host: "127.0.0.1", port: 0, ...server })

/**
 * Two pools — chat (a) and embeddings — and keys: `team` may use anything; `intern` only the chat
 * pool's gpt-4o-mini, at 2 requests a minute; `batch` (a digest in the file) has a daily budget.
 */
const keyed = (auth: ReadonlyArray<Record<string, unknown>>, server: Record<string, unknown> = {}) => {
  const config = simulatedConfig(
    [
      {
        id: "a",
        simulate: { completionTokens: 10 },
        // $1 per thousand completion tokens: one answer of 10 tokens costs a cent.
        pricing: { inputPerMillion: 0, outputPerMillion: 1000 }
      },
      { id: "emb" }
    ],
    [
      // A request without max_tokens holds 10 completion tokens of its key's TPM and budget: a cent.
      { id: "chat", models: ["gpt-4o-mini", "gpt-4o"], upstreams: ["a"], defaultMaxTokens: 10 },
      { id: "embeddings", models: ["text-embedding-3-small"], upstreams: ["emb"] }
    ]
  )
  return { ...config, server: decodeServer({ ...server, auth: { keys: auth } }) }
}

const KEYS = [
  { name: "team", keyEnv: "SLUICE_TEST_TEAM_KEY" },
  { name: "intern", keyEnv: "SLUICE_TEST_INTERN_KEY", models: ["gpt-4o-mini"], pools: ["chat"], limits: { rpm: 2 } },
  { name: "batch", sha256: sha256(BATCH), budget: { dailyUsd: 0.015 } }
]

const chat = (client: OpenAI, model = "gpt-4o-mini") =>
  client.chat.completions.create({ model, messages: [{ role: "user", content: "Hi" }] })

const outcome = <A>(f: () => Promise<A>) =>
  Effect.promise(() =>
    f().then(
      (value) => ({ ok: true as const, value, error: undefined }),
      (error: unknown) => ({
        ok: false as const,
        value: undefined,
        error: error as InstanceType<typeof OpenAI.APIError>
      })
    )
  )

describe("client keys, through the gateway with the openai SDK", () => {
  it.live("answers 401 in OpenAI's envelope without a key or with a wrong one, and serves a valid one", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(keyed(KEYS), { env })
      const wrong = yield* outcome(() => chat(gateway.clientWith("sk-not-a-key")))
      expect(wrong.error).toBeInstanceOf(OpenAI.AuthenticationError)
      expect(wrong.error?.code).toBe("invalid_api_key")
      expect(wrong.error?.message).not.toContain("sk-not-a-key")
      const none = yield* Effect.promise(() =>
        fetch(`${gateway.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
        })
      )
      expect(none.status).toBe(401)
      expect(none.headers.get("www-authenticate")).toBe("Bearer")
      expect(yield* Effect.promise(() => none.json())).toMatchObject({
        error: { type: "invalid_request_error", code: "missing_api_key" }
      })
      const models = yield* outcome(() => gateway.clientWith("sk-not-a-key").models.list())
      expect(models.error).toBeInstanceOf(OpenAI.AuthenticationError)
      const served = yield* outcome(() => chat(gateway.clientWith(TEAM)))
      expect(served.ok).toBe(true)
      // A key given as its digest in the file.
      expect((yield* outcome(() => chat(gateway.clientWith(BATCH)))).ok).toBe(true)
      // Health stays open: load balancers probe it without a key.
      expect((yield* Effect.promise(() => fetch(`${gateway.url}/health/live`))).status).toBe(200)
    }).pipe(Effect.scoped)
  )

  it.live("answers 403 for a model or pool outside the key's, and serves the ones it has", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(keyed(KEYS), { env })
      const intern = gateway.clientWith(INTERN)
      const model = yield* outcome(() => chat(intern, "gpt-4o"))
      expect(model.error).toBeInstanceOf(OpenAI.PermissionDeniedError)
      expect(model.error?.code).toBe("model_not_allowed")
      expect(model.error?.message).toContain("'intern' may not use model 'gpt-4o'")
      const pool = yield* outcome(() => intern.embeddings.create({ model: "text-embedding-3-small", input: "hello" }))
      expect(pool.error).toBeInstanceOf(OpenAI.PermissionDeniedError)
      expect((yield* outcome(() => chat(intern))).ok).toBe(true)
      expect(gateway.simulator("a").requests()).toHaveLength(1)
    }).pipe(Effect.scoped)
  )

  it.live("answers 429 with Retry-After past a key's RPM, while another key is still served", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(keyed(KEYS), { env })
      const intern = gateway.clientWith(INTERN)
      expect((yield* outcome(() => chat(intern))).ok).toBe(true)
      expect((yield* outcome(() => chat(intern))).ok).toBe(true)
      const third = yield* outcome(() => chat(intern))
      expect(third.error).toBeInstanceOf(OpenAI.RateLimitError)
      expect(third.error?.code).toBe("rate_limit_exceeded")
      const retryAfter = Number(third.error?.headers?.get("retry-after"))
      expect(retryAfter).toBeGreaterThan(50)
      expect(retryAfter).toBeLessThanOrEqual(60)
      // The team's key has no limits of its own: the intern's do not hold it back.
      for (let i = 0; i < 3; i++) expect((yield* outcome(() => chat(gateway.clientWith(TEAM)))).ok).toBe(true)
      expect(gateway.simulator("a").requests()).toHaveLength(5)
    }).pipe(Effect.scoped)
  )

  it.live("answers 429 past a key's TPM, counted from the usage of its answers", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        keyed([{ name: "team", keyEnv: "SLUICE_TEST_TEAM_KEY", limits: { tpm: 12 } }]),
        { env }
      )
      const team = gateway.clientWith(TEAM)
      // The first answer uses its prompt's tokens and 10 completion tokens: over 12.
      expect((yield* outcome(() => chat(team))).ok).toBe(true)
      const second = yield* outcome(() => chat(team))
      expect(second.error).toBeInstanceOf(OpenAI.RateLimitError)
      expect(second.error?.message).toContain("12 tokens per minute")
      expect(Number(second.error?.headers?.get("retry-after"))).toBeGreaterThan(0)
    }).pipe(Effect.scoped)
  )

  it.live("answers 429 budget_exceeded once a key has spent its daily budget (usage x pricing)", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(keyed(KEYS), { env })
      const batch = gateway.clientWith(BATCH)
      // One cent each against a budget of 1.5 cents: the second may cost a cent, more than the half
      // cent left, so it is refused before it can pass the budget.
      expect((yield* outcome(() => chat(batch))).ok).toBe(true)
      const second = yield* outcome(() => chat(batch))
      expect(second.error).toBeInstanceOf(OpenAI.RateLimitError)
      expect(second.error?.code).toBe("budget_exceeded")
      expect(second.error?.type).toBe("insufficient_quota")
      expect(second.error?.message).toContain("may cost up to $0.01, more than the $0.005 left")
      expect(Number(second.error?.headers?.get("retry-after"))).toBeGreaterThan(0)
      // Another key's budget is its own.
      expect((yield* outcome(() => chat(gateway.clientWith(TEAM)))).ok).toBe(true)
    }).pipe(Effect.scoped)
  )

  it.live("records the spend of streamed answers when the stream ends", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        keyed([{ name: "batch", sha256: sha256(BATCH), budget: { dailyUsd: 0.025 } }])
      )
      const batch = gateway.clientWith(BATCH)
      // It holds 2 cents (max_tokens 20) and costs one (10 tokens): the cent it did not use comes back
      // when it ends, so one more request fits the budget, and then no other.
      const stream = yield* Effect.promise(() =>
        batch.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: "Hi" }],
          max_tokens: 20,
          stream: true
        })
      )
      yield* Effect.promise(async () => {
        for await (const _ of stream) void _
      })
      expect((yield* outcome(() => chat(batch))).ok).toBe(true)
      const next = yield* outcome(() => chat(batch))
      expect(next.error?.code).toBe("budget_exceeded")
    }).pipe(Effect.scoped)
  )

  it.live("takes the queue priority from the key, and x-sluice-priority only from keys allowed to set it", () =>
    Effect.gen(function* () {
      const config = keyed([
        { name: "team", keyEnv: "SLUICE_TEST_TEAM_KEY", priority: 3 },
        { name: "intern", keyEnv: "SLUICE_TEST_INTERN_KEY", priorityHeader: true }
      ])
      const gateway = yield* startGateway(
        {
          ...config,
          upstreams: config.upstreams.map((u) =>
            u.id === "a" ? { ...u, limits: { maxConcurrency: 1 }, simulate: { latencyMs: 150 } } : u
          )
        },
        { env }
      )
      const ask = (client: OpenAI, content: string, headers: Record<string, string> = {}) =>
        client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content }] }, { headers })
      const sleep = (ms: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, ms)))
      const all: Array<Promise<unknown>> = [ask(gateway.clientWith(TEAM), "busy")]
      yield* sleep(50)
      all.push(ask(gateway.clientWith(TEAM), "team-asks-100", { "x-sluice-priority": "100" }))
      yield* sleep(30)
      all.push(ask(gateway.clientWith(INTERN), "intern-asks-5", { "x-sluice-priority": "5" }))
      yield* sleep(30)
      all.push(ask(gateway.clientWith(INTERN), "intern"))
      yield* Effect.promise(() => Promise.all(all))
      const arrivals = gateway
        .simulator("a")
        .requests()
        .map((r) => (r.body as { messages: Array<{ content: string }> }).messages[0]?.content)
      expect(arrivals).toEqual(["busy", "intern-asks-5", "team-asks-100", "intern"])
    }).pipe(Effect.scoped)
  )

  it.live("answers a CORS preflight from an allowed origin and adds the headers to answers; others get none", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(keyed(KEYS, { cors: { origins: ["https://app.example"] } }), { env })
      const preflight = yield* Effect.promise(() =>
        fetch(`${gateway.url}/v1/chat/completions`, {
          method: "OPTIONS",
          headers: { origin: "https://app.example", "access-control-request-method": "POST" }
        })
      )
      expect(preflight.status).toBe(204)
      expect(preflight.headers.get("access-control-allow-origin")).toBe("https://app.example")
      expect(preflight.headers.get("access-control-allow-headers")).toContain("authorization")
      const answer = yield* Effect.promise(() =>
        fetch(`${gateway.url}/v1/models`, {
          headers: { origin: "https://app.example", authorization: `Bearer ${TEAM}` }
        })
      )
      expect(answer.status).toBe(200)
      expect(answer.headers.get("access-control-allow-origin")).toBe("https://app.example")
      expect(answer.headers.get("access-control-expose-headers")).toContain("x-request-id")
      const other = yield* Effect.promise(() =>
        fetch(`${gateway.url}/v1/models`, {
          headers: { origin: "https://evil.example", authorization: `Bearer ${TEAM}` }
        })
      )
      expect(other.headers.get("access-control-allow-origin")).toBeNull()
    }).pipe(Effect.scoped)
  )
})

/**
 * An OpenAI-compatible upstream that holds every answer until `answer` is called (so a burst of
 * requests is in flight at once, whatever the machine's speed), each reporting `completion_tokens`
 * used; with `failing` set it answers 500 at once instead.
 */
const holdingUpstream = (completionTokens: number) =>
  Effect.gen(function* () {
    const held: Array<ServerResponse> = []
    const state = { failing: false }
    const { baseUrl } = yield* startUpstream((_request, _body, response) => {
      if (state.failing) {
        response.writeHead(500, { "content-type": "application/json" })
        return response.end(JSON.stringify({ error: { message: "down", type: "server_error" } }))
      }
      held.push(response)
    })
    const answer = () => {
      for (const response of held.splice(0)) {
        response.writeHead(200, { "content-type": "application/json" })
        response.end(completionJson(5, completionTokens))
      }
    }
    return { baseUrl, held, state, answer }
  })

/** The gateway over one holding upstream priced at $0.01 per completion token, with the key `burst`. */
const burstGateway = (key: Record<string, unknown>, baseUrl: string) => {
  const config = simulatedConfig(
    [
      {
        id: "u",
        provider: "openai",
        baseUrl,
        apiKeyEnv: "SLUICE_TEST_UPSTREAM_KEY",
        pricing: { inputPerMillion: 0, outputPerMillion: 10_000 }
      }
    ],
    [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["u"] }]
  )
  return startGateway(
    {
      ...config,
      server: decodeServer({ auth: { keys: [{ name: "burst", keyEnv: "SLUICE_TEST_TEAM_KEY", ...key }] } })
    },
    { env: { ...env, SLUICE_TEST_UPSTREAM_KEY: "sk-upstream" } }
  )
}

/** Sends `n` requests at once (max_tokens `max` each); resolves once each is either refused or held upstream. */
const burst = (client: OpenAI, n: number, max: number, held: ReadonlyArray<unknown>) =>
  Effect.gen(function* () {
    const refused: Array<InstanceType<typeof OpenAI.APIError>> = []
    const all = Array.from({ length: n }, () =>
      client.chat.completions
        .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], max_tokens: max })
        .catch((error: InstanceType<typeof OpenAI.APIError>) => void refused.push(error))
    )
    yield* eventually(() => (refused.length + held.length === n ? true : undefined))
    return { refused, done: Effect.promise(() => Promise.all(all)) }
  })

describe("a key's TPM and budget under a burst of concurrent requests", () => {
  it.live("holds each request's tokens at admission: the burst stays within the key's TPM", () =>
    Effect.gen(function* () {
      const upstream = yield* holdingUpstream(10)
      const gateway = yield* burstGateway({ limits: { tpm: 300 } }, upstream.baseUrl)
      // Each holds its prompt estimate and 50 completion tokens: at most 5 fit in 300 at once.
      const first = yield* burst(gateway.clientWith(TEAM), 20, 50, upstream.held)
      const admitted = upstream.held.length
      expect(admitted).toBeGreaterThanOrEqual(1)
      expect(admitted).toBeLessThanOrEqual(5)
      expect(first.refused).toHaveLength(20 - admitted)
      expect(first.refused.every((e) => e.status === 429 && e.code === "rate_limit_exceeded")).toBe(true)
      // Their answers use 15 tokens each: what they held beyond it comes back, and another burst fits.
      upstream.answer()
      yield* first.done
      const second = yield* burst(gateway.clientWith(TEAM), 20, 50, upstream.held)
      expect(upstream.held.length).toBeGreaterThanOrEqual(1)
      expect(15 * admitted + upstream.held.length * 50).toBeLessThanOrEqual(300)
      upstream.answer()
      yield* second.done
    }).pipe(Effect.scoped)
  )

  it.live("prices each request at most it may cost: the burst never spends past the key's budget", () =>
    Effect.gen(function* () {
      const upstream = yield* holdingUpstream(20)
      const gateway = yield* burstGateway({ budget: { dailyUsd: 1 } }, upstream.baseUrl)
      // max_tokens 20 at $0.01 a token: 20 cents each, five in a dollar.
      const first = yield* burst(gateway.clientWith(TEAM), 20, 20, upstream.held)
      expect(upstream.held).toHaveLength(5)
      expect(first.refused.every((e) => e.status === 429 && e.code === "budget_exceeded")).toBe(true)
      upstream.answer()
      yield* first.done
      // The dollar is spent: nothing more today.
      const after = yield* burst(gateway.clientWith(TEAM), 3, 1, upstream.held)
      expect(after.refused.map((e) => e.code)).toEqual(["budget_exceeded", "budget_exceeded", "budget_exceeded"])
    }).pipe(Effect.scoped)
  )

  it.live("gives back what a request held when its upstream fails", () =>
    Effect.gen(function* () {
      const upstream = yield* holdingUpstream(10)
      const gateway = yield* burstGateway({ limits: { tpm: 100 } }, upstream.baseUrl)
      upstream.state.failing = true
      const failed = yield* burst(gateway.clientWith(TEAM), 1, 60, upstream.held)
      expect(failed.refused[0]?.status).toBe(502)
      // Had the failed request kept its 60-odd tokens, this one would not fit in 100.
      upstream.state.failing = false
      const next = yield* burst(gateway.clientWith(TEAM), 1, 60, upstream.held)
      expect(next.refused).toHaveLength(0)
      upstream.answer()
      yield* next.done
    }).pipe(Effect.scoped)
  )
})

describe("exposure", () => {
  const open = (host: string, auth: Record<string, unknown> = {}) => {
    const config = keyed([])
    return { ...config, server: decodeServer({ host, auth }) }
  }

  it.effect("refuses to serve without keys on an address other machines can reach", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Server.checkExposure(open("0.0.0.0")))
      expect(error.problems[0]).toContain("server.host: '0.0.0.0' is reachable from other machines and no client keys")
      yield* Server.checkExposure(open("0.0.0.0", { open: true }))
      yield* Server.checkExposure(open("127.0.0.1"))
      yield* Server.checkExposure(open("::1"))
      yield* Server.checkExposure({ ...keyed(KEYS), server: decodeServer({ host: "0.0.0.0", auth: { keys: KEYS } }) })
    })
  )
})

describe("client keys on /v1/messages: refusals in Anthropic's envelope", () => {
  const messages = (gateway: { readonly url: string }, headers: Record<string, string>, body?: string) =>
    Effect.promise(async () => {
      const res = await fetch(`${gateway.url}/v1/messages`, {
        method: "POST",
        headers: { "content-type": "application/json", "anthropic-version": "2023-06-01", ...headers },
        body:
          body ?? JSON.stringify({ model: "gpt-4o-mini", max_tokens: 16, messages: [{ role: "user", content: "Hi" }] })
      })
      return { status: res.status, retryAfter: res.headers.get("retry-after"), body: await res.json() }
    })

  it.live("answers 401, 403, 429 with Retry-After and 413 as Anthropic's SDK expects them", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(keyed(KEYS, { maxBodyBytes: 2_000 }), { env })
      const none = yield* messages(gateway, {})
      expect(none.status).toBe(401)
      expect(none.body).toMatchObject({ type: "error", error: { type: "authentication_error" } })
      const wrong = yield* messages(gateway, { "x-api-key": "sk-not-a-key" })
      expect(wrong.body).toMatchObject({ type: "error", error: { type: "authentication_error" } })
      expect(JSON.stringify(wrong.body)).not.toContain("sk-not-a-key")
      const outside = yield* messages(
        gateway,
        { "x-api-key": INTERN },
        JSON.stringify({ model: "gpt-4o", max_tokens: 16, messages: [{ role: "user", content: "Hi" }] })
      )
      expect(outside.status).toBe(403)
      expect(outside.body).toMatchObject({ type: "error", error: { type: "permission_error" } })
      // The intern key's 2 requests a minute.
      expect((yield* messages(gateway, { "x-api-key": INTERN })).status).toBe(200)
      expect((yield* messages(gateway, { "x-api-key": INTERN })).status).toBe(200)
      const over = yield* messages(gateway, { "x-api-key": INTERN })
      expect(over.status).toBe(429)
      expect(Number(over.retryAfter)).toBeGreaterThan(0)
      expect(over.body).toMatchObject({ type: "error", error: { type: "rate_limit_error" } })
      const large = yield* messages(
        gateway,
        { "x-api-key": TEAM },
        JSON.stringify({
          model: "gpt-4o-mini",
          max_tokens: 16,
          messages: [{ role: "user", content: "x".repeat(5_000) }]
        })
      )
      expect(large.status).toBe(413)
      expect(large.body).toMatchObject({ type: "error", error: { type: "request_too_large" } })
    }).pipe(Effect.scoped)
  )

  it.live("keeps budget_exceeded visible beside Anthropic's rate_limit_error once a key's budget is spent", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(keyed(KEYS), { env })
      // 10 tokens held: a cent of the 1.5 cents a day; the second may cost a cent, more than is left.
      const body = JSON.stringify({ model: "gpt-4o-mini", max_tokens: 10, messages: [{ role: "user", content: "Hi" }] })
      expect((yield* messages(gateway, { "x-api-key": BATCH }, body)).status).toBe(200)
      const over = yield* messages(gateway, { "x-api-key": BATCH }, body)
      expect(over.status).toBe(429)
      expect(Number(over.retryAfter)).toBeGreaterThan(0)
      expect(over.body).toMatchObject({
        type: "error",
        error: { type: "rate_limit_error", code: "budget_exceeded", message: expect.stringContaining("daily budget") }
      })
    }).pipe(Effect.scoped)
  )
})
