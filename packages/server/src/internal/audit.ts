/**
 * The audit log of decisions: the last N kept in memory as they are (serialized only when read),
 * one JSON line each to a sink when one is configured, and to live listeners while any listen.
 */
import type { Config as SluiceConfig, Decision } from "@sluice/core"
import { isoTime } from "./isoTime.js"
import { writeStdout } from "./stdout.js"
import type { WriteStream } from "node:fs"
import { createWriteStream, existsSync, openSync, renameSync, rmSync, statSync } from "node:fs"

/** One audit entry: the decision, the client key's name, and what it cost. */
export interface Entry {
  /** Epoch ms (Clock) when routing started, as ISO 8601. */
  readonly time: string
  /** The client key's name; absent on an open gateway. */
  readonly key?: string
  readonly costUsd: number
  readonly decision: Decision.Decision
  /** With `server.audit.content`: the request body and, for a whole chat answer, the response. */
  readonly content?: Content
}

/** What a request said and was answered (`server.audit.content` only). */
export interface Content {
  readonly request: unknown
  readonly response?: unknown
}

/** What `GET /admin/decisions` filters on; every given field must match. */
export interface Filter {
  readonly pool?: string | undefined
  readonly upstream?: string | undefined
  readonly key?: string | undefined
  readonly outcome?: string | undefined
  /** Epoch ms: decisions started at or after it. */
  readonly since?: number | undefined
  /** Epoch ms: decisions started before it. */
  readonly until?: number | undefined
  /** At most this many, newest first. */
  readonly limit?: number | undefined
}

/** Whether a decision (of the client key `key`) passes `filter`'s fields other than `limit`. */
export const matches = (filter: Filter, d: Decision.Decision, key: string | undefined): boolean =>
  (filter.pool === undefined || d.pool === filter.pool || d.pools.includes(filter.pool)) &&
  (filter.upstream === undefined ||
    d.upstream === filter.upstream ||
    d.attempts.some((a) => a.upstream === filter.upstream)) &&
  (filter.key === undefined || key === filter.key) &&
  (filter.outcome === undefined || d.outcome === filter.outcome) &&
  (filter.since === undefined || d.startedAt >= filter.since) &&
  (filter.until === undefined || d.startedAt < filter.until)

/** Someone reading entries as they come: the decision and key to filter on, and the entry's JSON line. */
export type Listener = (decision: Decision.Decision, key: string | undefined, line: string) => void

/** An entry as its JSON object. */
export const entryOf = (
  decision: Decision.Decision,
  key: string | undefined,
  costUsd: number,
  content?: Content
): Entry => {
  const entry: { -readonly [K in keyof Entry]: Entry[K] } = {
    time: isoTime(decision.startedAt),
    costUsd,
    decision
  }
  if (key !== undefined) entry.key = key
  if (content !== undefined) entry.content = content
  return entry
}

/**
 * An entry's JSON line (with its newline): the text `JSON.stringify` makes of {@link entryOf}'s
 * record, written around the decision's JSON without making the record.
 */
export const lineOf = (
  decision: Decision.Decision,
  key: string | undefined,
  costUsd: number,
  content?: Content
): string =>
  content !== undefined
    ? JSON.stringify(entryOf(decision, key, costUsd, content)) + "\n"
    : `{"time":"${isoTime(decision.startedAt)}","costUsd":${JSON.stringify(costUsd)},"decision":${JSON.stringify(decision)}${key === undefined ? "" : `,"key":${JSON.stringify(key)}`}}\n`

/** A line sink: stdout, or a file rotated by size. */
interface Sink {
  readonly write: (line: string) => void
  /**
   * Writes the line `json` and a newline: a sink that copies lines into a buffer copies the text as
   * it is and adds the newline's byte, without making the line (a copy of some 700 characters a
   * request, and a second pass over it to count its bytes).
   */
  readonly writeJson: (json: string) => void
  readonly close: () => void
}

const stdoutSink: Sink = {
  write: writeStdout,
  writeJson: (json) => writeStdout(`${json}\n`),
  close: () => {}
}

/** How long the file sink holds lines before it writes them, and how many bytes it holds at most. */
const FLUSH_MS = 20
const FLUSH_BYTES = 64 * 1024
/** How many written buffers the file sink keeps for reuse. */
const SPARE_BUFFERS = 2

