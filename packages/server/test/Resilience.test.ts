import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type OpenAI from "openai"
import { APIError } from "openai"
import { listAttribute, simulatedConfig, startGateway } from "./harness.js"

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)
const settle = <A>(f: () => Promise<A>) =>
  Effect.promise(() =>
    f().then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error })
    )
  )
const sleep = (ms: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, ms)))

const ask = (client: OpenAI, init: RequestInit & { headers?: Record<string, string> } = {}) =>
  promise(() =>
    client.chat.completions
      .create(
        { model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] },
        init.headers === undefined ? {} : { headers: init.headers }
      )
      .withResponse()
      .then(({ response }) => ({
        upstream: response.headers.get("x-sluice-upstream"),
        pool: response.headers.get("x-sluice-pool"),
        attempts: Number(response.headers.get("x-sluice-attempts"))
      }))
  )

const rawStream = (url: string, body: Record<string, unknown> = {}) =>
  promise(() =>
    fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], stream: true, ...body })
    }).then(async (r) => ({ status: r.status, upstream: r.headers.get("x-sluice-upstream"), body: await r.text() }))
  )

describe("resilience through the gateway", () => {
  it.live("moves to the fallback pool when every upstream of the pool fails", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "broken", simulate: { failureRate: 1 } }, { id: "spare" }],
          [
            { id: "chat", models: ["gpt-4o-mini"], upstreams: ["broken"], fallback: "backup" },
            { id: "backup", models: ["backup-model"], upstreams: ["spare"] }
          ]
        )
      )
      const served = yield* ask(gateway.client)
      expect(served).toEqual({ upstream: "spare", pool: "backup", attempts: 2 })
      expect(listAttribute(gateway.routes().at(-1), "sluice.pools")).toEqual(["chat", "backup"])
    }).pipe(Effect.scoped)
  )

  it.live("opens a breaker after repeated failures, skips the upstream, probes it half-open and closes again", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [
            {
              id: "flaky",
              simulate: { failureRate: 1 },
              circuitBreaker: { failureThreshold: 2, recoveryMs: 400, windowMs: 60_000 }
            },
            { id: "steady" }
          ],
          [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["flaky", "steady"] }]
        )
      )
      const flaky = gateway.simulator("flaky")
      // Two failures on "flaky" (each request still served by "steady"): the breaker opens.
      expect(yield* ask(gateway.client)).toMatchObject({ upstream: "steady", attempts: 2 })
      expect(yield* ask(gateway.client)).toMatchObject({ upstream: "steady", attempts: 2 })
      const callsWhenOpened = flaky.stats().requests
      // Open: "flaky" is not called at all, and the decision says why.
      expect(yield* ask(gateway.client)).toMatchObject({ upstream: "steady", attempts: 1 })
      expect(flaky.stats().requests).toBe(callsWhenOpened)
      const excluded = listAttribute(gateway.routes().at(-1), "sluice.decision.excluded")
      expect(excluded.some((e) => e.startsWith("flaky: circuit-breaker: circuit open after 2 failures"))).toBe(true)
      // The upstream recovers; after recoveryMs one probe goes through and closes the breaker.
      flaky.setOptions({ failureRate: 0 })
      yield* sleep(450)
      expect(yield* ask(gateway.client)).toMatchObject({ upstream: "flaky", attempts: 1 })
      expect(yield* ask(gateway.client)).toMatchObject({ upstream: "flaky", attempts: 1 })
    }).pipe(Effect.scoped)
  )

  it.live("excludes an upstream whose health checks fail and brings it back when they pass", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [
            {
              id: "sick",
              simulate: { failureRate: 1 },
              healthCheck: {
                type: "inference",
                intervalMs: 50,
                timeoutMs: 500,
                unhealthyThreshold: 1,
                healthyThreshold: 1
              },
              circuitBreaker: { enabled: false }
            },
            { id: "well" }
          ],
          [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["sick", "well"] }]
        )
      )
      yield* sleep(150)
      expect(yield* ask(gateway.client)).toMatchObject({ upstream: "well", attempts: 1 })
      const excluded = listAttribute(gateway.routes().at(-1), "sluice.decision.excluded")
      expect(
        excluded.some((e) =>
          /^sick: health: unhealthy: \d+ failed inference checks? \(last: HTTP 500: simulated upstream failure\)$/.test(
            e
          )
        )
      ).toBe(true)
      gateway.simulator("sick").setOptions({ failureRate: 0 })
      let upstream: string | null = "well"
      for (let i = 0; i < 40 && upstream !== "sick"; i++) {
        yield* sleep(25)
        upstream = (yield* ask(gateway.client)).upstream
      }
      expect(upstream).toBe("sick")
    }).pipe(Effect.scoped)
  )

  it.live("keeps a session on one upstream, and moves the affinity when that upstream cannot serve", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "one" }, { id: "two" }, { id: "three" }],
          [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["one", "two", "three"], sticky: { key: "header" } }]
        )
      )
      const session = { "x-session-id": "conversation-42" }
      const first = (yield* ask(gateway.client, { headers: session })).upstream!
      for (let i = 0; i < 5; i++) expect((yield* ask(gateway.client, { headers: session })).upstream).toBe(first)
      // Without a session key round robin spreads requests.
      const spread = new Set<string | null>()
      for (let i = 0; i < 3; i++) spread.add((yield* ask(gateway.client)).upstream)
      expect(spread.size).toBe(3)
      expect(gateway.routes().at(-4)?.["sluice.sticky"]).toBe("hit")
      // The sticky upstream fails: the request goes elsewhere and the session follows it.
      gateway.simulator(first).setOptions({ failureRate: 1 })
      const moved = (yield* ask(gateway.client, { headers: session })).upstream!
      expect(moved).not.toBe(first)
      gateway.simulator(first).setOptions({ failureRate: 0 })
      expect((yield* ask(gateway.client, { headers: session })).upstream).toBe(moved)
    }).pipe(Effect.scoped)
  )

  it.live("fails a stream over to another upstream when it breaks before the first chunk", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "resets", simulate: { resetRate: 1 } }, { id: "streams" }],
          [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["resets", "streams"] }]
        )
      )
      const result = yield* rawStream(gateway.url)
      expect(result.status).toBe(200)
      expect(result.upstream).toBe("streams")
      expect(result.body.endsWith("data: [DONE]\n\n")).toBe(true)
      expect(gateway.simulator("resets").stats().requests).toBe(1)
    }).pipe(Effect.scoped)
  )

  it.live("treats a stream that stalls before its first chunk as a failure and fails over", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "silent", simulate: { ttftMs: 5_000 }, stream: { firstChunkTimeoutMs: 200 } }, { id: "prompt" }],
          [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["silent", "prompt"] }]
        )
      )
      const result = yield* rawStream(gateway.url)
      expect(result.upstream).toBe("prompt")
      expect(result.body.endsWith("data: [DONE]\n\n")).toBe(true)
    }).pipe(Effect.scoped)
  )

  it.live("ends a stream that stalls between chunks with an in-band error, never a silent end", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [
            { id: "slow", simulate: { tokensPerSecond: 2, completionTokens: 10 }, stream: { interChunkTimeoutMs: 150 } }
          ],
          [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["slow"] }]
        )
      )
      const result = yield* rawStream(gateway.url)
      expect(result.body).toContain('"content"')
      expect(result.body).not.toContain("[DONE]")
      expect(result.body).toContain("stream stalled: no event within 150 ms")
    }).pipe(Effect.scoped)
  )

  it.live("never sends a request to an upstream whose context window it does not fit", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [
            { id: "small", contextWindow: 100 },
            { id: "large", contextWindow: 100_000 }
          ],
          [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["small", "large"] }]
        )
      )
      const long = "lorem ipsum dolor sit amet ".repeat(60)
      const { response } = yield* promise(() =>
        gateway.client.chat.completions
          .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: long }] })
          .withResponse()
      )
      expect(response.headers.get("x-sluice-upstream")).toBe("large")
      expect(gateway.simulator("small").stats().requests).toBe(0)
      const excluded = listAttribute(gateway.routes().at(-1), "sluice.decision.excluded")
      expect(excluded.some((e) => /^small: context-window: needs \d+ tokens, context window is 100$/.test(e))).toBe(
        true
      )
      // Fits nowhere: 400 context_length_exceeded naming the counts.
      const tooBig = yield* settle(() =>
        gateway.client.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: long }],
          max_tokens: 200_000
        })
      )
      const error = (tooBig as { error: APIError }).error
      expect(error).toBeInstanceOf(APIError)
      expect(error.status).toBe(400)
      expect(error.code).toBe("context_length_exceeded")
      expect(error.message).toMatch(
        /needs \d+ tokens \(\d+ in the prompt \+ 200000 for the completion\).*largest context window .* is 100000 tokens/
      )
    }).pipe(Effect.scoped)
  )
})
