import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
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
})
