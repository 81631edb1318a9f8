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

/** The `Set-Cookie` value of session `id`: script cannot read it, other sites cannot send it. */
export const setCookie = (id: string): string =>
  `${COOKIE}=${id}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=${TTL_MS / 1000}`

/** The session id in a `cookie` header, if any. */
const cookie = (header: string | undefined): string | undefined => {
  if (header === undefined) return undefined
  for (const pair of header.split(";")) {
    const eq = pair.indexOf("=")
    if (eq !== -1 && pair.slice(0, eq).trim() === COOKIE) return pair.slice(eq + 1).trim()
  }
  return undefined
}
