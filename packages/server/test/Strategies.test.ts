/**
 * The strategies that read live load, each named in a config, through the gateway with the `openai`
 * SDK against simulated upstreams of different latencies, prices and budgets: the traffic split that
 * results. The splits asserted follow from the strategies' rules, not from timing: load is held in
 * place with streams whose first content never comes during the test, and latencies differ by
 * hundreds of milliseconds where they decide.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type OpenAI from "openai"
import type { Gateway } from "./harness.js"
import { eventually, listAttribute, simulatedConfig, startGateway } from "./harness.js"

/** One chat request through the SDK; resolves to the upstream that served it. */
const ask = (client: OpenAI, content = "Hi", fields: { system?: string; max_tokens?: number } = {}) =>
  Effect.promise(() =>
    client.chat.completions
      .create({
        model: "gpt-4o-mini",
        messages: [
          ...(fields.system === undefined ? [] : [{ role: "system" as const, content: fields.system }]),
          { role: "user" as const, content }
        ],
        ...(fields.max_tokens === undefined ? {} : { max_tokens: fields.max_tokens })
      })
      .withResponse()
      .then(({ response }) => response.headers.get("x-sluice-upstream") ?? "none")
  )

/** One streamed request read to its end; resolves to the upstream that served it. */
const askStream = (client: OpenAI) =>
  Effect.promise(async () => {
    const { data, response } = await client.chat.completions
      .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], stream: true })
      .withResponse()
    for await (const _ of data) {
      // read to the end
    }
    return response.headers.get("x-sluice-upstream") ?? "none"
  })

/** `count` requests one after another (nothing else in flight at each selection). */
const inTurn = (count: number, one: () => Effect.Effect<string>) =>
  Effect.gen(function* () {
    const served: Array<string> = []
    for (let i = 0; i < count; i++) served.push(yield* one())
    return served
  })

const countOf = (served: ReadonlyArray<string>, id: string) => served.filter((s) => s === id).length

/**
 * Opens a stream that stays in flight for the rest of the test (its upstream's first content is a
 * minute away) and returns the upstream it went to, once that upstream has received it. Aborted when
 * the test's scope closes.
 */
const hold = (gateway: Gateway, ids: ReadonlyArray<string>, maxTokens: number) =>
  Effect.gen(function* () {
    const before = ids.map((id) => gateway.simulator(id).requests().length)
    const controller = new AbortController()
    yield* Effect.addFinalizer(() => Effect.sync(() => controller.abort()))
    gateway.client.chat.completions
      .create(
        { model: "gpt-4o-mini", messages: [{ role: "user", content: "long" }], stream: true, max_tokens: maxTokens },
        { signal: controller.signal }
      )
      .catch(() => undefined)
    return yield* eventually(() => ids.find((id, i) => gateway.simulator(id).requests().length > before[i]!))
  })

/** Upstreams whose streams take a minute to their first content (whole answers come at once). */
const holding = (ids: ReadonlyArray<string>) => ids.map((id) => ({ id, simulate: { ttftMs: 60_000 } }))

const pool = (strategy: string, upstreams: ReadonlyArray<string>, fields: Record<string, unknown> = {}) => ({
  id: "chat",
  models: ["gpt-4o-mini"],
  upstreams,
  strategy,
  maxAttempts: 1,
  ...fields
})

/** The gateway over `upstreams` (simulated), in one pool using `strategy`. */
const gatewayWith = (
  strategy: string,
  upstreams: ReadonlyArray<{ readonly id: string; readonly [key: string]: unknown }>,
  fields: Record<string, unknown> = {}
) =>
  startGateway(
    simulatedConfig(upstreams, [
      pool(
        strategy,
        upstreams.map((u) => u.id),
        fields
      )
    ])
  )

/** The gateway over `upstreams` using `strategy`, and the upstreams that served `count` requests in turn. */
const split = (
  strategy: string,
  upstreams: ReadonlyArray<{ readonly id: string; readonly [key: string]: unknown }>,
  count: number,
  fields: Record<string, unknown> = {}
) =>
  Effect.gen(function* () {
    const gateway = yield* gatewayWith(strategy, upstreams, fields)
    return { gateway, served: yield* inTurn(count, () => ask(gateway.client)) }
  })