/** Appends to `path`; past `maxBytes` it becomes `path.1` (older ones shift up to `path.<files>`). */
const fileSink = (path: string, maxBytes: number, files: number): Sink => {
  let size = existsSync(path) ? statSync(path).size : 0
  let failed = false
  // Opened at once (not when the stream gets to it), so a rotation always finds the file; a write
  // that fails (a full disk) is reported once, never thrown at the request that wrote it.
  const open = (): WriteStream =>
    createWriteStream(path, { fd: openSync(path, "a") }).on("error", (error) => {
      if (failed) return
      failed = true
      process.stderr.write(`sluice: the audit file ${path} cannot be written: ${error.message}\n`)
    })
  let out = open()
  const rotate = () => {
    // The old stream keeps writing what it buffered to the renamed file.
    out.end()
    if (files === 0) rmSync(path, { force: true })
    else {
      rmSync(`${path}.${files}`, { force: true })
      for (let i = files - 1; i >= 1; i--)
        if (existsSync(`${path}.${i}`)) renameSync(`${path}.${i}`, `${path}.${i + 1}`)
      renameSync(path, `${path}.1`)
    }
    out = open()
    size = 0
  }
  // Lines go to the file stream together, at most FLUSH_MS after the first of them (sooner past
  // FLUSH_BYTES): each write costs the stream a request object and a hand-off to libuv's file threads
  // and back, which a write per line — or per turn of a busy event loop — pays thousands of times a second.
  // They wait as bytes, copied into a buffer as they come: kept as strings for those milliseconds,
  // a busy gateway's lines outlived the young generation's collections and were copied by each.
  let pending = Buffer.allocUnsafe(FLUSH_BYTES)
  let used = 0
  let timer: ReturnType<typeof setTimeout> | undefined
  // Buffers the stream has written, reused for the next lines instead of a new 64 KB at each flush.
  const spare: Array<typeof pending> = []
  const flush = () => {
    if (timer !== undefined) clearTimeout(timer)
    timer = undefined
    if (used === 0) return
    // The stream holds on to what it was given until it is written: the next lines get another buffer.
    const full = pending
    out.write(full.subarray(0, used), () => {
      if (spare.length < SPARE_BUFFERS) spare.push(full)
    })
    pending = spare.pop() ?? Buffer.allocUnsafe(FLUSH_BYTES)
    used = 0
  }
  const later = () => {
    // Unref'd: a pending flush never keeps the process alive; `close` (at the drain) writes what is left.
    if (timer === undefined) timer = setTimeout(flush, FLUSH_MS).unref()
  }
  const write = (line: string) => {
    const bytes = Buffer.byteLength(line)
    if (size > 0 && size + bytes > maxBytes) {
      flush()
      rotate()
    }
    size += bytes
    if (bytes > pending.length - used) {
      flush()
      // A line longer than the buffer goes out on its own.
      if (bytes > pending.length) return void out.write(line)
    }
    used += pending.write(line, used)
    if (used >= FLUSH_BYTES) flush()
    else later()
  }
  return {
    write,
    writeJson: (json) => {
      // At most 3 bytes of UTF-8 for each UTF-16 unit, and the newline: when the line might not fit
      // in the buffer, or might take the file past `maxBytes`, it goes the way that counts its bytes.
      const most = json.length * 3 + 1
      if (most > pending.length - used || size + most > maxBytes) return write(`${json}\n`)
      const start = used
      used += pending.write(json, used)
      pending[used++] = 0x0a
      size += used - start
      later()
    },
    close: () => {
      flush()
      out.end()
    }
  }
}

/** The sink `settings` ask for (throws when its file cannot be opened). */
const sinkOf = (settings: SluiceConfig.AuditConfig): Sink | undefined =>
  settings.sink === "stdout"
    ? stdoutSink
    : settings.sink === "file" && settings.path !== undefined
      ? fileSink(settings.path, settings.maxBytes, settings.files)
      : undefined

