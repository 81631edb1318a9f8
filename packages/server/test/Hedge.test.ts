import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { ServerResponse } from "node:http"
import { eventually, simulatedConfig, startGateway, startUpstream } from "./harness.js"

/** A stream chunk of `content`, as an OpenAI-compatible upstream writes it. */
const sseChunk = (content: string) =>
  `data: ${JSON.stringify({
    id: "c",
    object: "chat.completion.chunk",
    created: 1,
    model: "m",
    choices: [{ index: 0, delta: { content }, finish_reason: null }]
  })}\n\n`

/** Streams `content` after `ms` (and nothing once the gateway has hung up). */
const streamAfter = (ms: number, content: string) => (response: ServerResponse) =>
  setTimeout(() => {
    if (response.destroyed) return
    response.writeHead(200, { "content-type": "text/event-stream" })
    response.end(`${sseChunk(content)}data: [DONE]\n\n`)
  }, ms)

/** Answers 500 after `ms`. */
const failAfter = (ms: number) => (response: ServerResponse) =>
  setTimeout(() => {
    if (response.destroyed) return
    response.writeHead(500, { "content-type": "application/json" })
    response.end(JSON.stringify({ error: { message: "down", type: "server_error" } }))
  }, ms)

/** Every hedge metric of the gateway's `/metrics`, once `count` lines of them are there. */
const hedgeLines = (url: string, count: number) =>
  Effect.promise(async () => {
    for (let i = 0; ; i++) {
      const text = await fetch(`${url}/metrics`).then((r) => r.text())
      const lines = text.split("\n").filter((line) => line.startsWith("sluice_hedges_"))
      if (lines.length === count || i === 100) return lines
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  })

/** A chat stream through the gateway with the openai SDK: its text and the answer's headers. */
const streamed = (gateway: { readonly client: Gateway["client"] }) =>
  Effect.promise(async () => {
    const { data, response } = await gateway.client.chat.completions
      .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], stream: true })
      .withResponse()
    let text = ""
    for await (const chunk of data) text += chunk.choices[0]?.delta.content ?? ""
    return { content: text, headers: response.headers }
  })

type Gateway = Effect.Effect.Success<ReturnType<typeof startGateway>>

describe("hedged streams through the gateway, with the openai SDK", () => {
  it.live(
    "hedges a stream whose first token is late: the other upstream's answer reaches the client, the slow one is cancelled, and the headers and trace say so",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          simulatedConfig(
            [
              { id: "slow", simulate: { ttftMs: 10_000, completionTokens: 4 } },
              { id: "quick", simulate: { completionTokens: 4 } },
              { id: "late", simulate: { ttftMs: 300, completionTokens: 4 } }
            ],
            [
              {
                id: "chat",
                models: ["gpt-4o-mini"],
                strategy: "priority",
                upstreams: ["slow", "quick"],
                hedge: { afterMs: 50, maxExtraPercent: 100 }
              },
              {
                // Its hedge goes to the slow upstream and loses to the late one.
                id: "steady",
                models: ["gpt-4o"],
                strategy: "priority",
                upstreams: ["late", "slow"],
                hedge: { afterMs: 50, maxExtraPercent: 100 }
              }
            ]
          )
        )
        const { content, headers } = yield* streamed(gateway)
        expect(content).toBe("[quick] lorem ipsum dolor")
        expect(headers.get("x-sluice-upstream")).toBe("quick")
        expect(headers.get("x-sluice-attempts")).toBe("2")
        expect(headers.get("x-sluice-hedged")).toBe("true")
        expect(headers.get("x-sluice-hedge-loser")).toBe("slow")
        // The slow upstream got the request, and gave nothing: the gateway hung up on it.
        expect(gateway.simulator("slow").stats().requests).toBe(1)
        const route = yield* eventually(() => gateway.routes()[0])
        expect(route).toMatchObject({
          "sluice.upstream": "quick",
          "sluice.hedged": true,
          "sluice.hedge.upstream": "quick",
          "sluice.hedge.loser": "slow",
          "sluice.hedge.reason": "slower to first content; cancelled",
          "sluice.outcome": "success"
        })
        const steady = yield* Effect.promise(async () => {
          const { data, response } = await gateway.client.chat.completions
            .create({ model: "gpt-4o", messages: [{ role: "user", content: "Hi" }], stream: true })
            .withResponse()
          for await (const _ of data) void _
          return response.headers
        })
        expect(steady.get("x-sluice-upstream")).toBe("late")
        expect(steady.get("x-sluice-hedge-loser")).toBe("slow")
        // Counted by pool: in `chat` one hedge started, won, and the slow attempt was cancelled; in
        // `steady` one started and was itself cancelled, winning nothing.
        // A decision is counted once its stream has ended on the gateway's side: scraped until both are.
        const hedges = yield* Effect.promise(async () => {
          for (let i = 0; ; i++) {
            const text = await fetch(`${gateway.url}/metrics`).then((r) => r.text())
            const lines = text.split("\n").filter((line) => line.startsWith("sluice_hedges_"))
            if (lines.length === 5 || i === 100) return lines
            await new Promise((resolve) => setTimeout(resolve, 10))
          }
        })
        expect(hedges).toEqual([
          'sluice_hedges_cancelled_total{pool="chat"} 1',
          'sluice_hedges_cancelled_total{pool="steady"} 1',
          'sluice_hedges_started_total{pool="chat"} 1',
          'sluice_hedges_started_total{pool="steady"} 1',
          'sluice_hedges_won_total{pool="chat"} 1'
        ])
      }).pipe(Effect.scoped)
  )

  it.live(
    "counts both hedges of a request whose first race failed entirely and whose next attempt was hedged again",
    () =>
      Effect.gen(function* () {
        // `a` serves its first stream at once (a request the budget counts), then fails.
        let calls = 0
        const handlers = {
          a: (response: ServerResponse) => (calls++ === 0 ? streamAfter(0, "a") : failAfter(150))(response),
          b: failAfter(150),
          c: streamAfter(5_000, "c"),
          d: streamAfter(0, "d")
        }
        const upstreams = []
        for (const [id, handle] of Object.entries(handlers)) {
          const { baseUrl } = yield* startUpstream((_request, _body, response) => void handle(response))
          upstreams.push({ id, provider: "openai-compatible", baseUrl })
        }
        const gateway = yield* startGateway(
          simulatedConfig(upstreams, [
            {
              id: "chat",
              models: ["gpt-4o-mini"],
              strategy: "priority",
              upstreams: ["a", "b", "c", "d"],
              maxAttempts: 4,
              // Two requests leave room for two hedges.
              hedge: { afterMs: 50, maxExtraPercent: 100 }
            }
          ])
        )
        const stream = streamed(gateway)
        expect((yield* stream).content).toBe("a")
        const { content, headers } = yield* stream
        // a, hedged by b: both failed; c, hedged by d: d served.
        expect(content).toBe("d")
        expect(headers.get("x-sluice-attempts")).toBe("4")
        expect(headers.get("x-sluice-hedged")).toBe("true")
        expect(headers.get("x-sluice-hedge-loser")).toBe("c")
        const route = yield* eventually(() => gateway.routes()[1])
        expect(route).toMatchObject({ "sluice.hedged": true, "sluice.hedges": 2, "sluice.hedge.upstream": "d" })
        expect(yield* hedgeLines(gateway.url, 3)).toEqual([
          'sluice_hedges_cancelled_total{pool="chat"} 1',
          'sluice_hedges_started_total{pool="chat"} 2',
          'sluice_hedges_won_total{pool="chat"} 1'
        ])
      }).pipe(Effect.scoped)
  )
})
