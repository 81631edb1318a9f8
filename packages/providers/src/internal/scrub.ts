/**
 * Scrubbing an upstream's credentials out of what it sent back. Some servers repeat the
 * `Authorization` header they received in their error messages; nothing an upstream sends may carry
 * a key past the gateway.
 */
import type { Topology } from "@sluice/core"
import { Option, Redacted } from "effect"

type Upstream = Topology.Upstream

/** What stands in for a credential. */
export const REDACTED = "<redacted>"

/** Names of configured headers whose values are credentials. */
const SECRET_HEADER = /auth|key|token|secret|passw|credential|cookie|signature/i

/**
 * Header values (and URL credentials) shorter than this are not taken for secrets: scrubbing a
 * `true` or a `v1` everywhere would garble messages, and no real credential is that short. The API
 * key is scrubbed whatever its length.
 */
const MIN_SECRET_LENGTH = 8

const cache = new WeakMap<Upstream, ReadonlyArray<string>>()

/**
 * The spellings of an upstream's credentials that its answers may repeat: the API key, the values of
 * configured headers named like credentials (and the token after a scheme such as `Bearer`), the base
 * URL's user and password; each also as JSON escapes it, and with `/` escaped as some encoders do.
 * Longest first, so that no shorter one leaves a part of a longer one behind. Computed once per upstream.
 */
export const secretsOf = (upstream: Upstream): ReadonlyArray<string> => {
  const cached = cache.get(upstream)
  if (cached !== undefined) return cached
  const found = new Set<string>()
  const add = (value: string, minLength: number) => {
    const secret = value.trim()
    if (secret.length === 0 || secret.length < minLength) return
    const escaped = JSON.stringify(secret).slice(1, -1)
    found.add(secret).add(escaped).add(escaped.replaceAll("/", "\\/"))
  }
  if (Option.isSome(upstream.apiKey)) add(Redacted.value(upstream.apiKey.value), 1)
  for (const name in upstream.headers) {
    if (!SECRET_HEADER.test(name)) continue
    const value = upstream.headers[name]!.trim()
    add(value, MIN_SECRET_LENGTH)
    const space = value.indexOf(" ")
    if (space > 0) add(value.slice(space + 1), MIN_SECRET_LENGTH)
  }
  const url = URL.canParse(upstream.baseUrl) ? new URL(upstream.baseUrl) : undefined
  for (const part of url === undefined ? [] : [url.username, url.password]) {
    add(part, MIN_SECRET_LENGTH)
    try {
      add(decodeURIComponent(part), MIN_SECRET_LENGTH)
    } catch {
      // Not percent-encoding after all: the part as written is in already.
    }
  }
  const secrets = [...found].sort((a, b) => b.length - a.length)
  cache.set(upstream, secrets)
  return secrets
}

/** `text` with every credential of `upstream` replaced by {@link REDACTED}. */
export const scrub = (upstream: Upstream, text: string): string => {
  let out = text
  for (const secret of secretsOf(upstream)) if (out.includes(secret)) out = out.replaceAll(secret, REDACTED)
  return out
}

type Container = Record<string, unknown>

const emptyLike = (value: object): Container => (Array.isArray(value) ? [] : {}) as Container

/**
 * A copy of a parsed JSON value with every string, keys included, {@link scrub}bed. Iterative: an
 * upstream's answer may be nested deeper than the stack.
 */
export const scrubValue = (upstream: Upstream, value: unknown): unknown => {
  if (typeof value === "string") return scrub(upstream, value)
  if (typeof value !== "object" || value === null) return value
  const root = emptyLike(value)
  const pending: Array<readonly [Readonly<Container>, Container]> = [[value as Container, root]]
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [from, to] = next
    const array = Array.isArray(from)
    for (const key of Object.keys(from)) {
      const item = from[key]
      let out = item
      if (typeof item === "string") out = scrub(upstream, item)
      else if (typeof item === "object" && item !== null) {
        out = emptyLike(item)
        pending.push([item as Container, out as Container])
      }
      // Defined, not assigned: a "__proto__" key of the answer stays a plain field.
      Object.defineProperty(to, array ? key : scrub(upstream, key), {
        value: out,
        enumerable: true,
        writable: true,
        configurable: true
      })
    }
  }
  return root
}
