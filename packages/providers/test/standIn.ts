/** A stand-in upstream for provider tests: answers every request with `answer`'s status, headers and body, and records what it was sent. */
import { Effect } from "effect"
import type { IncomingHttpHeaders } from "node:http"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"

/** What a stand-in answers. */
export interface Answer {
  readonly status: number
  readonly headers?: Readonly<Record<string, string>>
  readonly body: string
}

/** One request a stand-in received. */
export interface Received {
  readonly path: string
  readonly headers: IncomingHttpHeaders
  readonly body: string
}

/** Starts a stand-in on 127.0.0.1 in the test's scope: its URL and the requests it received so far. */
export const startStandIn = (answer: (received: Received) => Answer) =>
  Effect.gen(function* () {
    const received: Array<Received> = []
    const server = createServer((request, response) => {
      let body = ""
      request.setEncoding("utf8")
      request.on("data", (chunk: string) => (body += chunk))
      request.on("end", () => {
        const got = { path: request.url ?? "", headers: request.headers, body }
        received.push(got)
        const { status, headers, body: text } = answer(got)
        response.writeHead(status, { "content-type": "application/json", ...headers })
        response.end(text)
      })
    })
    yield* Effect.acquireRelease(
      Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
      () =>
        Effect.async<void>((resume) => {
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
        })
    )
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received }
  })
