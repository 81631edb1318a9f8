import { describe, expect, it } from "@effect/vitest"
import { CircuitBreaker, Topology } from "@sluice/core"
import { Effect, Fiber } from "effect"
import type OpenAI from "openai"
import { APIError } from "openai"
import type { Gateway } from "./harness.js"
import { listAttribute, simulatedConfig, startGateway, streamed } from "./harness.js"

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)
const settle = <A>(f: () => Promise<A>) =>
  Effect.promise(() =>
    f().then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error })
    )
  )
const sleep = (ms: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, ms)))

/** One non-streaming chat request through the SDK; what the decision headers say about it. */
const ask = (client: OpenAI, headers: Record<string, string> = {}) =>
  promise(() =>
    client.chat.completions
      .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] }, { headers })
      .withResponse()
      .then(({ response }) => ({
        upstream: response.headers.get("x-sluice-upstream"),
        pool: response.headers.get("x-sluice-pool"),
        attempts: Number(response.headers.get("x-sluice-attempts"))
      }))
  )

/** The circuit-breaker transitions of `upstream` recorded on the finished spans, oldest first. */
const transitions = (gateway: Gateway, upstream: string) =>
  gateway
    .spans()
    .flatMap((span) => span.events)
    .filter(
      (event) =>
        event.name === "sluice.circuit_breaker.transition" && event.attributes?.["sluice.upstream"] === upstream
    )
    .sort((a, b) => a.time[0] - b.time[0] || a.time[1] - b.time[1])
    .map((event) => event.attributes?.["sluice.circuit_breaker.state"])

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

  it.live(
    "opens a breaker after 2 failures and stops calling the upstream, admits one half-open probe after recoveryMs, and closes when it succeeds",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          simulatedConfig(
            [
              {
                id: "flaky",
                simulate: { failureRate: 1 },
                circuitBreaker: { failureThreshold: 2, recoveryMs: 500, windowMs: 60_000, halfOpenProbes: 1 }
              },
              { id: "steady" }
            ],
            [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["flaky", "steady"] }]
          )
        )
        const flaky = gateway.simulator("flaky")
        // The breaker as the admin API reads it, from the gateway's own layer.
        const breaker = gateway.service(CircuitBreaker.CircuitBreaker)
        const upstream = gateway.service(Topology.Topology).upstreams.get("flaky")!
        const breakerState = breaker.snapshot(upstream)
        expect((yield* breakerState).state).toBe("closed")

        // Two failures on "flaky" (each request still served by "steady"): the breaker opens.
        expect(yield* ask(gateway.client)).toMatchObject({ upstream: "steady", attempts: 2 })
        expect(yield* ask(gateway.client)).toMatchObject({ upstream: "steady", attempts: 2 })
        expect(flaky.stats().requests).toBe(2)
        expect((yield* breakerState).state).toBe("open")

        // Open: "flaky" is not called at all, and the decision says why.
        for (let i = 0; i < 3; i++)
          expect(yield* ask(gateway.client)).toMatchObject({ upstream: "steady", attempts: 1 })
        expect(flaky.stats().requests).toBe(2)
        const excluded = listAttribute(gateway.routes().at(-1), "sluice.decision.excluded")
        expect(excluded.some((e) => e.startsWith("flaky: circuit-breaker: circuit open after 2 failures"))).toBe(true)

        // The upstream recovers (slowly, so the probe is observably in flight). After recoveryMs the
        // first request is the probe; while it is out, the one probe slot is taken.
        flaky.setOptions({ failureRate: 0, latencyMs: 600 })
        yield* sleep(550)
        const probe = yield* Effect.fork(ask(gateway.client))
        yield* sleep(150)
        expect(yield* breakerState).toMatchObject({ state: "half-open", probesInFlight: 1 })
        expect(yield* ask(gateway.client)).toMatchObject({ upstream: "steady", attempts: 1 })
        expect(listAttribute(gateway.routes().at(-1), "sluice.decision.excluded")).toContain(
          "flaky: circuit-breaker: circuit half-open, probe in flight"
        )
        expect(flaky.stats().requests).toBe(3)

        // The probe succeeds: the breaker closes and "flaky" takes traffic again.
        expect(yield* Fiber.join(probe)).toMatchObject({ upstream: "flaky", attempts: 1 })
        expect(yield* breakerState).toMatchObject({ state: "closed", probesInFlight: 0 })
        expect(yield* ask(gateway.client)).toMatchObject({ upstream: "flaky", attempts: 1 })
        expect(flaky.stats().requests).toBe(4)
        // The trace records every step, in order.
        expect(transitions(gateway, "flaky")).toEqual(["open", "half-open", "closed"])
      }).pipe(Effect.scoped)
  )

  it.live(
    "reopens a half-open breaker when its probe fails, excludes the upstream for another recoveryMs, then probes again",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          simulatedConfig(
            [
              {
                id: "flaky",
                simulate: { failureRate: 1 },
                circuitBreaker: { failureThreshold: 1, recoveryMs: 300, windowMs: 60_000 }
              },
              { id: "steady" }
            ],
            [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["flaky", "steady"] }]
          )
        )
        const flaky = gateway.simulator("flaky")
        expect(yield* ask(gateway.client)).toMatchObject({ upstream: "steady", attempts: 2 })
        yield* sleep(350)
        // The probe fails (still broken): served by "steady" on a second attempt, and the breaker reopens.
        expect(yield* ask(gateway.client)).toMatchObject({ upstream: "steady", attempts: 2 })
        expect(flaky.stats().requests).toBe(2)
        expect(yield* ask(gateway.client)).toMatchObject({ upstream: "steady", attempts: 1 })
        expect(flaky.stats().requests).toBe(2)
        const excluded = listAttribute(gateway.routes().at(-1), "sluice.decision.excluded")
        expect(
          excluded.some((e) => e.startsWith("flaky: circuit-breaker: circuit open after a failed half-open probe"))
        ).toBe(true)
        // Another recoveryMs later the next probe finds it recovered.
        flaky.setOptions({ failureRate: 0 })
        yield* sleep(350)
        expect(yield* ask(gateway.client)).toMatchObject({ upstream: "flaky", attempts: 1 })
        expect(transitions(gateway, "flaky")).toEqual(["open", "half-open", "open", "half-open", "closed"])
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

  it.live("runs http health checks through the gateway's HTTP client and excludes an upstream that fails them", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [
            {
              id: "checked",
              healthCheck: {
                type: "http",
                path: "/no-such-endpoint",
                intervalMs: 50,
                timeoutMs: 500,
                unhealthyThreshold: 1,
                healthyThreshold: 1
              }
            },
            { id: "spare" }
          ],
          [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["checked", "spare"] }]
        )
      )
      yield* sleep(200)
      expect(yield* ask(gateway.client)).toMatchObject({ upstream: "spare", attempts: 1 })
      const excluded = listAttribute(gateway.routes().at(-1), "sluice.decision.excluded")
      expect(excluded.some((e) => /^checked: health: unhealthy: .*expected status 200, got 404/.test(e))).toBe(true)
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
      const first = (yield* ask(gateway.client, session)).upstream!
      for (let i = 0; i < 5; i++) expect((yield* ask(gateway.client, session)).upstream).toBe(first)
      // Without a session key round robin spreads requests.
      const spread = new Set<string | null>()
      for (let i = 0; i < 3; i++) spread.add((yield* ask(gateway.client)).upstream)
      expect(spread.size).toBe(3)
      expect(gateway.routes().at(-4)?.["sluice.sticky"]).toBe("hit")
      // The sticky upstream fails: the request goes elsewhere and the session follows it.
      gateway.simulator(first).setOptions({ failureRate: 1 })
      const moved = (yield* ask(gateway.client, session)).upstream!
      expect(moved).not.toBe(first)
      gateway.simulator(first).setOptions({ failureRate: 0 })
      expect((yield* ask(gateway.client, session)).upstream).toBe(moved)
    }).pipe(Effect.scoped)
  )

  it.live("keeps each client API key on its own upstream with sticky key api-key", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "one" }, { id: "two" }, { id: "three" }],
          [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["one", "two", "three"], sticky: { key: "api-key" } }]
        )
      )
      const alice = gateway.clientWith("sk-alice-0123456789")
      const bob = gateway.clientWith("sk-bob-9876543210")
      const aliceAt = (yield* ask(alice)).upstream
      const bobAt = (yield* ask(bob)).upstream
      // A new key is placed by round robin, so the two start on different upstreams...
      expect(bobAt).not.toBe(aliceAt)
      // ...and interleaved, each stays on its own (round robin alone would rotate them).
      for (let i = 0; i < 3; i++) {
        expect((yield* ask(alice)).upstream).toBe(aliceAt)
        expect(gateway.routes().at(-1)?.["sluice.sticky"]).toBe("hit")
        expect((yield* ask(bob)).upstream).toBe(bobAt)
        expect(gateway.routes().at(-1)?.["sluice.sticky"]).toBe("hit")
      }
      expect(gateway.simulator(aliceAt!).stats().requests + gateway.simulator(bobAt!).stats().requests).toBe(8)
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
      const result = yield* streamed(gateway.client)
      expect(result.error).toBeUndefined()
      expect(result.upstream).toBe("streams")
      expect(result.content.startsWith("[streams]")).toBe(true)
      expect(result.finishReason).toBe("stop")
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
      const startedAt = Date.now()
      const result = yield* streamed(gateway.client)
      expect(result.error).toBeUndefined()
      expect(result.upstream).toBe("prompt")
      expect(result.content.startsWith("[prompt]")).toBe(true)
      expect(result.finishReason).toBe("stop")
      // Given up after the 200 ms first-chunk timeout, not after the upstream's 5 s.
      expect(Date.now() - startedAt).toBeLessThan(2_000)
      expect(gateway.simulator("silent").stats().requests).toBe(1)
    }).pipe(Effect.scoped)
  )

  it.live("ends a stream that stalls between chunks with an in-band error the SDK raises, never a silent end", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [
            { id: "slow", simulate: { tokensPerSecond: 2, completionTokens: 10 }, stream: { interChunkTimeoutMs: 150 } }
          ],
          [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["slow"] }]
        )
      )
      const result = yield* streamed(gateway.client)
      expect(result.upstream).toBe("slow")
      // Content reached the client first, then the SDK raised the error event; no chunk said "finished".
      expect(result.content.startsWith("[slow]")).toBe(true)
      expect(result.finishReason).toBeNull()
      expect(result.error).toBeInstanceOf(APIError)
      expect((result.error as APIError).message).toContain("stream stalled: no event within 150 ms")
      // The SDK stops reading at the error event, so whether a `[DONE]` follows it can only be seen in
      // the raw body, which `asResponse()` hands over unparsed.
      const raw = yield* promise(() =>
        gateway.client.chat.completions
          .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], stream: true })
          .asResponse()
          .then((response) => response.text())
      )
      expect(raw).not.toContain("[DONE]")
      const events = raw.split("\n\n").filter((e) => e !== "")
      expect(events.length).toBeGreaterThan(1)
      expect(JSON.parse(events.at(-1)!.replace(/^data: /, ""))).toMatchObject({
        error: { message: expect.stringContaining("stream stalled: no event within 150 ms") }
      })
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
