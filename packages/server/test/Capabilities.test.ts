/**
 * Capabilities through the gateway: a request that needs what an upstream lacks is never sent there,
 * and when no upstream of the pool can serve it the answer is a 400 naming the feature and upstreams.
 */
import { describe, expect, it } from "@effect/vitest"
import { Capabilities } from "@sluice/core"
import type { Wire } from "@sluice/core"
import { Simulator } from "@sluice/providers"
import { Effect } from "effect"
import type { APIError } from "openai"
import type OpenAI from "openai"
import { listAttribute, simulatedConfig, startGateway } from "./harness.js"

const settle = <A>(f: () => Promise<A>) =>
  Effect.promise(() =>
    f().then(
      (value) => ({ value, error: undefined }),
      (error: unknown) => ({ value: undefined, error: error as APIError })
    )
  )

const IMAGE = { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } } as const
const IMAGE_URL = { type: "image_url", image_url: { url: "https://example.com/cat.png" } } as const
const FILE = { type: "file", file: { filename: "a.pdf", file_data: "data:application/pdf;base64,JVBERi0=" } } as const
const TOOL = { type: "function", function: { name: "lookup", parameters: { type: "object", properties: {} } } } as const

describe("capabilities", () => {
  it("reads what a chat request needs: images, audio, tools, a JSON schema, more than one choice", () => {
    const request = {
      model: "m",
      n: 2,
      messages: [{ role: "user", content: [{ type: "text" }, IMAGE, { type: "input_audio" }] }],
      tools: [{ type: "function", function: { name: "f" } }],
      response_format: { type: "json_schema" }
    } as unknown as Wire.ChatCompletionRequest
    expect(Capabilities.needsOf(request)).toEqual(["vision", "audio", "tools", "json_schema", "n"])
    expect(Capabilities.needsOf({ model: "m", messages: [{ role: "user", content: "Hi" }] })).toBeUndefined()
  })

  it("reads the finer needs: an image by URL, a file part, a forced tool call, logprobs", () => {
    const request = {
      model: "m",
      messages: [
        {
          role: "user",
          content: [IMAGE_URL, { type: "file", file: { file_data: "data:application/pdf;base64,JVBERi0=" } }]
        }
      ],
      tools: [{ type: "function", function: { name: "f" } }],
      tool_choice: "required",
      logprobs: true
    } as unknown as Wire.ChatCompletionRequest
    expect(Capabilities.needsOf(request)).toEqual(["vision", "image_url", "file", "tools", "tool_choice", "logprobs"])
    // An inline image, a tool the model may call and a named choice without tools need nothing finer.
    const plain = {
      model: "m",
      messages: [{ role: "user", content: [IMAGE] }],
      tools: [{ type: "function", function: { name: "f" } }],
      tool_choice: "auto"
    } as unknown as Wire.ChatCompletionRequest
    expect(Capabilities.needsOf(plain)).toEqual(["vision", "tools"])
  })

  it.live("skips an upstream that lacks a capability the request needs, and answers 400 when none has it", () =>
    Effect.gen(function* () {
      const claude = yield* Simulator.start({ dialect: "anthropic", name: "claude", completionTokens: 2 })
      const gateway = yield* startGateway(
        simulatedConfig(
          [
            // A text-only model behind an OpenAI-compatible server: it takes plain chat and nothing else.
            { id: "llama-text", capabilities: [], priority: 0, simulate: { completionTokens: 2 } },
            { id: "claude", provider: "anthropic", baseUrl: `${claude.url}/v1`, priority: 1 }
          ],
          [
            { id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["llama-text", "claude"] },
            { id: "embed", models: ["text-embedding-3-small"], upstreams: ["llama-text", "claude"] }
          ]
        )
      )
      const plain = yield* settle(() =>
        gateway.client.chat.completions
          .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
          .withResponse()
      )
      expect(plain.value?.response.headers.get("x-sluice-upstream")).toBe("llama-text")
      const image = yield* settle(() =>
        gateway.client.chat.completions
          .create({
            model: "gpt-4o-mini",
            messages: [{ role: "user", content: [{ type: "text", text: "What?" }, IMAGE] }]
          })
          .withResponse()
      )
      expect(image.value?.response.headers.get("x-sluice-upstream")).toBe("claude")
      expect(gateway.simulator("llama-text").stats().requests).toBe(1)
      const many = yield* settle(() =>
        gateway.client.chat.completions.create({
          model: "gpt-4o-mini",
          n: 2,
          messages: [{ role: "user", content: "Hi" }]
        })
      )
      expect(many.error?.status).toBe(400)
      expect(many.error?.message).toContain("llama-text (simulated upstream without n)")
      expect(many.error?.message).toContain("claude (anthropic upstream without n)")
      const embeddings = yield* settle(() =>
        gateway.client.embeddings.create({ model: "text-embedding-3-small", input: "x" })
      )
      expect(embeddings.error?.status).toBe(400)
      expect(embeddings.error?.message).toContain("without embeddings")
      expect(claude.stats().requests).toBe(1)
    }).pipe(Effect.scoped)
  )
  it.live(
    "serves from the fallback pool what no upstream of the first pool can take, and the 400 names the upstreams of both pools when none can",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          simulatedConfig(
            [
              // A text-only model: it takes plain chat and nothing else.
              { id: "llama-text", capabilities: [], simulate: { completionTokens: 2 } },
              { id: "claude", simulate: { dialect: "anthropic", completionTokens: 2 } }
            ],
            [
              { id: "local", models: ["gpt-4o-mini"], upstreams: ["llama-text"], fallback: "cloud" },
              { id: "cloud", models: ["claude-*"], upstreams: ["claude"] }
            ]
          )
        )
        const image = yield* settle(() =>
          gateway.client.chat.completions
            .create({
              model: "gpt-4o-mini",
              messages: [{ role: "user", content: [{ type: "text", text: "What?" }, IMAGE] }]
            })
            .withResponse()
        )
        expect(image.value?.response.headers.get("x-sluice-upstream")).toBe("claude")
        const route = gateway.routes().at(-1)
        expect(route?.["sluice.pool"]).toBe("cloud")
        expect(listAttribute(route, "sluice.decision.excluded")).toContain(
          "llama-text: capabilities: simulated upstream without vision"
        )
        const many = yield* settle(() =>
          gateway.client.chat.completions.create({
            model: "gpt-4o-mini",
            n: 2,
            messages: [{ role: "user", content: "Hi" }]
          })
        )
        expect(many.error?.status).toBe(400)
        expect(many.error?.code).toBe("unsupported_feature")
        expect(many.error?.message).toContain("pool 'local' or its fallbacks")
        expect(many.error?.message).toContain("llama-text (simulated upstream without n)")
        expect(many.error?.message).toContain("claude (anthropic upstream without n)")
        // Neither upstream was asked what it cannot take.
        expect(gateway.simulator("llama-text").stats().requests).toBe(0)
        expect(gateway.simulator("claude").stats().requests).toBe(1)
      }).pipe(Effect.scoped)
  )

  it.live(
    "sends what a native Ollama upstream cannot express (a forced tool call, an image URL, a file, logprobs) to one that can, the exclusion in the decision",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          simulatedConfig(
            [
              { id: "local", priority: 0, simulate: { dialect: "ollama", completionTokens: 2 } },
              { id: "cloud", priority: 1, simulate: { completionTokens: 2 } }
            ],
            [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["local", "cloud"] }]
          )
        )
        const served = (body: Record<string, unknown>) =>
          settle(() =>
            gateway.client.chat.completions
              .create({ model: "gpt-4o-mini", ...body } as never as OpenAI.ChatCompletionCreateParamsNonStreaming)
              .withResponse()
          ).pipe(Effect.map((r) => r.value?.response.headers.get("x-sluice-upstream")))
        const excluded = () => listAttribute(gateway.routes().at(-1), "sluice.decision.excluded")
        // Plain chat and an inline image stay on the preferred local upstream.
        expect(yield* served({ messages: [{ role: "user", content: [{ type: "text", text: "Hi" }, IMAGE] }] })).toBe(
          "local"
        )
        const forced = yield* served({
          messages: [{ role: "user", content: "Look it up" }],
          tools: [TOOL],
          tool_choice: "required"
        })
        expect(forced).toBe("cloud")
        expect(excluded()).toContain("local: capabilities: ollama upstream without tool_choice")
        expect(
          yield* served({ messages: [{ role: "user", content: [{ type: "text", text: "What?" }, IMAGE_URL] }] })
        ).toBe("cloud")
        expect(excluded()).toContain("local: capabilities: ollama upstream without image_url")
        expect(yield* served({ messages: [{ role: "user", content: [{ type: "text", text: "Sum up" }, FILE] }] })).toBe(
          "cloud"
        )
        expect(excluded()).toContain("local: capabilities: ollama upstream without file")
        expect(yield* served({ messages: [{ role: "user", content: "Hi" }], logprobs: true, top_logprobs: 2 })).toBe(
          "cloud"
        )
        expect(excluded()).toContain("local: capabilities: ollama upstream without logprobs")
        // The guard kept them away: the local upstream was asked only the plain request.
        expect(gateway.simulator("local").stats().requests).toBe(1)
      }).pipe(Effect.scoped)
  )

  it.live("answers 400 naming the feature and every upstream when no upstream of the pool can express it", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [
            { id: "local", simulate: { dialect: "ollama" } },
            { id: "claude", simulate: { dialect: "anthropic" } }
          ],
          [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["local", "claude"] }]
        )
      )
      const file = yield* settle(() =>
        gateway.client.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: [{ type: "text", text: "Sum up" }, FILE] }]
        })
      )
      expect(file.error?.status).toBe(400)
      expect(file.error?.code).toBe("unsupported_feature")
      expect(file.error?.message).toContain("local (ollama upstream without file)")
      expect(file.error?.message).toContain("claude (anthropic upstream without file)")
      const logprobs = yield* settle(() =>
        gateway.client.chat.completions.create({
          model: "gpt-4o-mini",
          logprobs: true,
          top_logprobs: 2,
          messages: [{ role: "user", content: "Hi" }]
        })
      )
      expect(logprobs.error?.status).toBe(400)
      expect(logprobs.error?.message).toContain("local (ollama upstream without logprobs)")
      expect(logprobs.error?.message).toContain("claude (anthropic upstream without logprobs)")
      expect(gateway.simulator("local").stats().requests + gateway.simulator("claude").stats().requests).toBe(0)
    }).pipe(Effect.scoped)
  )

  it.live(
    "takes a refusal found while translating as an exclusion: the next upstream serves, and the 400 names them all when none can",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          simulatedConfig(
            [
              { id: "claude", priority: 0, simulate: { dialect: "anthropic", completionTokens: 2 } },
              { id: "gemini", priority: 1, simulate: { dialect: "gemini", completionTokens: 2 } },
              { id: "gpt", priority: 2, simulate: { completionTokens: 2 } }
            ],
            [
              { id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["claude", "gemini", "gpt"] },
              { id: "translated", models: ["claude-*"], upstreams: ["claude", "gemini"] }
            ]
          )
        )
        // A custom (free-form) tool: no capability names it, the Anthropic and Gemini translators refuse it.
        const custom = { tools: [{ type: "custom", custom: { name: "shell" } }] }
        const served = yield* settle(() =>
          gateway.client.chat.completions
            .create({
              model: "gpt-4o-mini",
              messages: [{ role: "user", content: "ls" }],
              ...custom
            } as never as OpenAI.ChatCompletionCreateParamsNonStreaming)
            .withResponse()
        )
        expect(served.value?.response.headers.get("x-sluice-upstream")).toBe("gpt")
        const excluded = listAttribute(gateway.routes().at(-1), "sluice.decision.excluded")
        expect(excluded).toContain("claude: capabilities: anthropic upstream without custom tools")
        expect(excluded).toContain("gemini: capabilities: gemini upstream without custom tools")
        const streamed = yield* Effect.promise(async () => {
          const stream = await gateway.client.chat.completions.create({
            model: "gpt-4o-mini",
            stream: true,
            messages: [{ role: "user", content: "ls" }],
            ...custom
          } as never as OpenAI.ChatCompletionCreateParamsStreaming)
          const finishes: Array<string | null | undefined> = []
          for await (const chunk of stream) finishes.push(chunk.choices[0]?.finish_reason)
          return finishes
        })
        expect(streamed).toContain("tool_calls")
        const route = gateway.routes().at(-1)
        expect(route?.["sluice.upstream"]).toBe("gpt")
        expect(listAttribute(route, "sluice.decision.excluded")).toContain(
          "claude: capabilities: anthropic upstream without custom tools"
        )
        const refused = yield* settle(() =>
          gateway.client.chat.completions.create({
            model: "claude-sonnet",
            messages: [{ role: "user", content: "ls" }],
            ...custom
          } as never as OpenAI.ChatCompletionCreateParamsNonStreaming)
        )
        expect(refused.error?.status).toBe(400)
        expect(refused.error?.code).toBe("unsupported_feature")
        expect(refused.error?.message).toContain("claude (anthropic upstream without custom tools)")
        expect(refused.error?.message).toContain("gemini (gemini upstream without custom tools)")
        // Nothing was sent to the upstreams that refused.
        expect(gateway.simulator("claude").stats().requests + gateway.simulator("gemini").stats().requests).toBe(0)
      }).pipe(Effect.scoped)
  )
})
