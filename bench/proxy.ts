/**
 * The bare proxy baseline: the least a Node reverse proxy can do. A `node:http` server forwards every
 * request to one upstream over an undici keep-alive Pool and streams the upstream response back
 * unchanged (status, headers minus hop-by-hop ones, body chunk by chunk). No parsing, no routing.
 *
 *   BENCH_UPSTREAM=http://127.0.0.1:9001 PORT=9002 node --import tsx bench/proxy.ts
 */
import type { IncomingHttpHeaders } from "node:http"
import { createServer } from "node:http"
import type { Dispatcher } from "undici"
import { Pool } from "undici"

const upstream = process.env["BENCH_UPSTREAM"]
const port = Number(process.env["PORT"] ?? "0")
const host = process.env["HOST"] ?? "127.0.0.1"
if (upstream === undefined || upstream === "") {
  console.error("bench/proxy.ts: set BENCH_UPSTREAM (e.g. http://127.0.0.1:9001)")
  process.exit(1)
}

const pool = new Pool(upstream, { pipelining: 1, keepAliveTimeout: 30_000 })

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "te",
  "trailer",
  "host"
])

const forwardable = (headers: IncomingHttpHeaders): Record<string, string | Array<string>> => {
  const out: Record<string, string | Array<string>> = {}
  for (const key in headers) {
    const value = headers[key]
    if (value !== undefined && !HOP_BY_HOP.has(key)) out[key] = value
  }
  return out
}

const server = createServer({ keepAlive: true, noDelay: true }, (req, res) => {
  const method = (req.method ?? "GET") as Dispatcher.HttpMethod
  const hasBody = method !== "GET" && method !== "HEAD"
  pool
    .stream(
      { path: req.url ?? "/", method, headers: forwardable(req.headers), body: hasBody ? req : null },
      ({ statusCode, headers }) => {
        res.statusCode = statusCode
        for (const key in headers) {
          const value = headers[key]
          if (value !== undefined && !HOP_BY_HOP.has(key)) res.setHeader(key, value)
        }
        return res
      }
    )
    .catch((error: unknown) => {
      if (res.headersSent) {
        res.destroy(error instanceof Error ? error : undefined)
        return
      }
      const message = error instanceof Error ? error.message : String(error)
      res.statusCode = 502
      res.setHeader("content-type", "application/json")
      res.end(JSON.stringify({ error: { message: `bare proxy: ${message}`, type: "bad_gateway" } }))
    })
})

server.listen(port, host, () => {
  const address = server.address()
  const bound = typeof address === "object" && address !== null ? address.port : port
  console.log(`bare proxy listening on http://${host}:${bound} -> ${upstream}`)
})

const shutdown = (): void => {
  server.close()
  server.closeAllConnections()
  void pool.destroy().finally(() => process.exit(0))
}
process.once("SIGINT", shutdown)
process.once("SIGTERM", shutdown)
