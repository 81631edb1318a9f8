import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import OpenAI, { APIError } from "openai"
import { simulatedConfig, startGateway } from "./harness.js"

const twoUpstreams = () =>
  simulatedConfig(
    [{ id: "a", simulate: { completionTokens: 5 } }, { id: "b", simulate: { completionTokens: 5 } }, { id: "emb" }],
    [
      { id: "chat", models: ["gpt-4o-mini", "sim-*"], aliases: { fast: "gpt-4o-mini" }, upstreams: ["a", "b"] },
      { id: "embeddings", models: ["text-embedding-3-small"], upstreams: ["emb"] }
    ]
  )

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)
const attempt = <A>(f: () => Promise<A>) =>
  Effect.promise(() =>
    f().then(
      (value) => ({ ok: true as const, value }),
      (error: unknown) => ({ ok: false as const, error })
    )
  )

describe("gateway with the openai SDK", () => {
  it.live("answers a non-streaming chat completion with usage and names the upstream", () =>
    Effect.gen(function* () {
      const { client } = yield* startGateway(twoUpstreams())
      const { data, response } = yield* promise(() =>
        client.chat.completions
          .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] })
          .withResponse()
      )
      expect(data.object).toBe("chat.completion")
      expect(data.choices[0]?.message.content).toMatch(/^\[(a|b)\]/)
      expect(data.usage?.completion_tokens).toBe(5)
      expect(data.usage?.prompt_tokens).toBeGreaterThan(0)
      expect(["a", "b"]).toContain(response.headers.get("x-sluice-upstream"))
      expect(response.headers.get("x-sluice-pool")).toBe("chat")
      expect(response.headers.get("x-request-id")).toMatch(/^req_/)
    }).pipe(Effect.scoped)
  )

  it.live("streams chunks over SSE, ends with [DONE] and reports usage when include_usage is set", () =>
    Effect.gen(function* () {
      const { client } = yield* startGateway(twoUpstreams())
      const stream = yield* promise(() =>
        client.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: "Hello" }],
          stream: true,
          stream_options: { include_usage: true }
        })
      )
      let text = ""
      let usage: OpenAI.CompletionUsage | null | undefined
      let finish: string | null | undefined
      yield* promise(async () => {
        for await (const chunk of stream) {
          text += chunk.choices[0]?.delta.content ?? ""
          if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason
          if (chunk.usage) usage = chunk.usage
        }
      })
      expect(text.split(" ").filter((w) => w !== "").length).toBeGreaterThanOrEqual(5)
      expect(finish).toBe("stop")
      expect(usage?.completion_tokens).toBe(5)
    }).pipe(Effect.scoped)
  )

  it.live("does not send a usage chunk to a client that did not ask for one, though it asks upstream", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(twoUpstreams())
      const raw = yield* promise(() =>
        fetch(`${gateway.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], stream: true })
        }).then(async (r) => ({
          type: r.headers.get("content-type"),
          upstream: r.headers.get("x-sluice-upstream"),
          body: await r.text()
        }))
      )
      expect(raw.type).toContain("text/event-stream")
      expect(raw.body.endsWith("data: [DONE]\n\n")).toBe(true)
      expect(raw.body).not.toMatch(/"usage":\{/)
      const sent = gateway.simulator(raw.upstream!).requests().at(-1)?.body as Record<string, unknown>
      expect(sent["stream_options"]).toEqual({ include_usage: true })
    }).pipe(Effect.scoped)
  )

  it.live("returns tool calls for tools / tool_choice, streaming and not", () =>
    Effect.gen(function* () {
      const { client } = yield* startGateway(twoUpstreams())
      const tools: Array<OpenAI.ChatCompletionTool> = [
        { type: "function", function: { name: "get_weather", parameters: { type: "object", properties: {} } } },
        { type: "function", function: { name: "get_time", parameters: { type: "object", properties: {} } } }
      ]
      const completion = yield* promise(() =>
        client.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: "What time is it?" }],
          tools,
          tool_choice: { type: "function", function: { name: "get_time" } }
        })
      )
      const call = completion.choices[0]?.message.tool_calls?.[0]
      expect(call?.type === "function" ? call.function.name : undefined).toBe("get_time")
      expect(completion.choices[0]?.finish_reason).toBe("tool_calls")
      const stream = client.chat.completions.stream({
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "Weather?" }],
        tools
      })
      const final = yield* promise(() => stream.finalChatCompletion())
      const streamed = final.choices[0]?.message.tool_calls?.[0]
      expect(streamed?.type === "function" ? streamed.function.name : undefined).toBe("get_weather")
    }).pipe(Effect.scoped)
  )

  it.live("honours response_format json_object and json_schema", () =>
    Effect.gen(function* () {
      const { client } = yield* startGateway(twoUpstreams())
      for (const response_format of [
        { type: "json_object" as const },
        {
          type: "json_schema" as const,
          json_schema: { name: "answer", schema: { type: "object", properties: { simulated: { type: "boolean" } } } }
        }
      ]) {
        const completion = yield* promise(() =>
          client.chat.completions.create({
            model: "gpt-4o-mini",
            messages: [{ role: "user", content: "JSON please" }],
            response_format
          })
        )
        expect(JSON.parse(completion.choices[0]?.message.content ?? "")).toMatchObject({ simulated: true })
      }
    }).pipe(Effect.scoped)
  )

  it.live("passes image parts and unknown request fields through to the upstream untouched", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(twoUpstreams())
      const image = {
        type: "image_url" as const,
        image_url: { url: "data:image/png;base64,iVBORw0KGgo=", detail: "low" as const }
      }
      const { response } = yield* promise(() =>
        gateway.client.chat.completions
          .create({
            model: "gpt-4o-mini",
            messages: [{ role: "user", content: [{ type: "text", text: "What is this?" }, image] }],
            seed: 7,
            logit_bias: { "50256": -100 },
            // Fields Sluice has never heard of must reach the upstream as sent.
            ...({ sluice_unknown_field: { nested: [1, 2, 3] }, top_k: 40 } as object)
          })
          .withResponse()
      )
      const upstream = response.headers.get("x-sluice-upstream")!
      const sent = gateway.simulator(upstream).requests().at(-1)?.body as Record<string, unknown>
      expect(sent["sluice_unknown_field"]).toEqual({ nested: [1, 2, 3] })
      expect(sent["top_k"]).toBe(40)
      expect(sent["seed"]).toBe(7)
      expect(sent["logit_bias"]).toEqual({ "50256": -100 })
      expect((sent["messages"] as Array<{ content: unknown }>)[0]?.content).toEqual([
        { type: "text", text: "What is this?" },
        image
      ])
    }).pipe(Effect.scoped)
  )

  it.live(
    "passes image parts and unknown request fields of a stream through untouched, forcing only include_usage",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(twoUpstreams())
        const image = { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=", detail: "low" } }
        const audio = { type: "input_audio", input_audio: { data: "UklGRg==", format: "wav" } }
        const body = {
          model: "gpt-4o-mini",
          messages: [
            { role: "system", content: "Be brief.", name: "rules" },
            { role: "user", content: [{ type: "text", text: "What is this?" }, image, audio] }
          ],
          stream: true,
          // A field of stream_options Sluice does not know stays next to the forced include_usage.
          stream_options: { include_obfuscation: false },
          seed: 7,
          logit_bias: { "50256": -100 },
          sluice_unknown_field: { nested: [1, 2, 3], deeper: { keep: null } },
          top_k: 40
        }
        const stream = yield* promise(() =>
          gateway.client.chat.completions
            .create(body as unknown as OpenAI.ChatCompletionCreateParamsStreaming)
            .withResponse()
        )
        let text = ""
        yield* promise(async () => {
          for await (const chunk of stream.data) text += chunk.choices[0]?.delta.content ?? ""
        })
        expect(text).not.toBe("")
        const upstream = stream.response.headers.get("x-sluice-upstream")!
        const sent = gateway.simulator(upstream).requests().at(-1)?.body
        expect(sent).toEqual({ ...body, stream_options: { include_obfuscation: false, include_usage: true } })
      }).pipe(Effect.scoped)
  )

  it.live("serves embeddings and lists the models the pools serve", () =>
    Effect.gen(function* () {
      const { client } = yield* startGateway(twoUpstreams())
      const embedding = yield* promise(() =>
        client.embeddings.create({ model: "text-embedding-3-small", input: ["one", "two"] })
      )
      expect(embedding.data).toHaveLength(2)
      expect(embedding.data[0]?.embedding).toHaveLength(8)
      const models = yield* promise(() => client.models.list())
      expect(models.data.map((m) => m.id).sort()).toEqual(["fast", "gpt-4o-mini", "text-embedding-3-small"])
    }).pipe(Effect.scoped)
  )

  it.live("routes an alias to its pool as the target model", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(twoUpstreams())
      const { response } = yield* promise(() =>
        gateway.client.chat.completions
          .create({ model: "fast", messages: [{ role: "user", content: "Hi" }] })
          .withResponse()
      )
      const sent = gateway.simulator(response.headers.get("x-sluice-upstream")!).requests().at(-1)?.body as {
        model: string
      }
      expect(sent.model).toBe("gpt-4o-mini")
    }).pipe(Effect.scoped)
  )

  it.live("answers an unknown model with 404 listing the models that exist", () =>
    Effect.gen(function* () {
      const { client, routes } = yield* startGateway(twoUpstreams())
      const result = yield* attempt(() =>
        client.chat.completions.create({ model: "gpt-5-ultra", messages: [{ role: "user", content: "Hi" }] })
      )
      expect(result.ok).toBe(false)
      const error = (result as { error: unknown }).error
      expect(error).toBeInstanceOf(OpenAI.NotFoundError)
      // The trace of the refused request carries the id the client was given.
      const id = (error as APIError).headers?.get("x-request-id")
      expect(id).toMatch(/^req_/)
      expect(routes().at(-1)?.["sluice.request_id"]).toBe(id)
      const message = (error as APIError).message
      expect(message).toContain("gpt-5-ultra")
      expect(message).toContain("gpt-4o-mini")
      expect(message).toContain("sim-*")
    }).pipe(Effect.scoped)
  )

  it.live("answers a body of thousands of bad parts with one 400 naming the first, at once", () =>
    Effect.gen(function* () {
      const { url } = yield* startGateway(twoUpstreams())
      // 8,000 bad messages make 80,000 decode issues: formatting them must stay linear, or one such
      // request would hold the event loop (and every other request) for minutes.
      const body = JSON.stringify({
        model: "gpt-4o-mini",
        messages: Array.from({ length: 8_000 }, () => ({ role: "x", content: 5 }))
      })
      const answer = yield* promise(() =>
        fetch(`${url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body
        }).then(async (r) => ({ status: r.status, body: (await r.json()) as { error: { param: string | null } } }))
      )
      expect(answer.status).toBe(400)
      expect(answer.body.error.param).toMatch(/^messages\[0\]/)
      // The gateway still serves others.
      const health = yield* promise(() => fetch(`${url}/health`).then((r) => r.status))
      expect(health).toBe(200)
    }).pipe(Effect.scoped)
  )

  it.live("answers a malformed body with 400 naming the bad field, and invalid JSON with 400", () =>
    Effect.gen(function* () {
      const { url } = yield* startGateway(twoUpstreams())
      const post = (body: string) =>
        promise(() =>
          fetch(`${url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body
          }).then(async (r) => ({
            status: r.status,
            body: (await r.json()) as { error: { message: string; param: string | null; type: string } }
          }))
        )
      const badRole = yield* post(
        JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "wizard", content: "x" }] })
      )
      expect(badRole.status).toBe(400)
      expect(badRole.body.error.param).toBe("messages[0].role")
      expect(badRole.body.error.type).toBe("invalid_request_error")
      const noMessages = yield* post(JSON.stringify({ model: "gpt-4o-mini" }))
      expect(noMessages.status).toBe(400)
      expect(noMessages.body.error.param).toBe("messages")
      const badTokens = yield* post(
        JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }], max_tokens: -1 })
      )
      expect(badTokens.status).toBe(400)
      expect(badTokens.body.error.param).toBe("max_tokens")
      const notJson = yield* post("{not json")
      expect(notJson.status).toBe(400)
      expect(notJson.body.error.message).toContain("not valid JSON")
    }).pipe(Effect.scoped)
  )

  it.live("names the deepest bad field in a 400 and merges the choices of a union into one message", () =>
    Effect.gen(function* () {
      const { client } = yield* startGateway(twoUpstreams())
      // The SDK's own message starts with the status; the envelope's message is what the gateway wrote.
      const reject = (body: Record<string, unknown>) =>
        attempt(() =>
          client.chat.completions.create(body as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming)
        ).pipe(
          Effect.map((result) => {
            const error = (result as { error: APIError }).error
            return { status: error.status, param: error.param, message: (error.error as { message: string }).message }
          })
        )
      // A content part without `type`: the part is wrong, not the content's being an array.
      const noType = yield* reject({
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: [{ type: "text", text: "a" }, { text: "b" }] }]
      })
      expect(noType.status).toBe(400)
      expect(noType.param).toBe("messages[0].content[1].type")
      expect(noType.message).toBe("messages[0].content[1].type: is missing")
      // Every allowed value of response_format.type in one message.
      const yaml = yield* reject({
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "a" }],
        response_format: { type: "yaml" }
      })
      expect(yaml.status).toBe(400)
      expect(yaml.param).toBe("response_format.type")
      expect(yaml.message).toBe(
        'response_format.type: Expected one of "text", "json_object", "json_schema", actual "yaml"'
      )
      // A content that is neither a string, an array of parts nor null says all three.
      const number = yield* reject({ model: "gpt-4o-mini", messages: [{ role: "user", content: 5 }] })
      expect(number.param).toBe("messages[0].content")
      expect(number.message).toBe(
        "messages[0].content: Expected one of string, ReadonlyArray<ContentPart>, null, actual 5"
      )
    }).pipe(Effect.scoped)
  )

  it.live("puts x-request-id on every answer, agreeing with the decision, and echoes the client's own", () =>
    Effect.gen(function* () {
      const config = simulatedConfig(
        [
          { id: "a", simulate: { completionTokens: 3 } },
          { id: "broken", simulate: { failureRate: 1 } }
        ],
        [
          { id: "chat", models: ["gpt-4o-mini"], upstreams: ["a"] },
          { id: "bad", models: ["broken-model"], upstreams: ["broken"] }
        ],
        { maxBodyBytes: 2048 }
      )
      const gateway = yield* startGateway(config)
      const send = (path: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) =>
        promise(() =>
          fetch(`${gateway.url}${path}`, {
            method: init.method ?? (init.body === undefined ? "GET" : "POST"),
            headers: { "content-type": "application/json", ...init.headers },
            ...(init.body === undefined
              ? {}
              : { body: typeof init.body === "string" ? init.body : JSON.stringify(init.body) })
          }).then(async (r) => ({ status: r.status, id: r.headers.get("x-request-id"), text: await r.text() }))
        )
      const hi = [{ role: "user", content: "Hi" }]
      const answers = {
        chat: yield* send("/v1/chat/completions", { body: { model: "gpt-4o-mini", messages: hi } }),
        stream: yield* send("/v1/chat/completions", { body: { model: "gpt-4o-mini", messages: hi, stream: true } }),
        upstreamFailed: yield* send("/v1/chat/completions", { body: { model: "broken-model", messages: hi } }),
        unknownModel: yield* send("/v1/chat/completions", { body: { model: "nope", messages: hi } }),
        malformed: yield* send("/v1/chat/completions", { body: { model: "gpt-4o-mini" } }),
        notJson: yield* send("/v1/chat/completions", { body: "{oops" }),
        tooLarge: yield* send("/v1/chat/completions", {
          body: { model: "gpt-4o-mini", messages: [{ role: "user", content: "x".repeat(4096) }] }
        }),
        models: yield* send("/v1/models"),
        health: yield* send("/health"),
        noRoute: yield* send("/v2/nothing"),
        wrongMethod: yield* send("/v1/models", { method: "DELETE" })
      }
      expect(Object.fromEntries(Object.entries(answers).map(([name, answer]) => [name, answer.status]))).toEqual({
        chat: 200,
        stream: 200,
        upstreamFailed: 502,
        unknownModel: 404,
        malformed: 400,
        notJson: 400,
        tooLarge: 413,
        models: 200,
        health: 200,
        noRoute: 404,
        wrongMethod: 405
      })
      const ids = Object.values(answers).map((answer) => answer.id)
      for (const id of ids) expect(id).toMatch(/^req_[0-9a-f]{32}$/)
      expect(new Set(ids).size).toBe(ids.length)
      // The decisions (as traced) carry the very ids the client got, and so does every request's server span.
      const traced = gateway.routes().map((route) => route["sluice.request_id"])
      expect(traced).toEqual(expect.arrayContaining([answers.chat.id, answers.stream.id, answers.upstreamFailed.id]))
      const served = gateway
        .spans()
        .filter((span) => span.name.startsWith("http.server"))
        .map((span) => span.attributes["sluice.request_id"])
      expect(served).toEqual(
        expect.arrayContaining([answers.chat.id, answers.unknownModel.id, answers.malformed.id, answers.models.id])
      )
      // An id the client sends is used throughout: header, decision and stream alike.
      for (const stream of [false, true]) {
        const mine = `client-id-${stream}`
        const answer = yield* send("/v1/chat/completions", {
          body: { model: "gpt-4o-mini", messages: hi, stream },
          headers: { "x-request-id": mine }
        })
        expect(answer.id).toBe(mine)
        expect(gateway.routes().map((route) => route["sluice.request_id"])).toContain(mine)
      }
      const mine = yield* send("/v1/chat/completions", {
        body: { model: "broken-model", messages: hi },
        headers: { "x-request-id": "client-id-error" }
      })
      expect(mine).toMatchObject({ status: 502, id: "client-id-error" })
    }).pipe(Effect.scoped)
  )

  it.live("answers 503 with Retry-After when no upstream is available", () =>
    Effect.gen(function* () {
      const config = simulatedConfig(
        [{ id: "off", enabled: false }],
        [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["off"] }]
      )
      const { client } = yield* startGateway(config)
      const result = yield* attempt(() =>
        client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
      )
      const error = (result as { error: APIError }).error
      expect(error.status).toBe(503)
      expect(error.headers?.get("retry-after")).toBe("1")
      expect(error.message).toContain("off: disabled in config")
    }).pipe(Effect.scoped)
  )

  it.live("answers 502 naming the upstream when every upstream fails", () =>
    Effect.gen(function* () {
      const config = simulatedConfig(
        [{ id: "broken", simulate: { failureRate: 1 } }],
        [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["broken"] }]
      )
      const { client } = yield* startGateway(config)
      const result = yield* attempt(() =>
        client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
      )
      const error = (result as { error: APIError }).error
      expect(error.status).toBe(502)
      expect(error.message).toContain("upstream 'broken' failed")
      expect(error.message).toContain("HTTP 500")
    }).pipe(Effect.scoped)
  )

  it.live("answers an error after routing with every attempt listed and the headers a success carries", () =>
    Effect.gen(function* () {
      const config = simulatedConfig(
        [
          { id: "first", simulate: { failureRate: 1 } },
          { id: "second", simulate: { failureRate: 1 } }
        ],
        [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["first", "second"] }]
      )
      const { client } = yield* startGateway(config)
      const result = yield* attempt(() =>
        client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
      )
      const error = (result as { error: APIError }).error
      expect(error.status).toBe(502)
      expect(error.headers?.get("x-sluice-pool")).toBe("chat")
      expect(error.headers?.get("x-sluice-attempts")).toBe("2")
      expect(error.headers?.get("x-sluice-upstream")).toBe("second")
      expect((error.error as { sluice_attempts?: unknown }).sluice_attempts).toEqual([
        {
          upstream: "first",
          pool: "chat",
          outcome: "failure",
          status: 500,
          error: expect.stringContaining("HTTP 500")
        },
        {
          upstream: "second",
          pool: "chat",
          outcome: "failure",
          status: 500,
          error: expect.stringContaining("HTTP 500")
        }
      ])
    }).pipe(Effect.scoped)
  )

  it.live("fails over to another upstream after a 500 and says so in x-sluice-attempts", () =>
    Effect.gen(function* () {
      const config = simulatedConfig(
        [{ id: "broken", simulate: { failureRate: 1 } }, { id: "good" }],
        [{ id: "chat", models: ["gpt-4o-mini"], strategy: "priority", upstreams: ["broken", "good"] }]
      )
      const { client } = yield* startGateway(config)
      const { response } = yield* promise(() =>
        client.chat.completions
          .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
          .withResponse()
      )
      expect(response.headers.get("x-sluice-upstream")).toBe("good")
      expect(response.headers.get("x-sluice-attempts")).toBe("2")
    }).pipe(Effect.scoped)
  )

  it.live("answers a body over the configured limit with 413", () =>
    Effect.gen(function* () {
      const config = simulatedConfig([{ id: "a" }], [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["a"] }], {
        maxBodyBytes: 1024
      })
      const { client } = yield* startGateway(config)
      const result = yield* attempt(() =>
        client.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: "x".repeat(4096) }]
        })
      )
      const error = (result as { error: APIError }).error
      expect(error.status).toBe(413)
      expect(error.message).toContain("1024 bytes")
    }).pipe(Effect.scoped)
  )

  it.live("ends a stream cut by the upstream with an in-band error event, never a clean end", () =>
    Effect.gen(function* () {
      const config = simulatedConfig(
        [{ id: "cut", simulate: { midStreamCutRate: 1, completionTokens: 20 } }],
        [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["cut"] }]
      )
      const gateway = yield* startGateway(config)
      const raw = yield* promise(() =>
        fetch(`${gateway.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], stream: true })
        }).then((r) => r.text())
      )
      expect(raw).toContain('"content"')
      expect(raw).not.toContain("[DONE]")
      expect(raw).toMatch(/data: \{"error":\{"message":"upstream 'cut' failed: the upstream broke off mid-stream/)
      const stream = yield* promise(() =>
        gateway.client.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: "Hi" }],
          stream: true
        })
      )
      const consumed = yield* attempt(async () => {
        for await (const _ of stream) {
          // drain
        }
      })
      expect(consumed.ok).toBe(false)
    }).pipe(Effect.scoped)
  )

  it.live("cancels the upstream request when the client disconnects", () =>
    Effect.gen(function* () {
      let received = 0
      let closedBeforeAnswer = 0
      const upstream = createServer((req, res) => {
        received++
        res.on("close", () => {
          if (!res.writableEnded) closedBeforeAnswer++
        })
        // never answers: the client will give up first
        void req
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve))),
        () =>
          Effect.sync(() => upstream.closeAllConnections()).pipe(
            Effect.zipRight(Effect.promise(() => new Promise((r) => upstream.close(r))))
          )
      )
      const port = (upstream.address() as AddressInfo).port
      const config = simulatedConfig(
        [{ id: "slow", provider: "openai-compatible", baseUrl: `http://127.0.0.1:${port}/v1` }],
        [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["slow"] }]
      )
      const gateway = yield* startGateway(config)
      for (const stream of [false, true]) {
        const before = closedBeforeAnswer
        const controller = new AbortController()
        const pending = fetch(`${gateway.url}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], stream }),
          signal: controller.signal
        }).catch(() => undefined)
        const expected = received + 1
        yield* promise(async () => {
          for (let i = 0; i < 200 && received < expected; i++) await new Promise((r) => setTimeout(r, 5))
        })
        expect(received).toBe(expected)
        controller.abort()
        yield* promise(() => pending)
        yield* promise(async () => {
          for (let i = 0; i < 200 && closedBeforeAnswer === before; i++) await new Promise((r) => setTimeout(r, 5))
        })
        expect(closedBeforeAnswer).toBe(before + 1)
      }
    }).pipe(Effect.scoped)
  )
})
