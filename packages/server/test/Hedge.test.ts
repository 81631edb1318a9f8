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
              { id: "quick", simulate: { completionTokens: 4 } }
            ],
            [
              {
                id: "chat",
                models: ["gpt-4o-mini"],
                strategy: "priority",
                upstreams: ["slow", "quick"],
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
      }).pipe(Effect.scoped)
  )
})
