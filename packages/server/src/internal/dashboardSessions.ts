/**
 * The dashboard's sign-in sessions: opaque random ids handed out as a cookie once the admin token
 * was presented, so a browser can be let in to the page itself (a navigation cannot send a bearer
 * token). A session opens only the page and its files; the admin API still wants the token.
 */
import { randomBytes } from "node:crypto"
import type { IncomingMessage } from "node:http"

/** The cookie that carries a session id. */
export const COOKIE = "sluice-dashboard"

/** How long a session lasts from sign-in, in milliseconds: 12 hours. */
export const TTL_MS = 12 * 60 * 60_000

/** Sessions kept at most; past it the oldest goes (each sign-in is one). */
export const MAX_SESSIONS = 1_000

/** Open sessions by id, each with when (epoch ms) it ends. */
export class Sessions {
  private readonly ends = new Map<string, number>()

  constructor(private readonly now: () => number) {}

  /** A new session; its id, 256 random bits, for the cookie. */
  open(): string {
    const id = randomBytes(32).toString("base64url")
    this.ends.set(id, this.now() + TTL_MS)
    if (this.ends.size > MAX_SESSIONS) this.ends.delete(this.ends.keys().next().value!)
    return id
  }

  /** Whether the request carries the cookie of a session still open. */
  admits(req: IncomingMessage): boolean {
    const id = cookie(req.headers["cookie"])
    if (id === undefined) return false
    const end = this.ends.get(id)
    if (end === undefined) return false
    if (end > this.now()) return true
    this.ends.delete(id)
    return false
  }
}

/**
 * The `Set-Cookie` value of session `id`: script cannot read it, other sites cannot send it — and,
 * when the sign-in came over HTTPS (`secure`), neither can a plain HTTP request.
 */
export const setCookie = (id: string, secure = false): string =>
  `${COOKIE}=${id}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=${TTL_MS / 1000}${secure ? "; Secure" : ""}`

/**
 * Whether the browser reached the gateway over HTTPS: a TLS socket, or a proxy in front that
 * terminates TLS and says so (`X-Forwarded-Proto: https`, `Forwarded: proto=https`), or a page whose
 * `Origin` is HTTPS. A client that claims it falsely only gets a cookie its browser will not send
 * back over plain HTTP.
 */
export const overHttps = (req: IncomingMessage): boolean => {
  if ((req.socket as { encrypted?: boolean }).encrypted === true) return true
  const forwardedProto = req.headers["x-forwarded-proto"]
  const first = (Array.isArray(forwardedProto) ? forwardedProto[0] : forwardedProto)?.split(",")[0]
  if (first?.trim().toLowerCase() === "https") return true
  if (/(?:^|[;,\s])proto=https(?:$|[;,\s])/i.test(req.headers["forwarded"] ?? "")) return true
  return req.headers["origin"]?.toLowerCase().startsWith("https://") === true
}

/** The session id in a `cookie` header, if any. */
const cookie = (header: string | undefined): string | undefined => {
  if (header === undefined) return undefined
  for (const pair of header.split(";")) {
    const eq = pair.indexOf("=")
    if (eq !== -1 && pair.slice(0, eq).trim() === COOKIE) return pair.slice(eq + 1).trim()
  }
  return undefined
}
