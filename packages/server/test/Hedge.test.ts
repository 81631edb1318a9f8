import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { eventually, simulatedConfig, startGateway } from "./harness.js"

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
        const { content, headers } = yield* Effect.promise(async () => {
          const { data, response } = await gateway.client.chat.completions
            .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], stream: true })
            .withResponse()
          let text = ""
          for await (const chunk of data) text += chunk.choices[0]?.delta.content ?? ""
          return { content: text, headers: response.headers }
        })
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
})
