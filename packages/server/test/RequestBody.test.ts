import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type OpenAI from "openai"
import { APIError } from "openai"
import { simulatedConfig, startGateway } from "./harness.js"

const oneUpstream = () =>
  simulatedConfig(
    [{ id: "a" }],
    [
      { id: "chat", models: ["gpt-4o-mini"], upstreams: ["a"] },
      { id: "embeddings", models: ["text-embedding-3-small"], upstreams: ["a"] }
    ]
  )

interface Answer {
  readonly status: number
  readonly body: { readonly error?: { readonly message: string; readonly param: string | null } }
}

/** POSTs raw bytes (which the `openai` SDK cannot send) and reads the JSON answer. */
const postBytes = (url: string, body: Uint8Array | string) =>
  Effect.promise(() =>
    fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body }).then(
      async (r): Promise<Answer> => ({ status: r.status, body: (await r.json()) as Answer["body"] })
    )
  )

/** JSON text of `depth` arrays nested in one another. */
const nestedArrays = (depth: number) => "[".repeat(depth) + "]".repeat(depth)
/** JSON text of `depth` objects nested in one another under the key `a`. */
const nestedObjects = (depth: number) => '{"a":'.repeat(depth - 1) + "{}" + "}".repeat(depth - 1)

const chatBody = (fields: string) => `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]${fields}}`

describe("request bodies the gateway refuses", () => {
  it.live("answers a body that is not valid UTF-8 with 400 saying so, and never calls the upstream", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(oneUpstream())
      const utf8 = new TextEncoder()
      const head = utf8.encode('{"model":"gpt-4o-mini","messages":[{"role":"user","content":"caf')
      const tail = utf8.encode('"}]}')
      // 0xE9 is "é" in Latin-1: a lone continuation-less lead byte in UTF-8, and 0xFF is never valid.
      for (const bad of [[0xe9], [0xff, 0xfe], [0xc3]]) {
        const body = new Uint8Array([...head, ...bad, ...tail])
        const answer = yield* postBytes(`${gateway.url}/v1/chat/completions`, body)
        expect(answer.status).toBe(400)
        expect(answer.body.error?.message).toMatch(/not valid UTF-8/)
      }
      const embeddings = yield* postBytes(
        `${gateway.url}/v1/embeddings`,
        new Uint8Array([...utf8.encode('{"model":"text-embedding-3-small","input":"'), 0xff, ...utf8.encode('"}')])
      )
      expect(embeddings.status).toBe(400)
      expect(embeddings.body.error?.message).toMatch(/not valid UTF-8/)
      expect(gateway.simulator("a").stats().requests).toBe(0)
      // Valid multi-byte text still goes through.
      const fine = yield* postBytes(
        `${gateway.url}/v1/chat/completions`,
        JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "café ☕ 🍰" }] })
      )
      expect(fine.status).toBe(200)
    }).pipe(Effect.scoped)
  )

  it.live("answers JSON nested 100,000 deep with 400 naming the field, wherever the nesting is", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(oneUpstream())
      const post = (body: string) => postBytes(`${gateway.url}/v1/chat/completions`, body)
      const content = yield* post(
        `{"model":"gpt-4o-mini","messages":[{"role":"user","content":${nestedArrays(100_000)}}]}`
      )
      const unknownField = yield* post(chatBody(`,"extra":${nestedObjects(100_000)}`))
      const toolParameters = yield* post(
        chatBody(
          `,"tools":[{"type":"function","function":{"name":"f","parameters":` +
            `{"type":"object","properties":{"x":${nestedArrays(100_000)}}}}}]`
        )
      )
      const embeddings = yield* postBytes(
        `${gateway.url}/v1/embeddings`,
        `{"model":"text-embedding-3-small","input":${nestedArrays(100_000)}}`
      )
      expect([content, unknownField, toolParameters, embeddings].map((answer) => answer.status)).toEqual([
        400, 400, 400, 400
      ])
      // The document is level 1: the path leads to the first array or object past level 64.
      expect(content.body.error?.param).toBe("messages[0].content" + "[0]".repeat(61))
      expect(unknownField.body.error?.param).toBe("extra" + ".a".repeat(63))
      expect(toolParameters.body.error?.param).toMatch(/^tools\[0\]\.function\.parameters\.properties\.x(\[0\])+$/)
      expect(embeddings.body.error?.param).toMatch(/^input(\[0\])+$/)
      for (const answer of [content, unknownField, toolParameters, embeddings]) {
        expect(answer.body.error?.message).toBe(
          `${answer.body.error?.param}: arrays and objects nested deeper than 64 levels; flatten this value`
        )
      }
      expect(gateway.simulator("a").stats().requests).toBe(0)
    }).pipe(Effect.scoped)
  )

  it.live("accepts JSON nested 64 levels deep and refuses 65, through the openai SDK", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(oneUpstream())
      // The body is level 1, `extra` level 2: 63 arrays in `extra` make 64 levels.
      const create = (depth: number) =>
        Effect.promise(() =>
          gateway.client.chat.completions
            .create({
              model: "gpt-4o-mini",
              messages: [{ role: "user", content: "Hi" }],
              ...({ extra: JSON.parse(nestedArrays(depth)) as unknown } as object)
            } as OpenAI.ChatCompletionCreateParamsNonStreaming)
            .then(
              (completion) => ({ ok: true as const, completion }),
              (error: unknown) => ({ ok: false as const, error })
            )
        )
      const deepest = yield* create(63)
      expect(deepest.ok).toBe(true)
      const tooDeep = yield* create(64)
      expect(tooDeep.ok).toBe(false)
      const error = (tooDeep as { error: APIError }).error
      expect(error).toBeInstanceOf(APIError)
      expect(error.status).toBe(400)
      expect(error.param).toBe("extra" + "[0]".repeat(63))
    }).pipe(Effect.scoped)
  )
})