describe("strategies that read live load, named in a config, through the gateway with the openai SDK", () => {
  it.live("least-connections: while a stream is in flight on one upstream, every other request goes to the other", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith("least-connections", holding(["a", "b"]))
      const busy = yield* hold(gateway, ["a", "b"], 16)
      const served = yield* inTurn(8, () => ask(gateway.client))
      expect(served).toEqual(Array(8).fill(busy === "a" ? "b" : "a"))
      const route = gateway.routes().at(-1)
      const scores = busy === "a" ? ["a=2", "b=1"] : ["a=1", "b=2"]
      expect(listAttribute(route, "sluice.strategy.scores")).toEqual(scores)
      // The attempt's own span carries the scores its upstream was chosen by.
      const attempt = gateway
        .spans()
        .filter((span) => span.name === "sluice.attempt")
        .at(-1)
      expect(listAttribute(attempt?.attributes, "sluice.strategy.scores")).toEqual(scores)
    }).pipe(Effect.scoped)
  )

  it.live("least-tokens: one long generation in flight outweighs two short streams on the other upstream", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith("least-tokens", holding(["a", "b"]))
      const long = yield* hold(gateway, ["a", "b"], 8000)
      const other = long === "a" ? "b" : "a"
      // Least connections would now send the next stream to the long one's upstream; tokens say otherwise.
      expect(yield* hold(gateway, ["a", "b"], 10)).toBe(other)
      expect(yield* hold(gateway, ["a", "b"], 10)).toBe(other)
      expect(yield* inTurn(5, () => ask(gateway.client, "Hi", { max_tokens: 10 }))).toEqual(Array(5).fill(other))
    }).pipe(Effect.scoped)
  )

  it.live("latency: whole answers go to the upstream that answers fast, streams to the one first with content", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith("latency", [
        { id: "answers-fast", simulate: { latencyMs: 0, ttftMs: 400 } },
        { id: "streams-fast", simulate: { latencyMs: 400, ttftMs: 0 } }
      ])
      // Each upstream is tried once while it has no sample; then the faster one serves.
      const answers = yield* inTurn(12, () => ask(gateway.client))
      expect(countOf(answers, "streams-fast")).toBeLessThanOrEqual(1)
      const streams = yield* inTurn(12, () => askStream(gateway.client))
      expect(countOf(streams, "answers-fast")).toBeLessThanOrEqual(1)
    }).pipe(Effect.scoped)
  )

  it.live("p2c: the slow upstream gets its one sample, then the fast one serves", () =>
    Effect.gen(function* () {
      const { gateway, served } = yield* split(
        "p2c",
        [
          { id: "fast", simulate: { latencyMs: 0 } },
          { id: "slow", simulate: { latencyMs: 400 } }
        ],
        16
      )
      expect(countOf(served, "slow")).toBeLessThanOrEqual(2)
      expect(listAttribute(gateway.routes().at(-1), "sluice.strategy.scores")).toHaveLength(2)
    }).pipe(Effect.scoped)
  )

  it.live("cost: the cheapest upstream that reaches the pool's minQuality serves every request", () =>
    Effect.gen(function* () {
      const { gateway, served } = yield* split(
        "cost",
        [
          { id: "cheap", quality: 0.5, pricing: { inputPerMillion: 0.1, outputPerMillion: 0.4 } },
          { id: "good", quality: 0.8, pricing: { inputPerMillion: 2.5, outputPerMillion: 10 } },
          { id: "best", quality: 0.95, pricing: { inputPerMillion: 15, outputPerMillion: 60 } }
        ],
        6,
        { cost: { minQuality: 0.7 } }
      )
      expect(served).toEqual(Array(6).fill("good"))
      const scores = listAttribute(gateway.routes().at(-1), "sluice.strategy.scores")
      expect(scores.map((s) => s.split("=")[0])).toEqual(["cheap", "good", "best"])
      expect(scores[0]).toBe("cheap=Infinity")
    }).pipe(Effect.scoped)
  )

  it.live("headroom: requests follow the RPM budgets, 1 to 3, so both drain at the same pace", () =>
    Effect.gen(function* () {
      const { gateway, served } = yield* split(
        "headroom",
        [
          { id: "small", limits: { rpm: 6 } },
          { id: "large", limits: { rpm: 18 } }
        ],
        16
      )
      // The shares left stay within one request of each other: small takes 4 of 16, give or take one.
      expect(countOf(served, "small")).toBeGreaterThanOrEqual(3)
      expect(countOf(served, "small")).toBeLessThanOrEqual(5)
      expect(gateway.simulator("small").stats().rateLimited + gateway.simulator("large").stats().rateLimited).toBe(0)
    }).pipe(Effect.scoped)
  )

  it.live("consistent-hash: every request with the same system prompt goes to the same upstream", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith("consistent-hash", [{ id: "a" }, { id: "b" }, { id: "c" }], {
        consistentHash: { epsilon: 0.5 }
      })
      const homes = new Set<string>()
      for (let prompt = 0; prompt < 8; prompt++) {
        const system = `You are assistant number ${prompt}.`
        let question = 0
        const served = yield* inTurn(3, () => ask(gateway.client, `question ${question++}`, { system }))
        expect(new Set(served).size).toBe(1)
        homes.add(served[0]!)
      }
      expect(homes.size).toBeGreaterThan(1)
    }).pipe(Effect.scoped)
  )
})
