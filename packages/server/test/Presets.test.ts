/** Provider presets: a cloud's endpoint, auth header and quirks from nothing but `provider:` and a key. */
import { describe, expect, it } from "@effect/vitest"
import { Config, Topology } from "@sluice/core"
import { Providers } from "@sluice/providers"
import { Effect, Either } from "effect"
import type { IncomingHttpHeaders } from "node:http"
import * as ConfigFile from "../src/ConfigFile.js"
import type OpenAI from "openai"
import { completionJson, simulatedConfig, startGateway, startUpstream, streamed } from "./harness.js"

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

interface Seen {
  readonly url: string
  readonly headers: IncomingHttpHeaders
  readonly body: Record<string, unknown>
}

/** A stand-in OpenAI-compatible upstream that records what it receives and answers "ok" (or one vector). */
const recording = Effect.gen(function* () {
  const seen: Array<Seen> = []
  const { baseUrl } = yield* startUpstream((request, body, response) => {
    const parsed = JSON.parse(body) as Record<string, unknown>
    seen.push({ url: request.url ?? "", headers: request.headers, body: parsed })
    const chunk = (delta: object, finish: string | null = null) =>
      `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", created: 1, model: "m", choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`
    if (request.url?.endsWith("/embeddings") === true) {
      response.writeHead(200, { "content-type": "application/json" })
      return response.end(
        JSON.stringify({
          object: "list",
          data: [{ object: "embedding", index: 0, embedding: [0.6, 0.8] }],
          model: "m",
          usage: { prompt_tokens: 1, total_tokens: 1 }
        })
      )
    }
    if (parsed["stream"] === true) {
      response.writeHead(200, { "content-type": "text/event-stream" })
      return response.end(chunk({ role: "assistant", content: "ok" }) + chunk({}, "stop") + "data: [DONE]\n\n")
    }
    response.writeHead(200, { "content-type": "application/json" })
    response.end(completionJson(1, 1))
  })
  return { origin: baseUrl.replace(/\/v1$/, ""), seen }
})

const KEY = "preset-key-0123456789"

/**
 * Every preset: the endpoint an upstream that sets no `baseUrl` gets (undefined: one is required), and
 * the header that carries its key. Adding a preset without a row here fails the table's first test.
 */
const table: Readonly<
  Record<string, { readonly baseUrl: string | undefined; readonly auth: readonly [string, string] }>
> = {
  openai: { baseUrl: "https://api.openai.com/v1", auth: ["authorization", `Bearer ${KEY}`] },
  "openai-compatible": { baseUrl: undefined, auth: ["authorization", `Bearer ${KEY}`] },
  azure: { baseUrl: undefined, auth: ["api-key", KEY] },
  groq: { baseUrl: "https://api.groq.com/openai/v1", auth: ["authorization", `Bearer ${KEY}`] },
  mistral: { baseUrl: "https://api.mistral.ai/v1", auth: ["authorization", `Bearer ${KEY}`] },
  together: { baseUrl: "https://api.together.ai/v1", auth: ["authorization", `Bearer ${KEY}`] },
  deepseek: { baseUrl: "https://api.deepseek.com/v1", auth: ["authorization", `Bearer ${KEY}`] },
  openrouter: { baseUrl: "https://openrouter.ai/api/v1", auth: ["authorization", `Bearer ${KEY}`] },
  fireworks: { baseUrl: "https://api.fireworks.ai/inference/v1", auth: ["authorization", `Bearer ${KEY}`] },
  cerebras: { baseUrl: "https://api.cerebras.ai/v1", auth: ["authorization", `Bearer ${KEY}`] },
  xai: { baseUrl: "https://api.x.ai/v1", auth: ["authorization", `Bearer ${KEY}`] },
  cohere: { baseUrl: "https://api.cohere.ai/compatibility/v1", auth: ["authorization", `Bearer ${KEY}`] },
  vllm: { baseUrl: "http://localhost:8000/v1", auth: ["authorization", `Bearer ${KEY}`] },
  lmstudio: { baseUrl: "http://localhost:1234/v1", auth: ["authorization", `Bearer ${KEY}`] },
  ollama: { baseUrl: "http://localhost:11434", auth: ["authorization", `Bearer ${KEY}`] },
  anthropic: { baseUrl: "https://api.anthropic.com/v1", auth: ["x-api-key", KEY] },
  gemini: { baseUrl: "https://generativelanguage.googleapis.com/v1beta", auth: ["x-goog-api-key", KEY] }
}

