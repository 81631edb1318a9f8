import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { APIError } from "openai"
import { simulatedConfig, startGateway, streamed } from "./harness.js"

const hi = [{ role: "user" as const, content: "Hi" }]

/** The whole SSE text of one streaming request, as the gateway wrote it. */
const rawStream = (url: string) =>
  Effect.promise(() =>
    fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-4o-mini", messages: hi, stream: true })
    }).then((r) => r.text())
  )

describe("stream events the upstream mangles, through the gateway with the openai SDK", () => {
  it.live(
    "ends the stream with an in-band error the SDK raises as an API error when an event after content is not JSON",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          simulatedConfig(
            [{ id: "mangled", simulate: { completionTokens: 10, malformedEventRate: 1, malformedEventAfter: 2 } }],
            [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["mangled"] }]
          )
        )
        const result = yield* streamed(gateway.client)
        expect(result.content).toBe("[mangled] lorem")
        expect(result.finishReason).toBeNull()
        expect(result.error).toBeInstanceOf(APIError)
        expect((result.error as APIError).message).toMatch(/upstream 'mangled' failed: .*malformed stream event/)
        const raw = yield* rawStream(gateway.url)
        expect(raw).not.toContain("[DONE]")
        // Nothing after the broken event is relayed: the stream cannot be trusted past it.
        expect(raw).not.toContain(" ipsum")
        const events = raw.split("\n\n").filter((event) => event !== "")
        for (const event of events) expect(() => JSON.parse(event.replace(/^data: /, ""))).not.toThrow()
        expect(events.at(-1)).toMatch(/^data: \{"error":\{"message":"upstream 'mangled' failed: /)
      }).pipe(Effect.scoped)
  )

  it.live(
    "fails over to another upstream when an event before any content is not JSON, and the client sees a clean stream",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          simulatedConfig(
            [
              { id: "mangled", simulate: { completionTokens: 5, malformedEventRate: 1, malformedEventAfter: 0 } },
              { id: "good", simulate: { completionTokens: 5 } }
            ],
            [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["mangled", "good"] }]
          )
        )
        const result = yield* streamed(gateway.client)
        expect(result.error).toBeUndefined()
        expect(result.upstream).toBe("good")
        expect(result.content).toBe("[good] lorem ipsum dolor sit")
        expect(result.finishReason).toBe("stop")
        expect(gateway.simulator("mangled").stats().requests).toBe(1)
        const raw = yield* rawStream(gateway.url)
        expect(raw.endsWith("data: [DONE]\n\n")).toBe(true)
        expect(raw).not.toContain("[mangled]")
      }).pipe(Effect.scoped)
  )
})
