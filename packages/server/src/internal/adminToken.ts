/**
 * The admin token check, shared by the admin API and the other endpoints behind the token
 * (`/metrics`, the dashboard): compared by SHA-256 digest in constant time.
 */
import { Redacted } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"

const digest = (text: string) => createHash("sha256").update(text).digest()

/** What a bearer token sent is: the admin token, none at all, or another one. */
export type Verdict = "ok" | "missing" | "wrong"

/** A check of sent bearer tokens (without the `Bearer ` prefix) against `token`. */
export const checker = (token: Redacted.Redacted<string>): ((sent: string) => Verdict) => {
  const expected = digest(Redacted.value(token))
  return (sent) => {
    const trimmed = sent.trim()
    if (trimmed === "") return "missing"
    return timingSafeEqual(digest(trimmed), expected) ? "ok" : "wrong"
  }
}

const BEARER = /^Bearer\s+(.*)$/i

/** The verdict on an `authorization` header. */
export const verdictOf = (check: (sent: string) => Verdict, authorization: string | undefined): Verdict => {
  const match = authorization === undefined ? null : BEARER.exec(authorization)
  return match === null ? "missing" : check(match[1]!)
}