/** Where each preset's upstream points in the auth test: a path of its own on the recording upstream. */
const recordedBaseUrl = (origin: string, name: string): string => {
  if (name === "azure") return `${origin}/azure/openai/deployments/d?api-version=2024-10-21`
  if (name === "ollama") return `${origin}/ollama`
  if (name === "gemini") return `${origin}/gemini/v1beta`
  return `${origin}/${name}/v1`
}

/** The 400 a request for embeddings of a chosen size gets from pool `only`, whose one upstream (`kind`) has none. */
const refusesDimensions = (gateway: { readonly client: OpenAI }, kind: string) =>
  Effect.gen(function* () {
    const refused = yield* Effect.promise(() =>
      gateway.client.embeddings.create({ model: "embed-only", input: "a", dimensions: 4 }).then(
        () => undefined,
        (error: unknown) => error as { status?: number; code?: string; message?: string }
      )
    )
    expect(refused?.status).toBe(400)
    expect(refused?.code).toBe("unsupported_feature")
    expect(refused?.message).toContain(`${kind} (${kind} upstream without dimensions)`)
  })

describe("every provider preset", () => {
  it("has a row in the table", () => {
    expect(Providers.presets.map((p) => p.name).sort()).toEqual(Object.keys(table).sort())
  })

  it("leaves out what a provider documents it refuses, so such a request goes elsewhere", () => {
    const capabilities = (name: string) => Providers.kinds.find((k) => k.name === name)?.capabilities ?? []
    // Groq: `n` must be 1, `logprobs` / `top_logprobs` are a 400; no embeddings endpoint.
    for (const c of ["n", "logprobs", "embeddings", "completions"]) expect(capabilities("groq")).not.toContain(c)
    expect(capabilities("groq")).toEqual(expect.arrayContaining(["tools", "tool_choice", "json_schema", "vision"]))
    for (const c of ["vision", "image_url", "embeddings"]) expect(capabilities("deepseek")).not.toContain(c)
    expect(capabilities("deepseek")).toEqual(expect.arrayContaining(["tools", "n", "completions"]))
    expect(capabilities("cerebras")).not.toContain("embeddings")
    for (const c of ["n", "logprobs", "embeddings"]) expect(capabilities("anthropic")).not.toContain(c)
    for (const c of ["completions", "logprobs"]) expect(capabilities("mistral")).not.toContain(c)
    expect(capabilities("mistral")).toEqual(expect.arrayContaining(["tools", "json_schema", "n", "embeddings"]))
  })

  it.effect("gives an upstream that sets no baseUrl its cloud's endpoint, or requires one", () =>
    Effect.gen(function* () {
      const defaulted = Object.entries(table).filter(([, row]) => row.baseUrl !== undefined)
      const config = Config.decode(
        {
          upstreams: defaulted.map(([name]) => ({ id: name, provider: name })),
          pools: [{ id: "p", models: ["x"], upstreams: defaulted.map(([name]) => name) }]
        },
        "presets",
        { providers: Providers.kinds }
      )
      const topology = yield* Topology.fromConfig(Either.getOrThrow(config), { providers: Providers.kinds })
      expect(Object.fromEntries([...topology.upstreams.values()].map((u) => [u.id, u.baseUrl]))).toEqual(
        Object.fromEntries(defaulted.map(([name, row]) => [name, row.baseUrl]))
      )
      for (const [name, row] of Object.entries(table)) {
        if (row.baseUrl !== undefined) continue
        const refused = Config.decode(
          { upstreams: [{ id: name, provider: name }], pools: [{ id: "p", models: ["x"], upstreams: [name] }] },
          "presets",
          { providers: Providers.kinds }
        )
        expect(Either.isLeft(refused) && refused.left.message).toContain(
          `upstreams[0].baseUrl: required for provider '${name}'`
        )
      }
    })
  )

  it.live("sends the key in the preset's auth header (Anthropic's with its version, Azure's with api-version)", () =>
    Effect.gen(function* () {
      const upstream = yield* recording
      const names = Object.keys(table)
      const gateway = yield* startGateway(
        simulatedConfig(
          names.map((name) => ({
            id: name,
            provider: name,
            baseUrl: recordedBaseUrl(upstream.origin, name),
            apiKeyEnv: "SLUICE_TEST_PRESET_KEY"
          })),
          names.map((name) => ({ id: name, models: [`model-${name}`], upstreams: [name] }))
        ),
        { env: { SLUICE_TEST_PRESET_KEY: KEY } }
      )
      for (const name of names) {
        // The recording upstream answers in OpenAI's format: a translated provider's answer fails to
        // parse, which does not matter here — what it was sent does.
        yield* promise(() =>
          gateway.client.chat.completions
            .create({ model: `model-${name}`, messages: [{ role: "user", content: "Hi" }] })
            .catch(() => undefined)
        )
        const seen = upstream.seen.find((s) => s.url.startsWith(`/${name}/`))
        const [header, value] = table[name]!.auth
        expect({ name, value: seen?.headers[header] }).toEqual({ name, value })
        if (header !== "authorization") expect({ name, bearer: seen?.headers["authorization"] }).toEqual({ name })
      }
      const first = (name: string) => upstream.seen.find((s) => s.url.startsWith(`/${name}/`))
      expect(first("azure")?.url).toBe("/azure/openai/deployments/d/chat/completions?api-version=2024-10-21")
      expect(first("anthropic")?.url).toBe("/anthropic/v1/messages")
      expect(first("anthropic")?.headers["anthropic-version"]).toBe("2023-06-01")
      expect(first("gemini")?.url).toBe("/gemini/v1beta/models/model-gemini:generateContent")
      expect(first("ollama")?.url).toBe("/ollama/api/chat")
      expect(first("groq")?.url).toBe("/groq/v1/chat/completions")
    }).pipe(Effect.scoped)
  )
})

