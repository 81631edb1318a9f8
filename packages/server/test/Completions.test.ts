/**
 * `POST /v1/completions` (the legacy endpoint) with the `openai` SDK: passed through to the upstreams
 * that have it, whole and streamed, through the same pools (failover, decision headers), and a clear
 * 400 naming the pool when none of its upstreams can take it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Simulator } from "@sluice/providers"
import { Effect } from "effect"
import type { ServerResponse } from "node:http"
import type OpenAI from "openai"
import { BadRequestError } from "openai"
import { simulatedConfig, startGateway, startUpstream } from "./harness.js"

const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

const gatewayWith = (upstreams: ReadonlyArray<Record<string, unknown>>) =>
  startGateway(
    simulatedConfig(upstreams, [
      {
        id: "legacy",
        models: ["gpt-3.5-turbo-instruct"],
        strategy: "priority",
        upstreams: upstreams.map((u) => u["id"])
      }
    ])
  )

const MODEL = "gpt-3.5-turbo-instruct"

describe("POST /v1/completions with the openai SDK", () => {
  it.live("passes a completion through to the upstream that has the endpoint, skipping one that has not", () =>
    Effect.gen(function* () {
      const claude = yield* Simulator.start({ dialect: "anthropic", name: "claude" })
      const gateway = yield* gatewayWith([
        // Preferred, but Anthropic has no legacy completions: never sent there.
        { id: "claude", provider: "anthropic", baseUrl: `${claude.url}/v1`, priority: 0 },
        { id: "gpt", priority: 1, simulate: { completionTokens: 3 } }
      ])
      const { data, response } = yield* promise(() =>
        gateway.client.completions.create({ model: MODEL, prompt: "Say hi", max_tokens: 5, suffix: "!" }).withResponse()
      )
      expect(data).toMatchObject({
        object: "text_completion",
        model: MODEL,
        choices: [{ text: "[gpt] lorem ipsum", index: 0, finish_reason: "stop" }],
        usage: { completion_tokens: 3 }
      })
      expect(response.headers.get("x-sluice-pool")).toBe("legacy")
      expect(response.headers.get("x-sluice-upstream")).toBe("gpt")
      // Passed through: the client's fields, unknown ones included, reach the upstream as sent.
      expect(gateway.simulator("gpt").requests().at(-1)).toMatchObject({
        path: "/v1/completions",
        body: { model: MODEL, prompt: "Say hi", max_tokens: 5, suffix: "!" }
      })
      expect(claude.stats().requests).toBe(0)
    }).pipe(Effect.scoped)
  )

  it.live("streams a completion, with usage only when the client asks for it", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith([{ id: "gpt", simulate: { completionTokens: 4 } }])
      const read = (includeUsage: boolean) =>
        promise(async () => {
          const stream = await gateway.client.completions.create({
            model: MODEL,
            prompt: "Say hi",
            stream: true,
            ...(includeUsage ? { stream_options: { include_usage: true } } : {})
          })
          let text = ""
          let usage: unknown = undefined
          let finish: string | null = null
          for await (const chunk of stream) {
            text += chunk.choices[0]?.text ?? ""
            finish = chunk.choices[0]?.finish_reason ?? finish
            usage = chunk.usage ?? usage
          }
          return { text, usage, finish }
        })
      expect(yield* read(false)).toEqual({ text: "[gpt] lorem ipsum dolor", usage: undefined, finish: "stop" })
      expect((yield* read(true)).usage).toMatchObject({ completion_tokens: 4 })
      // The upstream is always asked for usage, so budgets learn the real count.
      expect(gateway.simulator("gpt").requests().at(0)?.body).toMatchObject({
        stream: true,
        stream_options: { include_usage: true }
      })
    }).pipe(Effect.scoped)
  )

  it.live("fails over to another upstream of the pool, whole and streamed", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith([
        { id: "down", priority: 0, simulate: { failureRate: 1 } },
        { id: "up", priority: 1, simulate: { completionTokens: 2 } }
      ])
      const { data, response } = yield* promise(() =>
        gateway.client.completions.create({ model: MODEL, prompt: "Hi" }).withResponse()
      )
      expect(data.choices[0]?.text).toBe("[up] lorem")
      expect(response.headers.get("x-sluice-attempts")).toBe("2")
      const streamed = yield* promise(async () => {
        const { data: stream, response } = await gateway.client.completions
          .create({ model: MODEL, prompt: "Hi", stream: true })
          .withResponse()
        let text = ""
        for await (const chunk of stream) text += chunk.choices[0]?.text ?? ""
        return { text, upstream: response.headers.get("x-sluice-upstream") }
      })
      expect(streamed).toEqual({ text: "[up] lorem", upstream: "up" })
    }).pipe(Effect.scoped)
  )

  it.live("answers 400 naming the pool and its upstreams when none has the endpoint", () =>
    Effect.gen(function* () {
      const claude = yield* Simulator.start({ dialect: "anthropic", name: "claude" })
      const gateway = yield* gatewayWith([
        { id: "claude", provider: "anthropic", baseUrl: `${claude.url}/v1` },
        // A local server listed without it (its own capabilities narrow the kind's).
        { id: "local", capabilities: ["tools"] }
      ])
      const error = yield* promise(() =>
        gateway.client.completions.create({ model: MODEL, prompt: "Hi" }).then(
          () => undefined,
          (e: unknown) => e
        )
      )
      expect(error).toBeInstanceOf(BadRequestError)
      const message = (error as BadRequestError).message
      expect(message).toContain("pool 'legacy'")
      expect(message).toContain("claude (anthropic upstream without completions)")
      expect(message).toContain("local (simulated upstream without completions)")
      expect((error as BadRequestError).code).toBe("unsupported_feature")
      expect(claude.stats().requests).toBe(0)
      expect(gateway.simulator("local").stats().requests).toBe(0)
    }).pipe(Effect.scoped)
  )

  it.live(
    "checks every passed-through event: an error before content fails over, a malformed one after ends the stream",
    () =>
      Effect.gen(function* () {
        const sse = (res: ServerResponse, frames: ReadonlyArray<string>) => {
          res.writeHead(200, { "content-type": "text/event-stream" })
          res.end(frames.map((f) => `data: ${f}\n\n`).join(""))
        }
        const overloaded = yield* startUpstream((_req, _body, res) => sse(res, ['{"error":{"message":"overloaded"}}']))
        const mangled = yield* startUpstream((_req, _body, res) =>
          sse(res, ['{"choices":[{"text":"Hi","index":0}]}', '{"choices":[{"text":"the'])
        )
        const read = (gateway: { readonly client: OpenAI }) =>
          promise(async () => {
            let text = ""
            try {
              for await (const chunk of await gateway.client.completions.create({
                model: MODEL,
                prompt: "x",
                stream: true
              }))
                text += chunk.choices[0]?.text ?? ""
              return { text, error: undefined }
            } catch (error) {
              return { text, error }
            }
          })
        const failover = yield* gatewayWith([
          { id: "overloaded", provider: "openai-compatible", baseUrl: overloaded.baseUrl, priority: 0 },
          { id: "gpt", priority: 1, simulate: { completionTokens: 2 } }
        ])
        expect(yield* read(failover)).toEqual({ text: "[gpt] lorem", error: undefined })
        const cut = yield* gatewayWith([{ id: "mangled", provider: "openai-compatible", baseUrl: mangled.baseUrl }])
        const broken = yield* read(cut)
        expect(broken.text).toBe("Hi")
        expect(String(broken.error)).toContain("malformed stream event")
      }).pipe(Effect.scoped)
  )

  it.live("refuses a body without a prompt with a 400 naming the field", () =>
    Effect.gen(function* () {
      const gateway = yield* gatewayWith([{ id: "gpt" }])
      const answer = yield* promise(() =>
        fetch(`${gateway.url}/v1/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model: MODEL })
        }).then(async (r) => ({ status: r.status, body: (await r.json()) as { error: { param: string } } }))
      )
      expect(answer.status).toBe(400)
      expect(answer.body.error.param).toBe("prompt")
    }).pipe(Effect.scoped)
  )
})
