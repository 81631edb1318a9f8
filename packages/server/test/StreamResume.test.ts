/**
 * A pool's `stream.resume` through the gateway with the `openai` SDK: an upstream that breaks off
 * mid-stream is continued by one that can continue an assistant message (Claude-, Ollama- or
 * vLLM-shaped) from the text already sent, and the client reads one uninterrupted stream; without an
 * upstream that can continue, the in-band error stays.
 */
import { describe, expect, it } from "@effect/vitest"
import { Simulator } from "@sluice/providers"
import { Effect } from "effect"
import { simulatedConfig, startGateway, streamed } from "./harness.js"

const TOKEN = "adm-token-0123456789abcdef"

/** A pool of `gpt`, which breaks off mid-stream every time, then `next` (an upstream's config). */
const gatewayWith = (resume: boolean, next: Record<string, unknown> & { readonly id: string }) =>
  startGateway(
    simulatedConfig(
      [
        // Breaks off after two or three words, every time.
        { id: "gpt", priority: 0, simulate: { completionTokens: 8, midStreamCutRate: 1 } },
        { priority: 1, ...next }
      ],
      [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["gpt", next.id], stream: { resume } }],
      { admin: { tokenEnv: "SLUICE_TEST_ADMIN_TOKEN" } }
    ),
    { env: { SLUICE_TEST_ADMIN_TOKEN: TOKEN } }
  )

/**
 * Streams one chat through `gateway`, which is expected to be cut on `gpt` and continued on `next`:
 * checks the client read one stream of the text sent and then `next`'s answer, and that the decision
 * tells both; gives the text `gpt` had sent.
 */
const resumedOn = (gateway: Effect.Effect.Success<ReturnType<typeof gatewayWith>>, next: string) =>
  Effect.gen(function* () {
    const result = yield* streamed(gateway.client)
    expect(result.error).toBeUndefined()
    expect(result.upstream).toBe("gpt")
    expect(result.finishReason).toBe("stop")
    const sent = /^\[gpt\] lorem( ipsum)?/.exec(result.content)?.[0]
    expect(sent).toBeDefined()
    expect(result.content).toBe(`${sent}[${next}] lorem ipsum`)
    // One decision tells both: the break, and who continued.
    const decision = yield* lastDecision(gateway.url)
    expect(decision).toMatchObject({
      upstream: next,
      outcome: "success",
      resumed: [{ upstream: next, afterChars: sent!.length }],
      attempts: [
        { upstream: "gpt", outcome: "failure" },
        { upstream: next, outcome: "success" }
      ]
    })
    return sent!
  })

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
      const gateway = yield* gatewayWith(true, {
        id: "claude",
        simulate: { completionTokens: 3, dialect: "anthropic" }
      })
      const sent = yield* resumedOn(gateway, "claude")
      // Claude was asked to continue the text the client had, as an assistant prefill.
      expect(gateway.simulator("claude").requests().at(-1)?.body).toMatchObject({
        messages: [
          { role: "user", content: "Hi" },
          { role: "assistant", content: sent }
        ]
      })
    }).pipe(Effect.scoped)
  )

  it.live(
    "continues a stream cut mid-way on a native Ollama upstream, the text sent as the final assistant message",
    () =>
      Effect.gen(function* () {
        const gateway = yield* gatewayWith(true, { id: "local", simulate: { completionTokens: 3, dialect: "ollama" } })
        const sent = yield* resumedOn(gateway, "local")
        // /api/chat continues a final assistant message; OpenAI's flags for it are not Ollama's.
        const body = gateway.simulator("local").requests().at(-1)?.body as Record<string, unknown>
        expect(body).toMatchObject({
          stream: true,
          messages: [
            { role: "user", content: "Hi" },
            { role: "assistant", content: sent }
          ]
        })
        expect(body).not.toHaveProperty("continue_final_message")
        expect(body).not.toHaveProperty("add_generation_prompt")
      }).pipe(Effect.scoped)
  )

  it.live("continues a stream cut mid-way on a vLLM upstream with continue_final_message", () =>
    Effect.gen(function* () {
      const vllm = yield* Simulator.start({ name: "vllm", completionTokens: 3 })
      const gateway = yield* gatewayWith(true, { id: "vllm", provider: "vllm", baseUrl: `${vllm.url}/v1` })
      const sent = yield* resumedOn(gateway, "vllm")
      // vLLM continues the final assistant message only when told to, and without a generation prompt.
      expect(vllm.requests().at(-1)?.body).toMatchObject({
        messages: [
          { role: "user", content: "Hi" },
          { role: "assistant", content: sent }
        ],
        continue_final_message: true,
        add_generation_prompt: false
      })
    }).pipe(Effect.scoped)
  )

  it.live("keeps the in-band error when no upstream of the pool can continue a prefix", () =>
    Effect.gen(function* () {
      // An OpenAI-shaped upstream answers after an assistant message rather than continuing it.
      const gateway = yield* gatewayWith(true, { id: "claude", simulate: { completionTokens: 3 } })
      const result = yield* streamed(gateway.client)
      expect(result.error).toBeDefined()
      expect(result.content).toMatch(/^\[gpt\] lorem/)
      expect(gateway.simulator("claude").stats().requests).toBe(0)
    }).pipe(Effect.scoped)
  )
})
