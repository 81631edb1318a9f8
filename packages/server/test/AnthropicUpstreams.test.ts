/**
 * The gateway in front of Anthropic-shaped upstreams (simulated, speaking the Messages API), driven
 * with the `openai` SDK: the client never sees that its pool translates.
 */
import { describe, expect, it } from "@effect/vitest"
import { Simulator } from "@sluice/providers"
import { Effect } from "effect"
import type OpenAI from "openai"
import { simulatedConfig, startGateway, streamed } from "./harness.js"

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

/** A gateway whose pool `chat` serves `gpt-4o-mini` from `upstreams` (priority order). */
const gatewayWith = (upstreams: ReadonlyArray<Record<string, unknown>>, env: Record<string, string> = {}) =>
  startGateway(
    simulatedConfig(upstreams, [
      {
        id: "chat",
        models: ["gpt-4o-mini"],
        strategy: "priority",
        upstreams: upstreams.map((u) => u["id"]),
        defaultMaxTokens: 2048
      }
    ]),
    { env }
  )

const claude = (sim: Simulator.Simulator, fields: Record<string, unknown> = {}) => ({
  id: "claude",
  provider: "anthropic",
  baseUrl: `${sim.url}/v1`,
  model: "claude-sonnet-4-5",
  ...fields
})

const chat = (client: OpenAI, body: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming> = {}) =>
  promise(() =>
    client.chat.completions
      .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], ...body })
      .withResponse()
      .then(({ data, response }) => ({ data, upstream: response.headers.get("x-sluice-upstream") }))
  )

