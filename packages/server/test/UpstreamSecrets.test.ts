import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { APIError } from "openai"
import { simulatedConfig, startGateway, startUpstream } from "./harness.js"

/** The upstream's key: `/` and `"` make its JSON-escaped spellings differ from the key itself. */
const KEY = 'sk-proj/"echo"+Key-0123456789abcdefABCDEF'
/** A second credential, sent as a configured header. */
const HEADER_KEY = "xk-secondary-4242424242424242"

/** Every spelling of a credential that must never reach a client, and a prefix of each. */
const leaks = [
  KEY,
  JSON.stringify(KEY).slice(1, -1),
  JSON.stringify(KEY).slice(1, -1).replaceAll("/", "\\/"),
  HEADER_KEY,
  "sk-proj",
  "xk-secondary"
]

const expectNoSecret = (text: string) => {
  for (const leak of leaks) expect(text).not.toContain(leak)
}

/**
 * An upstream that repeats the credentials it received in its errors, as some servers do. The
 * model asked for picks the failure: a JSON 401 or 500, a plain-text 502 whose key straddles the
 * 200th character, a 200 that is not JSON (the parser's message quotes it), a stream answered 401,
 * or a stream that fails in-band after its first content.
 */
const echoing = (request: IncomingMessage, body: string, response: ServerResponse) => {
  const authorization = request.headers["authorization"] ?? ""
  const headers = JSON.stringify({ authorization, "x-api-key": request.headers["x-api-key"] })
  const model = (JSON.parse(body) as { model: string }).model
  const json = (status: number, message: string) => {
    response.writeHead(status, { "content-type": "application/json" })
    response.end(JSON.stringify({ error: { message, type: "invalid_request_error", echoed: headers } }))
  }
  switch (model) {
    case "echo-401":
      return json(401, `Incorrect API key provided: ${authorization}. Find your key in your account settings.`)
    case "echo-500":
      return json(500, `internal error while serving a request with headers ${headers}`)
    case "echo-garbage": {
      response.writeHead(200, { "content-type": "application/json" })
      return response.end(`{"token": ${authorization.replace(/^Bearer /, "")}}`)
    }
    case "echo-text": {
      response.writeHead(502, { "content-type": "text/plain" })
      return response.end(`${"upstream proxy failure; ".repeat(6)}request headers were ${headers}`)
    }
    case "echo-stream": {
      response.writeHead(200, { "content-type": "text/event-stream" })
      const chunk = (delta: object) =>
        `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", created: 1, model, choices: [{ index: 0, delta, finish_reason: null }] })}\n\n`
      response.write(chunk({ role: "assistant", content: "" }) + chunk({ content: "Hello" }))
      const error = { error: { message: `token expired: ${authorization} (x-api-key ${HEADER_KEY})`, raw: headers } }
      return response.end(`data: ${JSON.stringify(error)}\n\n`)
    }
    default:
      return json(401, `Incorrect API key provided: ${authorization}.`)
  }
}

const startEchoing = Effect.gen(function* () {
  const upstream = yield* startUpstream(echoing)
  return yield* startGateway(
    simulatedConfig(
      [
        {
          id: "echo",
          provider: "openai-compatible",
          baseUrl: upstream.baseUrl,
          apiKeyEnv: "ECHO_UPSTREAM_KEY",
          headers: { "x-api-key": HEADER_KEY }
        }
      ],
      [{ id: "chat", models: ["echo-*"], upstreams: ["echo"] }]
    ),
    { env: { ECHO_UPSTREAM_KEY: KEY } }
  )
})

/** One request as raw HTTP: status, headers and body as the client receives them. */
const raw = (url: string, model: string, stream: boolean) =>
  Effect.promise(() =>
    fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model, messages: [{ role: "user", content: "Hi" }], stream })
    }).then(async (r) => ({
      status: r.status,
      headers: JSON.stringify([...r.headers]),
      body: await r.text()
    }))
  )

describe("upstream credentials never reach a client, through the gateway with the openai SDK", () => {
  it.live("scrubs the upstream's key from a 401 and a 500 that repeat it, keeping the rest of the message", () =>
    Effect.gen(function* () {
      const gateway = yield* startEchoing
      const rejected = yield* Effect.promise(() =>
        gateway.client.chat.completions.create({ model: "echo-401", messages: [{ role: "user", content: "Hi" }] }).then(
          () => undefined,
          (error: unknown) => error
        )
      )
      expect(rejected).toBeInstanceOf(APIError)
      const error = rejected as APIError
      expect(error.status).toBe(401)
      expect(error.message).toContain("Incorrect API key provided: Bearer <redacted>.")
      expectNoSecret(error.message)
      expectNoSecret(JSON.stringify(error.error))
      const answers = {
        unauthorized: yield* raw(gateway.url, "echo-401", false),
        failed: yield* raw(gateway.url, "echo-500", false),
        text: yield* raw(gateway.url, "echo-text", false),
        garbage: yield* raw(gateway.url, "echo-garbage", false)
      }
      expect(Object.values(answers).map((answer) => answer.status)).toEqual([401, 502, 502, 502])
      for (const answer of Object.values(answers)) {
        expectNoSecret(answer.headers)
        expectNoSecret(answer.body)
      }
      expect(answers.failed.body).toContain("internal error while serving a request with headers")
    }).pipe(Effect.scoped)
  )

  it.live("scrubs the key from a stream refused with 401 and from an in-band error after content", () =>
    Effect.gen(function* () {
      const gateway = yield* startEchoing
      const refused = yield* raw(gateway.url, "echo-401", true)
      expect(refused.status).toBe(401)
      expectNoSecret(refused.body)
      const failed = yield* raw(gateway.url, "echo-stream", true)
      expect(failed.status).toBe(200)
      expect(failed.body).toContain("Hello")
      expect(failed.body).toContain("token expired: Bearer <redacted> (x-api-key <redacted>)")
      expectNoSecret(failed.body)
      const thrown = yield* Effect.promise(async () => {
        const stream = await gateway.client.chat.completions.create({
          model: "echo-stream",
          messages: [{ role: "user", content: "Hi" }],
          stream: true
        })
        try {
          for await (const _ of stream) {
            // drain
          }
          return undefined
        } catch (error) {
          return error
        }
      })
      expect(thrown).toBeInstanceOf(APIError)
      expectNoSecret((thrown as APIError).message)
      expectNoSecret(JSON.stringify((thrown as APIError).error))
    }).pipe(Effect.scoped)
  )
})