/** What makes one sink another: a change of any of these opens a new one. */
const sinkKey = (settings: SluiceConfig.AuditConfig): string =>
  settings.sink === "file" ? `file:${settings.maxBytes}:${settings.files}:${settings.path}` : settings.sink

/** The audit log of one gateway. */
export class Log {
  private decisions: Array<Decision.Decision | undefined> = []
  private keys: Array<string | undefined> = []
  private costs: Array<number> = []
  private contents: Array<Content | undefined> = []
  private next = 0
  private size = 0
  private sink: Sink | undefined
  private sinkKey: string
  private readonly listeners = new Set<Listener>()

  /** Opens the sink of `settings`; throws when its file cannot be opened. */
  constructor(settings: SluiceConfig.AuditConfig) {
    this.sink = sinkOf(settings)
    this.sinkKey = sinkKey(settings)
    this.resize(settings.keep, settings.content)
  }

  /**
   * Applies the settings of a reloaded config: a sink that changed is opened anew and the old one
   * closed (when the new file cannot be opened it throws and the old sink stays), and the decisions
   * kept carry over into the new `keep` (the newest) and `content`.
   */
  reconfigure(settings: SluiceConfig.AuditConfig): void {
    const key = sinkKey(settings)
    if (key !== this.sinkKey) {
      const sink = sinkOf(settings)
      this.sink?.close()
      this.sink = sink
      this.sinkKey = key
    }
    if (settings.keep !== this.decisions.length || settings.content !== this.contents.length > 0)
      this.resize(settings.keep, settings.content)
  }

  /** Makes room for `keep` decisions, keeping the newest of those kept (with their content if `content`). */
  private resize(keep: number, content: boolean): void {
    const kept: Array<readonly [Decision.Decision, string | undefined, number, Content | undefined]> = []
    const length = this.decisions.length
    for (let i = Math.min(this.size, keep); i >= 1; i--) {
      const at = (this.next - i + length) % length
      kept.push([this.decisions[at]!, this.keys[at], this.costs[at]!, this.contents[at]])
    }
    this.decisions = Array.from({ length: keep }, () => undefined)
    this.keys = Array.from({ length: keep }, () => undefined)
    this.costs = Array.from({ length: keep }, () => 0)
    this.contents = content ? Array.from({ length: keep }, () => undefined) : []
    this.next = 0
    this.size = 0
    for (const [decision, key, cost, entry] of kept) this.keep(decision, key, cost, content ? entry : undefined)
  }

  /** Keeps one decision in memory (the oldest goes when full). */
  private keep(decision: Decision.Decision, key: string | undefined, costUsd: number, content?: Content): void {
    const keep = this.decisions.length
    if (keep === 0) return
    this.decisions[this.next] = decision
    this.keys[this.next] = key
    this.costs[this.next] = costUsd
    if (this.contents.length > 0) this.contents[this.next] = content
    this.next = (this.next + 1) % keep
    if (this.size < keep) this.size++
  }

  /** Keeps one decision; serialized now only when a sink or a listener wants it. */
  add(decision: Decision.Decision, key: string | undefined, costUsd: number, content?: Content): void {
    this.keep(decision, key, costUsd, content)
    if (this.sink === undefined && this.listeners.size === 0) return
    if (content === undefined && this.listeners.size === 0)
      return this.sink!.writeJson(JSON.stringify(entryOf(decision, key, costUsd)))
    const line = lineOf(decision, key, costUsd, content)
    this.sink?.write(line)
    for (const listener of this.listeners) listener(decision, key, line)
  }

  /** The kept decisions matching `filter`, newest first. */
  query(filter: Filter): Array<Entry> {
    const found: Array<Entry> = []
    const keep = this.decisions.length
    const limit = filter.limit ?? keep
    for (let i = 1; i <= this.size && found.length < limit; i++) {
      const at = (this.next - i + keep) % keep
      const d = this.decisions[at]!
      const key = this.keys[at]
      if (matches(filter, d, key)) found.push(entryOf(d, key, this.costs[at]!, this.contents[at]))
    }
    return found
  }

  /** Calls `listener` with every new entry until the returned function is called. */
  listen(listener: Listener): () => void {
    this.listeners.add(listener)
    return () => void this.listeners.delete(listener)
  }

  close(): void {
    this.sink?.close()
  }
}
