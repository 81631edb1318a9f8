/**
 * The secrets `GET /admin/config` hides, and how a document edited from it gets them back: an
 * operator reads the config, edits one pool and sends the whole document back, placeholders
 * included. Each placeholder stands for the running value at the same place — an upstream's header
 * by upstream id and header name, a client key's digest by key name — and one with no running value
 * is a problem by path, never a value sent upstream or compared against client keys.
 */
import type { Config as SluiceConfig } from "@sluice/core"

/** What stands in for a secret in `GET /admin/config`. */
export const REDACTED = "<redacted>"

/** The config as `GET /admin/config` shows it: key digests and upstream header values redacted. */
export const redact = (config: SluiceConfig.ConfigFile): unknown => ({
  ...config,
  server: {
    ...config.server,
    auth: {
      ...config.server.auth,
      keys: config.server.auth.keys.map((key) => (key.sha256 === undefined ? key : { ...key, sha256: REDACTED }))
    }
  },
  upstreams: config.upstreams.map((u) =>
    u.headers === undefined
      ? u
      : { ...u, headers: Object.fromEntries(Object.keys(u.headers).map((name) => [name, REDACTED])) }
  )
})

/** A document with its placeholders put back, and the paths of those that stand for nothing running. */
export interface Restored {
  readonly document: unknown
  /** Where a placeholder has no running value: `upstreams[0].headers.x-key`. */
  readonly unresolved: ReadonlyArray<string>
}

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const restoreUpstream = (
  entry: unknown,
  at: string,
  running: SluiceConfig.ConfigFile,
  unresolved: Array<string>
): unknown => {
  if (!isRecord(entry) || !isRecord(entry["headers"])) return entry
  const id = entry["id"]
  const headers = running.upstreams.find((u) => u.id === id)?.headers ?? {}
  const restored = Object.fromEntries(
    Object.entries(entry["headers"]).map(([name, value]) => {
      if (value !== REDACTED) return [name, value]
      const kept = Object.hasOwn(headers, name) ? headers[name] : undefined
      if (kept === undefined) unresolved.push(`${at}.headers.${name}`)
      return [name, kept ?? value]
    })
  )
  return { ...entry, headers: restored }
}

const restoreKey = (
  entry: unknown,
  at: string,
  running: SluiceConfig.ConfigFile,
  unresolved: Array<string>
): unknown => {
  if (!isRecord(entry) || entry["sha256"] !== REDACTED) return entry
  const kept = running.server.auth.keys.find((k) => k.name === entry["name"])?.sha256
  if (kept === undefined) unresolved.push(`${at}.sha256`)
  return { ...entry, sha256: kept ?? REDACTED }
}

/**
 * `document` (a config sent to `PUT` or validate) with each {@link REDACTED} placeholder replaced by
 * the value `running` holds at the same place. Anything else passes as written, for the decoder to
 * judge.
 */
export const restore = (document: unknown, running: SluiceConfig.ConfigFile): Restored => {
  if (!isRecord(document)) return { document, unresolved: [] }
  const unresolved: Array<string> = []
  let out: Record<string, unknown> = document
  if (Array.isArray(document["upstreams"]))
    out = {
      ...out,
      upstreams: document["upstreams"].map((u: unknown, i) =>
        restoreUpstream(u, `upstreams[${i}]`, running, unresolved)
      )
    }
  const server = document["server"]
  if (isRecord(server) && isRecord(server["auth"]) && Array.isArray(server["auth"]["keys"])) {
    const auth = server["auth"]
    const keys = (auth["keys"] as Array<unknown>).map((k, i) =>
      restoreKey(k, `server.auth.keys[${i}]`, running, unresolved)
    )
    out = { ...out, server: { ...server, auth: { ...auth, keys } } }
  }
  return { document: out, unresolved }
}

/** The problem of a placeholder that stands for no running value, as the config's problems read. */
export const unresolvedProblem = (at: string): string =>
  `${at}: '${REDACTED}' stands for the running value here, but the running config has none (a new upstream, header or key name?); write the value itself`