describe("provider presets", () => {
  it.effect("gives an upstream that sets no baseUrl its cloud's endpoint", () =>
    Effect.gen(function* () {
      const yaml = [
        "upstreams:",
        "  - { id: g, provider: groq, model: llama-3.3-70b-versatile }",
        "  - { id: c, provider: anthropic }",
        "  - { id: m, provider: gemini }",
        "  - { id: o, provider: ollama }",
        "pools:",
        "  - { id: p, models: [x], upstreams: [g, c, m, o] }"
      ].join("\n")
      const config = ConfigFile.parse(yaml, "presets.yaml")
      expect(Either.isRight(config)).toBe(true)
      const topology = yield* Topology.fromConfig(Either.getOrThrow(config), { providers: Providers.kinds })
      expect([...topology.upstreams.values()].map((u) => u.baseUrl)).toEqual([
        "https://api.groq.com/openai/v1",
        "https://api.anthropic.com/v1",
        "https://generativelanguage.googleapis.com/v1beta",
        "http://localhost:11434"
      ])
    })
  )

  it.live("calls Azure OpenAI at its deployment URL with api-version and the api-key header", () =>
    Effect.gen(function* () {
      const upstream = yield* recording
      const gateway = yield* startGateway(
        simulatedConfig(
          [
            {
              id: "azure",
              provider: "azure",
              baseUrl: `${upstream.origin}/openai/deployments/gpt-4o?api-version=2024-10-21`,
              apiKeyEnv: "SLUICE_TEST_AZURE_KEY"
            }
          ],
          [{ id: "chat", models: ["gpt-4o"], upstreams: ["azure"] }]
        ),
        { env: { SLUICE_TEST_AZURE_KEY: "azure-key-0123456789" } }
      )
      yield* promise(() =>
        gateway.client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "Hi" }] })
      )
      expect(upstream.seen[0]?.url).toBe("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21")
      expect(upstream.seen[0]?.headers["api-key"]).toBe("azure-key-0123456789")
      expect(upstream.seen[0]?.headers["authorization"]).toBeUndefined()
    }).pipe(Effect.scoped)
  )

  it.live("leaves stream_options out of what goes to Mistral, which refuses it", () =>
    Effect.gen(function* () {
      const upstream = yield* recording
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "mistral", provider: "mistral", baseUrl: `${upstream.origin}/v1` }],
          [{ id: "chat", models: ["mistral-small"], upstreams: ["mistral"] }]
        )
      )
      const stream = yield* promise(() =>
        gateway.client.chat.completions.create({
          model: "mistral-small",
          messages: [{ role: "user", content: "Hi" }],
          stream: true,
          stream_options: { include_usage: true }
        })
      )
      let content = ""
      yield* promise(async () => {
        for await (const chunk of stream) content += chunk.choices[0]?.delta.content ?? ""
      })
      expect(content).toBe("ok")
      expect(upstream.seen[0]?.body).toMatchObject({ stream: true })
      expect(upstream.seen[0]?.body["stream_options"]).toBeUndefined()
    }).pipe(Effect.scoped)
  )
  it.live(
    "sends Mistral what it takes: renamed limits and seed, no fields it does not define, replayed calls with ids it accepts",
    () =>
      Effect.gen(function* () {
        const upstream = yield* recording
        const gateway = yield* startGateway(
          simulatedConfig(
            [{ id: "mistral", provider: "mistral", baseUrl: `${upstream.origin}/v1` }],
            [{ id: "chat", models: ["mistral-small"], upstreams: ["mistral"] }]
          )
        )
        const weather = { type: "function" as const, function: { name: "get_weather", parameters: { type: "object" } } }
        // A tool loop begun on OpenAI (its call id, its answer's fields replayed as the SDK returns them).
        const history = [
          { role: "developer" as const, content: "Be brief." },
          { role: "user" as const, content: "Weather?", name: "ann" },
          {
            role: "assistant" as const,
            content: null,
            refusal: null,
            annotations: [],
            tool_calls: [
              {
                id: "call_Xy12AbCdEfGhIjKlMnOp",
                type: "function" as const,
                function: { name: "get_weather", arguments: "{}" },
                extra_content: { google: { thought_signature: "c2ln" } }
              }
            ]
          },
          { role: "tool" as const, tool_call_id: "call_Xy12AbCdEfGhIjKlMnOp", content: "18C" }
        ]
        yield* promise(() =>
          gateway.client.chat.completions.create({
            model: "mistral-small",
            messages: history as Array<OpenAI.ChatCompletionMessageParam>,
            tools: [weather],
            max_completion_tokens: 50,
            seed: 7,
            user: "u-1",
            store: false,
            logit_bias: { "50256": -100 },
            metadata: { app: "x" },
            temperature: 0.2
          })
        )
        const body = upstream.seen[0]!.body
        // Mistral's own fields (metadata among them) stay; OpenAI's others go.
        expect(body).toMatchObject({ max_tokens: 50, random_seed: 7, temperature: 0.2, metadata: { app: "x" } })
        for (const key of ["max_completion_tokens", "seed", "user", "store", "logit_bias"]) {
          expect({ key, value: body[key] }).toEqual({ key, value: undefined })
        }
        const [system, user, assistant, tool] = body["messages"] as Array<Record<string, unknown>>
        expect(system).toEqual({ role: "system", content: "Be brief." })
        expect(user).toEqual({ role: "user", content: "Weather?" })
        const call = (assistant!["tool_calls"] as Array<Record<string, unknown>>)[0]!
        expect(assistant).toEqual({ role: "assistant", content: null, tool_calls: [call] })
        expect(call).toEqual({
          id: expect.stringMatching(/^[a-zA-Z0-9]{9}$/),
          type: "function",
          function: { name: "get_weather", arguments: "{}" }
        })
        // The result still answers the call it belongs to.
        expect(tool).toEqual({ role: "tool", tool_call_id: call["id"], content: "18C" })
        // A request Mistral takes as it is goes out as the client sent it.
        yield* promise(() =>
          gateway.client.chat.completions.create({
            model: "mistral-small",
            messages: [
              { role: "user", content: "Weather?" },
              {
                role: "assistant",
                content: null,
                tool_calls: [{ id: "D681PevKs", type: "function", function: { name: "get_weather", arguments: "{}" } }]
              },
              { role: "tool", tool_call_id: "D681PevKs", content: "18C" }
            ],
            tools: [weather]
          })
        )
        expect(upstream.seen[1]!.body["messages"]).toMatchObject([
          {},
          { tool_calls: [{ id: "D681PevKs" }] },
          { tool_call_id: "D681PevKs" }
        ])
      }).pipe(Effect.scoped)
  )

  it.live(
    "leaves the penalties out of what goes to xAI's reasoning models and reasoning_effort out of the grok-4 line, and keeps stop",
    () =>
      Effect.gen(function* () {
        const upstream = yield* recording
        const gateway = yield* startGateway(
          simulatedConfig(
            [
              { id: "grok-4", provider: "xai", baseUrl: `${upstream.origin}/v1`, model: "grok-4-0709" },
              { id: "grok-mini", provider: "xai", baseUrl: `${upstream.origin}/v1`, model: "grok-3-mini" },
              {
                id: "grok-fast",
                provider: "xai",
                baseUrl: `${upstream.origin}/v1`,
                model: "grok-4-fast-non-reasoning"
              }
            ],
            [
              { id: "a", models: ["a"], upstreams: ["grok-4"] },
              { id: "b", models: ["b"], upstreams: ["grok-mini"] },
              { id: "c", models: ["c"], upstreams: ["grok-fast"] }
            ]
          )
        )
        const ask = (model: string) =>
          promise(() =>
            gateway.client.chat.completions.create({
              model,
              messages: [{ role: "user", content: "Hi" }],
              presence_penalty: 0.5,
              frequency_penalty: 0.5,
              reasoning_effort: "low",
              stop: ["END"]
            })
          )
        yield* ask("a")
        yield* ask("b")
        yield* ask("c")
        const [grok4, mini, fast] = upstream.seen.map((s) => s.body)
        expect(grok4).toMatchObject({ model: "grok-4-0709", stop: ["END"] })
        for (const key of ["presence_penalty", "frequency_penalty", "reasoning_effort"]) {
          expect({ key, value: grok4![key] }).toEqual({ key, value: undefined })
        }
        // grok-3-mini takes reasoning_effort (it is the model the effort is documented for), not the penalties.
        expect(mini).toMatchObject({ model: "grok-3-mini", reasoning_effort: "low", stop: ["END"] })
        expect(mini!["presence_penalty"]).toBeUndefined()
        // A non-reasoning grok-4 takes the penalties; the grok-4 line takes no reasoning_effort.
        expect(fast).toMatchObject({ presence_penalty: 0.5, frequency_penalty: 0.5 })
        expect(fast!["reasoning_effort"]).toBeUndefined()
      }).pipe(Effect.scoped)
  )

  it.live("reads an OpenRouter stream through the SSE comments it keeps the connection alive with", () =>
    Effect.gen(function* () {
      const { baseUrl } = yield* startUpstream((_request, _body, response) => {
        const chunk = (delta: object, finish: string | null = null) =>
          `data: ${JSON.stringify({ id: "gen-1", object: "chat.completion.chunk", created: 1, model: "openai/gpt-4o", choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`
        response.writeHead(200, { "content-type": "text/event-stream" })
        response.end(
          ": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\n" +
            chunk({ role: "assistant", content: "Hello" }) +
            ": OPENROUTER PROCESSING\n\n" +
            chunk({ content: " there" }) +
            chunk({}, "stop") +
            "data: [DONE]\n\n"
        )
      })
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "openrouter", provider: "openrouter", baseUrl }],
          [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["openrouter"] }]
        )
      )
      expect(yield* streamed(gateway.client)).toMatchObject({
        upstream: "openrouter",
        content: "Hello there",
        finishReason: "stop",
        error: undefined
      })
    }).pipe(Effect.scoped)
  )
  it.live(
    "sends Mistral an embeddings request it takes: dimensions as output_dimension, no field it does not list",
    () =>
      Effect.gen(function* () {
        const upstream = yield* recording
        const gateway = yield* startGateway(
          simulatedConfig(
            [{ id: "mistral", provider: "mistral", baseUrl: `${upstream.origin}/v1` }],
            [{ id: "embed", models: ["codestral-embed"], upstreams: ["mistral"] }]
          )
        )
        yield* promise(() =>
          gateway.client.embeddings.create({ model: "codestral-embed", input: "a", dimensions: 256, user: "u-1" })
        )
        yield* promise(() => gateway.client.embeddings.create({ model: "codestral-embed", input: ["b"] }))
        const [sized, plain] = upstream.seen.map((s) => s.body)
        expect(sized).toEqual({
          model: "codestral-embed",
          input: "a",
          encoding_format: "base64",
          output_dimension: 256
        })
        expect(plain).toEqual({ model: "codestral-embed", input: ["b"], encoding_format: "base64" })
      }).pipe(Effect.scoped)
  )
  it.live("never asks mistral-embed, which has one size, for embeddings of a chosen size", () =>
    Effect.gen(function* () {
      const upstream = yield* recording
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "mistral", provider: "mistral", baseUrl: `${upstream.origin}/v1` }, { id: "sim" }],
          [
            { id: "embed", models: ["mistral-embed"], upstreams: ["mistral", "sim"], strategy: "priority" },
            { id: "only", models: ["embed-only"], upstreams: ["mistral"] }
          ]
        )
      )
      // Sized: served by the upstream that can, however often; unsized: by Mistral, first in priority.
      for (let i = 0; i < 2; i++) {
        const sized = yield* promise(() =>
          gateway.client.embeddings.create({ model: "mistral-embed", input: "a", dimensions: 4 })
        )
        expect(sized.data[0]?.embedding.length).toBe(4)
      }
      expect(upstream.seen).toEqual([])
      expect(gateway.simulator("sim").stats().requests).toBe(2)
      yield* promise(() => gateway.client.embeddings.create({ model: "mistral-embed", input: "b" }))
      expect(upstream.seen.map((s) => s.body)).toEqual([
        { model: "mistral-embed", input: "b", encoding_format: "base64" }
      ])
      yield* refusesDimensions(gateway, "mistral")
      expect(upstream.seen).toHaveLength(1)
    }).pipe(Effect.scoped)
  )
  it.live("never sends Cohere embeddings of a chosen size, which its Compatibility API documents as unsupported", () =>
    Effect.gen(function* () {
      const upstream = yield* recording
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "cohere", provider: "cohere", baseUrl: `${upstream.origin}/v1` }, { id: "sim" }],
          [
            { id: "embed", models: ["embed-v4.0"], upstreams: ["cohere", "sim"] },
            { id: "only", models: ["embed-only"], upstreams: ["cohere"] }
          ]
        )
      )
      for (let i = 0; i < 3; i++) {
        const answer = yield* promise(() =>
          gateway.client.embeddings.create({ model: "embed-v4.0", input: ["a", "b"], dimensions: 4 })
        )
        expect(answer.data.map((d) => d.embedding.length)).toEqual([4, 4])
      }
      expect(upstream.seen).toEqual([])
      expect(gateway.simulator("sim").stats().requests).toBe(3)
      yield* refusesDimensions(gateway, "cohere")
      expect(upstream.seen).toEqual([])
    }).pipe(Effect.scoped)
  )
  it.live("leaves out of what goes to Cohere the parameters its Compatibility API documents as unsupported", () =>
    Effect.gen(function* () {
      const upstream = yield* recording
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "cohere", provider: "cohere", baseUrl: `${upstream.origin}/v1` }],
          [{ id: "chat", models: ["command-a-03-2025"], upstreams: ["cohere"] }]
        )
      )
      const ask = (reasoning_effort: "low" | "high") =>
        promise(() =>
          gateway.client.chat.completions.create({
            model: "command-a-03-2025",
            messages: [{ role: "user", content: "Hi" }],
            max_completion_tokens: 40,
            parallel_tool_calls: false,
            tools: [{ type: "function", function: { name: "f", parameters: { type: "object" } } }],
            store: false,
            metadata: { app: "x" },
            service_tier: "auto",
            reasoning_effort,
            seed: 3
          })
        )
      yield* ask("low")
      yield* ask("high")
      const [low, high] = upstream.seen.map((s) => s.body)
      expect(low).toMatchObject({ max_tokens: 40, seed: 3 })
      for (const key of ["max_completion_tokens", "parallel_tool_calls", "store", "metadata", "service_tier"]) {
        expect({ key, value: low![key] }).toEqual({ key, value: undefined })
      }
      // Only `none` and `high` are taken: another effort is left to the model's default.
      expect(low!["reasoning_effort"]).toBeUndefined()
      expect(high!["reasoning_effort"]).toBe("high")
      const capabilities = Providers.kinds.find((k) => k.name === "cohere")?.capabilities ?? []
      for (const c of ["n", "logprobs", "audio", "completions"]) expect(capabilities).not.toContain(c)
      expect(capabilities).toEqual(expect.arrayContaining(["tools", "json_schema", "vision", "embeddings"]))
    }).pipe(Effect.scoped)
  )
})
