/**
 * A pool's `stream.resume` through the gateway with the `openai` SDK: an upstream that breaks off
 * mid-stream is continued by a Claude-shaped one from the text already sent, and the client reads one
 * uninterrupted stream; without an upstream that can continue, the in-band error stays.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { simulatedConfig, startGateway, streamed } from "./harness.js"

const TOKEN = "adm-token-0123456789abcdef"

const gatewayWith = (resume: boolean, claude: Record<string, unknown>) =>
  startGateway(
    simulatedConfig(
      [
        // Breaks off after two or three words, every time.
        { id: "gpt", priority: 0, simulate: { completionTokens: 8, midStreamCutRate: 1 } },
        { id: "claude", priority: 1, simulate: { completionTokens: 3, ...claude } }
      ],
      [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["gpt", "claude"], stream: { resume } }],
      { admin: { tokenEnv: "SLUICE_TEST_ADMIN_TOKEN" } }
    ),
    { env: { SLUICE_TEST_ADMIN_TOKEN: TOKEN } }
  )

/**
 * The newest decision of the audit log, as the admin API tells it, once there is one (a stream's is
 * recorded as it is released, just after its last event went out).
 */
const lastDecision = (url: string) =>
  Effect.promise(async () => {
    for (let i = 0; i < 300; i++) {
      const response = await fetch(`${url}/admin/decisions?limit=1`, { headers: { authorization: `Bearer ${TOKEN}` } })
      const [entry] = (await response.json()) as ReadonlyArray<{ readonly decision: Record<string, unknown> }>
      if (entry !== undefined) return entry.decision
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    throw new Error("no decision recorded")
  })

describe("stream.resume through the gateway", () => {
  it.live("continues a stream cut mid-way on an Anthropic-shaped upstream, as one stream to the client", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith(true, { dialect: "anthropic" })
      const result = yield* streamed(gateway.client)
      expect(result.error).toBeUndefined()
      expect(result.upstream).toBe("gpt")
      expect(result.finishReason).toBe("stop")
      const sent = /^\[gpt\] lorem( ipsum)?/.exec(result.content)?.[0]
      expect(sent).toBeDefined()
      expect(result.content).toBe(`${sent}[claude] lorem ipsum`)
      // One decision tells both: the break, and who continued.
      const decision = yield* lastDecision(gateway.url)
      expect(decision).toMatchObject({
        upstream: "claude",
        outcome: "success",
        resumed: [{ upstream: "claude", afterChars: sent!.length }],
        attempts: [
          { upstream: "gpt", outcome: "failure" },
          { upstream: "claude", outcome: "success" }
        ]
      })
      // Claude was asked to continue the text the client had, as an assistant prefill.
      expect(gateway.simulator("claude").requests().at(-1)?.body).toMatchObject({
        messages: [
          { role: "user", content: "Hi" },
          { role: "assistant", content: sent }
        ]
      })
    }).pipe(Effect.scoped)
  )

  it.live("keeps the in-band error when no upstream of the pool can continue a prefix", () =>
    Effect.gen(function* () {
      // An OpenAI-shaped upstream answers after an assistant message rather than continuing it.
      const gateway = yield* gatewayWith(true, {})
      const result = yield* streamed(gateway.client)
      expect(result.error).toBeDefined()
      expect(result.content).toMatch(/^\[gpt\] lorem/)
      expect(gateway.simulator("claude").stats().requests).toBe(0)
    }).pipe(Effect.scoped)
  )
})
