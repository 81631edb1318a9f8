/**
 * The gateway as `sluice serve` runs it without `OTEL_EXPORTER_OTLP_ENDPOINT`: no tracer installed at
 * all (the other gateway tests install an in-memory one to read decisions from the trace). Decisions
 * are read from the response headers, as a client would.
 */
import { describe, expect, it } from "@effect/vitest"
import { Config } from "@sluice/core"
import { Context, Effect, Either, Layer } from "effect"
import OpenAI, { type APIError } from "openai"
import { Listening } from "../src/Gateway.js"
import * as Server from "../src/Server.js"

const config = Either.getOrThrow(
  Config.decode(
    {
      server: { host: "127.0.0.1", port: 0 },
      upstreams: [
        { id: "broken", provider: "simulated", simulate: { failureRate: 1 } },
        { id: "good", provider: "simulated", simulate: { completionTokens: 4 } },
        { id: "down", provider: "simulated", simulate: { failureRate: 1 } }
      ],
      pools: [
        { id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["broken", "good"] },
        { id: "failing", models: ["failing-model"], upstreams: ["down"] }
      ]
    },
    "untraced"
  )
)

/** The gateway with no tracer at all, in the test's scope, and an `openai` client for it. */
const startUntraced = Effect.gen(function* () {
  const context = yield* Layer.build(Server.layer(config, { banner: false, telemetry: Layer.empty }))
  const { port } = Context.get(context, Listening)
  return new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "sk-test", maxRetries: 0, timeout: 10_000 })
})

describe("gateway without a tracer", () => {
  it.live("answers a chat completion, failing over, with the decision in the headers", () =>
    Effect.gen(function* () {
      const client = yield* startUntraced
      const { data, response } = yield* Effect.promise(() =>
        client.chat.completions
          .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] })
          .withResponse()
      )
      expect(data.choices[0]?.message.content).toMatch(/^\[good\]/)
      expect(data.usage?.completion_tokens).toBe(4)
      expect(response.headers.get("x-sluice-pool")).toBe("chat")
      expect(response.headers.get("x-sluice-upstream")).toBe("good")
      expect(response.headers.get("x-sluice-attempts")).toBe("2")
      expect(response.headers.get("x-request-id")).toMatch(/^req_/)
    }).pipe(Effect.scoped)
  )

  it.live("streams a chat completion with usage, naming the upstream and the request id", () =>
    Effect.gen(function* () {
      const client = yield* startUntraced
      const { data: stream, response } = yield* Effect.promise(() =>
        client.chat.completions
          .create(
            {
              model: "gpt-4o-mini",
              messages: [{ role: "user", content: "Hello" }],
              stream: true,
              stream_options: { include_usage: true }
            },
            { headers: { "x-request-id": "untraced-stream-1" } }
          )
          .withResponse()
      )
      const chunks = yield* Effect.promise(async () => {
        const all: Array<OpenAI.ChatCompletionChunk> = []
        for await (const chunk of stream) all.push(chunk)
        return all
      })
      expect(response.headers.get("x-sluice-upstream")).toBe("good")
      expect(response.headers.get("x-request-id")).toBe("untraced-stream-1")
      expect(chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")).toMatch(/^\[good\]/)
      expect(chunks.at(-1)?.usage?.completion_tokens).toBe(4)
    }).pipe(Effect.scoped)
  )

  it.live("answers errors in OpenAI's envelope with the request id", () =>
    Effect.gen(function* () {
      const client = yield* startUntraced
      const failures = yield* Effect.forEach(["failing-model", "no-such-model"], (model) =>
        Effect.promise(() =>
          client.chat.completions.create({ model, messages: [{ role: "user", content: "Hi" }] }).then(
            () => undefined,
            (error: unknown) => error as APIError
          )
        )
      )
      const [upstream, unknown] = failures
      expect(upstream).toBeInstanceOf(OpenAI.APIError)
      expect(upstream?.status).toBe(502)
      expect(upstream?.message).toContain("upstream 'down' failed")
      expect(upstream?.headers?.get("x-request-id")).toMatch(/^req_/)
      expect(unknown).toBeInstanceOf(OpenAI.NotFoundError)
      expect(unknown?.message).toContain("gpt-4o-mini")
      expect(unknown?.headers?.get("x-request-id")).toMatch(/^req_/)
    }).pipe(Effect.scoped)
  )
})
