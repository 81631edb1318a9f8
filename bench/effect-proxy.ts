/**
 * The Effect floor (opt-in target `effect`): the same HTTP stack Sluice is built on, with nothing else.
 * `@effect/platform`'s HttpServer on `node:http` (as in packages/server/src/Server.ts), an HttpRouter
 * with one route, and `NodeHttpClient.layerUndici` for the upstream call. The request body is read
 * as text and forwarded; the upstream response is streamed back as it arrives. No parsing, no routing.
 * What Sluice costs on top of this is Sluice's own; what this costs over bench/proxy.ts is the framework's.
 *
 *   BENCH_UPSTREAM=http://127.0.0.1:9001 PORT=9003 node --import tsx bench/effect-proxy.ts
 */
import {
  HttpClient,
  HttpClientRequest,
  HttpRouter,
  HttpServer,
  HttpServerRequest,
  HttpServerResponse
} from "@effect/platform"
import { NodeHttpClient, NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { createServer } from "node:http"

const upstream = process.env["BENCH_UPSTREAM"] ?? ""
const port = Number(process.env["PORT"] ?? "0")
if (upstream === "") {
  console.error("bench/effect-proxy.ts: set BENCH_UPSTREAM (e.g. http://127.0.0.1:9001)")
  process.exit(1)
}

const forward = Effect.gen(function* () {
  const request = yield* HttpServerRequest.HttpServerRequest
  const body = yield* request.text
  // Scoped like Sluice's streaming calls: the response body lives until the server has written it.
  const client = HttpClient.withScope(yield* HttpClient.HttpClient)
  const response = yield* client.execute(
    HttpClientRequest.post(upstream + request.url).pipe(
      HttpClientRequest.bodyText(body, request.headers["content-type"] ?? "application/json")
    )
  )
  return HttpServerResponse.stream(response.stream, {
    status: response.status,
    contentType: response.headers["content-type"] ?? "application/octet-stream"
  })
}).pipe(
  Effect.catchAll((error) =>
    HttpServerResponse.text(JSON.stringify({ error: { message: `effect proxy: ${String(error)}` } }), {
      status: 502,
      contentType: "application/json"
    })
  )
)

const app = HttpRouter.empty.pipe(
  HttpRouter.post("/v1/chat/completions", forward),
  HttpRouter.get("/health", HttpServerResponse.text(`{"status":"ok"}`, { contentType: "application/json" }))
)

const main = HttpServer.serve(app).pipe(
  Layer.provide(NodeHttpClient.layerUndici),
  Layer.provide(NodeHttpServer.layer(createServer, { host: "127.0.0.1", port }))
)

NodeRuntime.runMain(Layer.launch(main), { disablePrettyLogger: true })
