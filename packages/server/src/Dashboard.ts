/**
 * The dashboard (`/dashboard`, on when `server.admin` is set): request rate, errors, latency,
 * tokens and spend over the last hour; pools and upstreams with their health, breaker (with a reset
 * button), in flight, reserved tokens, decayed latency (whole answers, first chunk, per token), error
 * rate, budget left and queue depth, disable / enable; the live decisions, each
 * expandable to its candidates and exclusions; the running config, redacted.
 *
 * The page is static and holds no data: it reads everything from the admin API with the admin token
 * (given once as `/dashboard#token=...`), so what it shows is exactly what the admin API allows.
 * Charts are uPlot, served from its package next to the page — no build step.
 */
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import type * as Gateway from "./Gateway.js"
import { html } from "./internal/dashboardPage.js"

/** The dashboard's handler, for requests under `/dashboard`; reads uPlot's files once, here. */
export const make = (): Gateway.Handler => {
  const uplot = dirname(createRequire(import.meta.url).resolve("uplot"))
  const files: Record<string, { readonly type: string; readonly body: string | Buffer }> = {
    "/dashboard": { type: "text/html; charset=utf-8", body: html },
    "/dashboard/": { type: "text/html; charset=utf-8", body: html },
    "/dashboard/uplot.js": { type: "text/javascript", body: readFileSync(join(uplot, "uPlot.iife.min.js")) },
    "/dashboard/uplot.css": { type: "text/css", body: readFileSync(join(uplot, "uPlot.min.css")) }
  }
  return (req, res) => {
    const url = req.url ?? "/"
    const query = url.indexOf("?")
    const file = files[query === -1 ? url : url.slice(0, query)]
    if (file === undefined || req.method !== "GET") {
      res.writeHead(404, { "content-type": "text/plain" })
      return void res.end("not found")
    }
    res.writeHead(200, {
      "content-type": file.type,
      "content-length": Buffer.byteLength(file.body),
      "cache-control": "no-cache",
      // The page runs its own script and uPlot's, and talks to this gateway only.
      "content-security-policy":
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
    })
    res.end(file.body)
  }
}
