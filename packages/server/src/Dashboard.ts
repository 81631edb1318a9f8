/**
 * The dashboard (`/dashboard`, on when `server.admin` is set): request rate, errors, latency,
 * tokens and spend over the last hour; pools and upstreams with their health, breaker (with a reset
 * button), in flight, reserved tokens, decayed latency (whole answers, first chunk, per token), error
 * rate, budget left and queue depth, disable / enable; the live decisions, each
 * expandable to its candidates and exclusions; the running config, redacted.
 *
 * Behind the admin token, page included: a browser without a session gets a sign-in form (`401`)
 * instead, which sends the token to `POST /dashboard/session` (as a bearer token) for a session
 * cookie (`HttpOnly`, `SameSite=Strict`, scoped to `/dashboard`, 12 hours, `Secure` when the
 * sign-in came over HTTPS, a TLS-terminating proxy's included); `/dashboard#token=...`
 * signs in at once. The page holds no data: it reads everything from the admin API with the token,
 * so what it shows is exactly what the admin API allows. Charts are uPlot, served from its package
 * next to the page — no build step.
 */
import type { Redacted } from "effect"
import { Effect } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import type * as Gateway from "./Gateway.js"
import * as AdminToken from "./internal/adminToken.js"
import { html, signIn } from "./internal/dashboardPage.js"
import { overHttps, Sessions, setCookie } from "./internal/dashboardSessions.js"

/** The page runs its own script and uPlot's, and talks to this gateway only. */
const CSP =
  "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"

const send = (res: ServerResponse, status: number, type: string, body: string | Buffer, extra = {}) => {
  res.writeHead(status, {
    "content-type": type,
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    "content-security-policy": CSP,
    ...extra
  })
  res.end(body)
}

/**
 * The dashboard's handler, for requests under `/dashboard`, letting in the holder of `token`; reads
 * uPlot's files once, here. Sessions live in memory (a restart signs everyone out) and time comes
 * from the `Clock`.
 */
export const make = (token: Redacted.Redacted<string>): Effect.Effect<Gateway.Handler> =>
  Effect.map(Effect.clock, (clock) => {
    const uplot = dirname(createRequire(import.meta.url).resolve("uplot"))
    const files: Record<string, { readonly type: string; readonly body: string | Buffer }> = {
      "/dashboard": { type: "text/html; charset=utf-8", body: html },
      "/dashboard/": { type: "text/html; charset=utf-8", body: html },
      "/dashboard/uplot.js": { type: "text/javascript", body: readFileSync(join(uplot, "uPlot.iife.min.js")) },
      "/dashboard/uplot.css": { type: "text/css", body: readFileSync(join(uplot, "uPlot.min.css")) }
    }
    const check = AdminToken.checker(token)
    const sessions = new Sessions(() => clock.unsafeCurrentTimeMillis())
    const signInPage = (res: ServerResponse, status: number) => send(res, status, "text/html; charset=utf-8", signIn)
    return (req: IncomingMessage, res: ServerResponse) => {
      const url = req.url ?? "/"
      const query = url.indexOf("?")
      const path = query === -1 ? url : url.slice(0, query)
      if (path === "/dashboard/session" && req.method === "POST") {
        // The token comes as a bearer header, which another site's form cannot send.
        const verdict = AdminToken.verdictOf(check, req.headers["authorization"])
        if (verdict !== "ok")
          return send(
            res,
            verdict === "missing" ? 401 : 403,
            "application/json",
            JSON.stringify(
              verdict === "missing"
                ? { _tag: "Unauthorized", message: "send the admin token as 'Authorization: Bearer <token>'" }
                : { _tag: "Forbidden", message: "the token is not the admin token" }
            )
          )
        res.writeHead(204, { "set-cookie": setCookie(sessions.open(), overHttps(req)), "cache-control": "no-store" })
        return void res.end()
      }
      if (req.method !== "GET") return send(res, 404, "text/plain", "not found")
      if (path === "/dashboard/sign-in") return signInPage(res, 200)
      const file = files[path]
      if (file === undefined) return send(res, 404, "text/plain", "not found")
      if (!sessions.admits(req))
        return file.type.startsWith("text/html")
          ? signInPage(res, 401)
          : send(res, 401, "text/plain", "sign in at /dashboard first")
      send(res, 200, file.type, file.body)
    }
  })
