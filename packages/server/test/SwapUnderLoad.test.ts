/**
 * Config replacement under load: a closed loop of requests and long streams through the gateway
 * while the config is replaced five times (upstreams added, removed, re-weighted).
 */
import { describe, expect, it } from "@effect/vitest"
import type { Config } from "@sluice/core"
import { Router } from "@sluice/core"
import { Effect } from "effect"
import type OpenAI from "openai"
import * as Routing from "../src/Routing.js"
import { listAttribute, simulatedConfig, startGateway } from "./harness.js"

const upstream = (id: string, weight = 1) => ({
  id,
  weight,
  simulate: { latencyMs: 5, ttftMs: 5, completionTokens: 20, tokensPerSecond: 50 }
})

/** One pool over the given upstreams, weighted. */
const configOf = (upstreams: ReadonlyArray<ReturnType<typeof upstream>>): Config.ConfigFile =>
  simulatedConfig(upstreams, [
    {
      id: "chat",
      models: ["gpt-4o-mini"],
      strategy: "weighted",
      upstreams: upstreams.map((u) => u.id),
      queue: { maxSize: 0 }
    }
  ])

interface Answer {
  readonly sentAt: number
  readonly requestId: string | null
  readonly upstream: string | null
  readonly stream: boolean
  readonly complete: boolean
  readonly error: string | undefined
}

const ask = async (client: OpenAI, stream: boolean): Promise<Answer> => {
  const sentAt = performance.now()
  try {
    if (!stream) {
      const { data, response } = await client.chat.completions
        .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
        .withResponse()
      return {
        sentAt,
        requestId: response.headers.get("x-request-id"),
        upstream: response.headers.get("x-sluice-upstream"),
        stream,
        complete: data.choices[0]?.finish_reason === "stop",
        error: undefined
      }
    }
    const { data, response } = await client.chat.completions
      .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], stream: true })
      .withResponse()
    let finish: string | null = null
    for await (const chunk of data) finish = chunk.choices[0]?.finish_reason ?? finish
    return {
      sentAt,
      requestId: response.headers.get("x-request-id"),
      upstream: response.headers.get("x-sluice-upstream"),
      stream,
      complete: finish === "stop",
      error: undefined
    }
  } catch (error) {
    return { sentAt, requestId: null, upstream: null, stream, complete: false, error: String(error) }
  }
}