describe("gateway with Anthropic upstreams", () => {
  it.live(
    "answers a chat completion from an Anthropic upstream, with its key as x-api-key and the pool's default max_tokens",
    () =>
      Effect.gen(function* () {
        const sim = yield* Simulator.start({ dialect: "anthropic", name: "claude", completionTokens: 3 })
        const gateway = yield* gatewayWith([claude(sim, { apiKeyEnv: "SLUICE_TEST_ANTHROPIC_KEY" })], {
          SLUICE_TEST_ANTHROPIC_KEY: "sk-ant-e2e-0123456789"
        })
        const { data, upstream } = yield* chat(gateway.client)
        expect(upstream).toBe("claude")
        expect(data.choices[0]?.message.content).toBe("[claude] lorem ipsum")
        expect(data.choices[0]?.finish_reason).toBe("stop")
        expect(data.usage).toMatchObject({ completion_tokens: 3, total_tokens: data.usage!.prompt_tokens + 3 })
        const recorded = sim.requests().at(-1)
        expect(recorded?.headers["x-api-key"]).toBe("sk-ant-e2e-0123456789")
        // The client set no max_tokens; Anthropic requires one: the pool's defaultMaxTokens.
        expect(recorded?.body).toMatchObject({ model: "claude-sonnet-4-5", max_tokens: 2048 })
      }).pipe(Effect.scoped)
  )

  it.live("streams an Anthropic upstream's answer to the SDK, with usage when asked", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "anthropic", name: "claude", completionTokens: 5 })
      const gateway = yield* gatewayWith([claude(sim)])
      const result = yield* streamed(gateway.client)
      expect(result).toMatchObject({
        upstream: "claude",
        content: "[claude] lorem ipsum dolor sit",
        finishReason: "stop",
        error: undefined
      })
      const usage = yield* promise(async () => {
        const stream = await gateway.client.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: "Hi" }],
          stream: true,
          stream_options: { include_usage: true }
        })
        let last: OpenAI.CompletionUsage | null | undefined
        for await (const chunk of stream) last = chunk.usage ?? last
        return last
      })
      expect(usage).toMatchObject({ completion_tokens: 5 })
    }).pipe(Effect.scoped)
  )

  it.live("runs a tool-call round trip against an Anthropic upstream, streamed and not", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "anthropic", name: "claude", completionTokens: 2 })
      const gateway = yield* gatewayWith([claude(sim)])
      const tools: Array<OpenAI.ChatCompletionTool> = [
        {
          type: "function",
          function: {
            name: "get_weather",
            parameters: { type: "object", properties: { city: { type: "string" } } }
          }
        }
      ]
      const question: OpenAI.ChatCompletionMessageParam = { role: "user", content: "Weather in Paris?" }
      const first = yield* chat(gateway.client, { messages: [question], tools })
      const message = first.data.choices[0]!.message
      expect(first.data.choices[0]?.finish_reason).toBe("tool_calls")
      expect(message.tool_calls).toHaveLength(1)
      const call = message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall
      // The simulated model fills the tool's `city` with its name; streamed, it arrives in two deltas.
      expect(call.function).toEqual({ name: "get_weather", arguments: '{"city":"claude"}' })
      // The SDK's own stream helper accumulates the tool-call deltas into the same call.
      const streamedCall = yield* promise(async () => {
        const runner = gateway.client.chat.completions.stream({ model: "gpt-4o-mini", messages: [question], tools })
        const done = await runner.finalChatCompletion()
        return done.choices[0]
      })
      expect(streamedCall?.finish_reason).toBe("tool_calls")
      expect(streamedCall?.message.tool_calls?.[0]).toMatchObject({
        type: "function",
        function: { name: "get_weather", arguments: '{"city":"claude"}' }
      })
      const second = yield* chat(gateway.client, {
        messages: [question, message, { role: "tool", tool_call_id: call.id, content: "18C and sunny" }],
        tools
      })
      expect(second.data.choices[0]?.message.content).toBe("[claude] lorem")
      expect(second.data.choices[0]?.finish_reason).toBe("stop")
      // The upstream got the round trip as Anthropic blocks: tool_use answered by tool_result.
      expect(sim.requests().at(-1)?.body).toMatchObject({
        messages: [
          { role: "user", content: "Weather in Paris?" },
          {
            role: "assistant",
            content: [{ type: "tool_use", id: call.id, name: "get_weather", input: { city: "claude" } }]
          },
          { role: "user", content: [{ type: "tool_result", tool_use_id: call.id, content: "18C and sunny" }] }
        ]
      })
    }).pipe(Effect.scoped)
  )

  it.live("fails over between OpenAI- and Anthropic-shaped upstreams of one pool, both ways, streaming included", () =>
    Effect.gen(function* () {
      const sim = yield* Simulator.start({ dialect: "anthropic", name: "claude", completionTokens: 3 })
      const gateway = yield* gatewayWith([claude(sim), { id: "gpt", simulate: { completionTokens: 3 } }])
      const gpt = gateway.simulator("gpt")
      // Claude overloaded (529): the OpenAI-shaped upstream answers, whole and streamed.
      sim.setOptions({ failureRate: 1, failureStatus: 529 })
      const whole = yield* chat(gateway.client)
      expect(whole.upstream).toBe("gpt")
      expect(whole.data.choices[0]?.message.content).toBe("[gpt] lorem ipsum")
      expect(yield* streamed(gateway.client)).toMatchObject({
        upstream: "gpt",
        content: "[gpt] lorem ipsum",
        error: undefined
      })
      // Claude's stream mangled before its first content: failed over too.
      sim.setOptions({ failureRate: 0, malformedEventRate: 1, malformedEventAfter: 0 })
      expect(yield* streamed(gateway.client)).toMatchObject({
        upstream: "gpt",
        content: "[gpt] lorem ipsum",
        error: undefined
      })
      // The other way round: the OpenAI-shaped upstream fails and Claude answers.
      sim.setOptions({ malformedEventRate: 0 })
      const gateway2 = yield* gatewayWith([{ id: "gpt", simulate: { failureRate: 1 } }, claude(sim)])
      const back = yield* chat(gateway2.client)
      expect(back.upstream).toBe("claude")
      expect(back.data.choices[0]?.message.content).toBe("[claude] lorem ipsum")
      expect(yield* streamed(gateway2.client)).toMatchObject({
        upstream: "claude",
        content: "[claude] lorem ipsum",
        finishReason: "stop",
        error: undefined
      })
      expect(gpt.stats().requests).toBe(3)
      expect(gateway2.simulator("gpt").stats().failures).toBe(2)
    }).pipe(Effect.scoped)
  )
})