describe("config replacement under load", () => {
  it.live(
    "answers every request once, completes every stream, and routes nothing to an upstream after its removal",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(configOf([upstream("u1"), upstream("u2")]))
        const routing = gateway.service(Routing.Routing)
        const answers: Array<Answer> = []
        let running = true
        // Closed loops: 6 clients asking whole answers, 4 reading ~0.4 s streams, back to back.
        const loop = (stream: boolean) =>
          (async () => {
            while (running) answers.push(await ask(gateway.client, stream))
          })()
        const loops = [...Array.from({ length: 6 }, () => loop(false)), ...Array.from({ length: 4 }, () => loop(true))]
        const sleep = (ms: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, ms)))
        const removedAt = new Map<string, number>()
        const steps: ReadonlyArray<{ upstreams: ReadonlyArray<ReturnType<typeof upstream>>; removed?: string }> = [
          { upstreams: [upstream("u1"), upstream("u2"), upstream("u3")] },
          { upstreams: [upstream("u2"), upstream("u3")], removed: "u1" },
          { upstreams: [upstream("u2", 5), upstream("u3", 1)] },
          { upstreams: [upstream("u2", 5), upstream("u3", 1), upstream("u4", 2)] },
          { upstreams: [upstream("u3", 1), upstream("u4", 2)], removed: "u2" }
        ]
        yield* sleep(400)
        for (const step of steps) {
          const generation = yield* routing.replace(configOf(step.upstreams))
          if (step.removed !== undefined) removedAt.set(step.removed, performance.now())
          expect(generation.topology.upstreams.has(step.removed ?? "")).toBe(false)
          yield* sleep(400)
        }
        running = false
        yield* Effect.promise(() => Promise.all(loops))

        expect(answers.filter((a) => a.error !== undefined)).toEqual([])
        expect(answers.every((a) => a.complete)).toBe(true)
        const ids = answers.map((a) => a.requestId)
        expect(new Set(ids).size).toBe(answers.length)
        expect(answers.filter((a) => a.stream).length).toBeGreaterThan(10)
        expect(answers.filter((a) => !a.stream).length).toBeGreaterThan(100)
        for (const [removed, at] of removedAt) {
          const late = answers.filter((a) => a.sentAt > at && a.upstream === removed)
          expect(late).toEqual([])
        }
        // Every upstream of the last config served after it was swapped in.
        const last = Math.max(...removedAt.values())
        expect(new Set(answers.filter((a) => a.sentAt > last).map((a) => a.upstream))).toEqual(new Set(["u3", "u4"]))
        expect(routing.current().number).toBe(6)
      }).pipe(Effect.scoped),
    60_000
  )

  it.live("keeps a replaced config running while a stream on it lasts, and closes it when the stream ends", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(configOf([upstream("u1")]))
      const routing = gateway.service(Routing.Routing)
      const router = gateway.service(Router.Router)
      const old = routing.current()
      const stream = yield* router.chatStream({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
      expect(old.inFlight()).toBe(1)
      yield* routing.replace(configOf([upstream("u2")]))
      // The old generation's simulated upstream still serves the stream it started.
      const reachable = (url: string) =>
        Effect.promise(() =>
          fetch(`${url}/health`).then(
            () => true,
            () => false
          )
        )
      expect(yield* reachable(old.simulators[0]!.url)).toBe(true)
      const chunks = yield* Router.collect(stream)
      expect(chunks.length).toBeGreaterThan(1)
      expect(old.inFlight()).toBe(0)
      // Its scope closes once the stream ends: its simulator stops.
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
      expect(yield* reachable(old.simulators[0]!.url)).toBe(false)
      expect(routing.current().inFlight()).toBe(0)
    }).pipe(Effect.scoped)
  )

  it.live("carries the budget used and the breaker of an upstream that remains over a replacement", () =>
    Effect.gen(function* () {
      const limited = (models: ReadonlyArray<string>) =>
        simulatedConfig(
          [
            { id: "kept", limits: { rpm: 2 } },
            { id: "flaky", simulate: { failureRate: 1 }, circuitBreaker: { failureThreshold: 1 } }
          ],
          [
            { id: "chat", models, upstreams: ["kept"], queue: { maxSize: 0 } },
            { id: "flaky", models: ["flaky"], upstreams: ["flaky"] }
          ]
        )
      const gateway = yield* startGateway(limited(["gpt-4o-mini"]))
      const routing = gateway.service(Routing.Routing)
      const ask = (model: string) =>
        Effect.promise(() =>
          gateway.client.chat.completions.create({ model, messages: [{ role: "user", content: "Hi" }] }).then(
            () => 200,
            (e: { status: number }) => e.status
          )
        )
      expect([yield* ask("gpt-4o-mini"), yield* ask("gpt-4o-mini")]).toEqual([200, 200])
      expect(yield* ask("flaky")).toBe(502)
      const next = yield* routing.replace(limited(["gpt-4o-mini", "gpt-4o"]))
      // Two of its two requests a minute are spent: the new config's first request is refused.
      expect(yield* ask("gpt-4o")).toBe(429)
      const flaky = next.topology.upstreams.get("flaky")!
      expect((yield* next.breaker.snapshot(flaky)).state).toBe("open")
    }).pipe(Effect.scoped)
  )
  it.live("carries the health, sticky sessions and learned holds of upstreams that remain over a replacement", () =>
    Effect.gen(function* () {
      const configOf = (stickyOrder: ReadonlyArray<string>) =>
        simulatedConfig(
          [
            // Unhealthy after one failure, for 10 minutes (no active check to bring it back sooner).
            { id: "sick", simulate: { failureRate: 1 }, passiveHealth: { unhealthyAfter: 1, recoveryMs: 600_000 } },
            // Allows 2 requests a minute, which Sluice only learns from its answers' headers.
            { id: "limited", simulate: { rpm: 2 } },
            { id: "one" },
            { id: "two" },
            { id: "spare" }
          ],
          [
            { id: "health", models: ["health"], strategy: "priority", upstreams: ["sick", "spare"] },
            { id: "learned", models: ["learned"], strategy: "priority", upstreams: ["limited", "spare"] },
            {
              id: "sticky",
              models: ["sticky"],
              strategy: "priority",
              upstreams: stickyOrder,
              sticky: { key: "header" }
            }
          ]
        )
      const gateway = yield* startGateway(configOf(["one", "two"]))
      const routing = gateway.service(Routing.Routing)
      const ask = (model: string, session?: string) =>
        Effect.promise(() =>
          gateway.client.chat.completions
            .create(
              { model, messages: [{ role: "user", content: "Hi" }] },
              session === undefined ? {} : { headers: { "x-session-id": session } }
            )
            .withResponse()
            .then(({ response }) => response.headers.get("x-sluice-upstream"))
        )
      // Before: "sick" fails once and is marked unhealthy; "limited" reports its last request spent;
      // session "kept" is bound to "one", the first in order.
      expect(yield* ask("health")).toBe("spare")
      expect(yield* ask("learned")).toBe("limited")
      expect(yield* ask("learned")).toBe("limited")
      expect(yield* ask("sticky", "kept")).toBe("one")
      // The new config puts "two" first: a new session goes there, the bound one stays on "one".
      const next = yield* routing.replace(configOf(["two", "one"]))
      expect(next.number).toBe(2)
      expect(yield* ask("sticky", "fresh")).toBe("two")
      expect(yield* ask("sticky", "kept")).toBe("one")
      expect(gateway.routes().at(-1)?.["sluice.sticky"]).toBe("hit")
      // The new generation's simulators are never called by an upstream held back by the old one's state.
      expect(yield* ask("health")).toBe("spare")
      expect(
        listAttribute(gateway.routes().at(-1), "sluice.decision.excluded").some((e) =>
          e.startsWith("sick: health: unhealthy")
        )
      ).toBe(true)
      expect(yield* ask("learned")).toBe("spare")
      expect(
        listAttribute(gateway.routes().at(-1), "sluice.decision.excluded").some((e) =>
          e.startsWith("limited: rate-limiter: ")
        )
      ).toBe(true)
      const simulatorOf = (id: string) => next.simulators.find((s) => s.upstream === id)!.simulator
      expect(simulatorOf("sick").stats().requests).toBe(0)
      expect(simulatorOf("limited").stats().requests).toBe(0)
      expect((yield* next.health.status("sick")).healthy).toBe(false)
      const ready = yield* routing.readiness
      expect(ready.pools["health"]).toEqual(["spare"])
    }).pipe(Effect.scoped)
  )
})
