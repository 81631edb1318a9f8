/**
 * The audit log of decisions: the last N kept in memory as they are (serialized only when read),
 * one JSON line each to a sink when one is configured, and to live listeners while any listen.
 */
import type { Config as SluiceConfig } from "@sluice/core"
import { Decision } from "@sluice/core"
import { closeSync, fstatSync, openSync } from "node:fs"
import { Worker } from "node:worker_threads"
import { jsonAccessLine } from "./accessLine.js"
import * as Ring from "./auditRing.mjs"
import { isoTime } from "./isoTime.mjs"
import { writeStdout } from "./stdout.js"

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

/**
 * A line sink: stdout, or a file rotated by size. The file sink's thread can write requests' access
 * lines to standard output too, in the event loop's place ({@link fileSink}): a request's is handed
 * to it with its entry, and it says whether it took it.
 */
export interface Sink {
  /**
   * Writes one line (ending with its newline), and `access`, its request's access line (without its
   * newline), to standard output when the sink {@link Sink.takesAccess}: true when it took it.
   */
  readonly write: (line: string, access?: string) => boolean
  /**
   * Writes the line of an entry without content and, with a `status` (0 or more) and when the sink
   * {@link Sink.takesAccess}, its request's access line (`jsonAccessLine`'s, answered now with
   * `status`) to standard output: true when it took the access line.
   */
  readonly writeEntry: (
    decision: Decision.Decision,
    key: string | undefined,
    costUsd: number,
    status?: number
  ) => boolean
  /** Whether access lines handed to the sink are written now (the file sink's, while its thread writes). */
  readonly takesAccess: () => boolean
  /**
   * Writes what the sink holds and closes it: waiting for that (a drain, the process's end) or
   * (`wait` false, a reload) letting it finish on its own while the gateway serves.
   */
  readonly close: (wait?: boolean) => void
}

const stdoutSink: Sink = {
  write: (line) => (writeStdout(line), false),
  writeEntry: (decision, key, costUsd) => (writeStdout(`${JSON.stringify(entryOf(decision, key, costUsd))}\n`), false),
  takesAccess: () => false,
  close: () => {}
}

/** How long the file's writer thread waits between its rounds, at most. */
const FLUSH_MS = 20
/** The ring's data: 4 MB, some 10,000 entries of an answered request. */
const RING_BYTES = 4 * 1024 * 1024
/** How long closing waits for the writer thread to write what it holds, at most. */
const CLOSE_MS = 10_000
/** How often a full ring is tried again while entries wait for room. */
const RETRY_MS = 2

/** What waits for room in the file sink's ring: an entry, or a line from its unit `from` on. */
type Waiting =
  | {
      readonly _tag: "Entry"
      readonly decision: Decision.Decision
      readonly key: string | undefined
      readonly costUsd: number
      /** The status its request was answered with, when the entry carries its access line; else -1. */
      readonly status: number
      /** When its request was answered (epoch ms), for its access line. */
      readonly ms: number
    }
  | {
      readonly _tag: "Line"
      readonly line: string
      readonly from: number
      /** An access line, for standard output (else the audit file's). */
      readonly access: boolean
      /** What follows once the line is all in the ring: its request's access line. */
      readonly next: Waiting | undefined
    }

/** Options of {@link fileSink} that tests change. */
export interface FileSinkOptions {
  /** The ring's data in bytes (a multiple of 8, at least 4 × `MAX_RECORD`). */
  readonly ringBytes?: number
  /** Where the access lines go: a file descriptor of the process (1, standard output). */
  readonly accessFd?: number
}

/**
 * Whether `fd` takes whole lines from two threads without mixing them: a file, a terminal, or a pipe
 * (written in pieces of at most PIPE_BUF). Not a socket (the journal's standard output, say), which
 * may take part of a write and let another thread's write in before the rest: there the event loop
 * keeps writing the access lines itself.
 */
const takesLinesFromThreads = (fd: number): boolean => {
  try {
    return !fstatSync(fd).isSocket()
  } catch {
    return false
  }
}

/** An access line that waits: `line` (without its newline), then nothing. */
const accessText = (line: string): Waiting => ({ _tag: "Line", line, from: 0, access: true, next: undefined })

/**
 * How the file sink puts what waits into its ring: `entryIn` an entry as values, `tryPut` an entry or
 * a line however it goes (see each). `say` tells what cannot be written.
 */
const putter = (ring: ReturnType<typeof Ring.writer>, say: (what: string) => void) => {
  /** An entry could not be serialized, said (once: the next may well be like it). */
  let unserializable = false
  /**
   * Puts an entry in the ring as values (with its access line's when `status` is 0 or more): true
   * when it is there, false when the ring has no room, undefined when it cannot go as values.
   */
  const entryIn = (
    decision: Decision.Decision,
    key: string | undefined,
    costUsd: number,
    status: number,
    ms: number
  ): boolean | undefined =>
    !viaValues(decision)
      ? undefined
      : status < 0
        ? ring.entry(decision, key, costUsd)
        : ring.entry(
            decision,
            key,
            costUsd,
            ms,
            status,
            decision.upstream ?? decision.attempts[decision.attempts.length - 1]?.upstream
          )
  /** Puts one entry or line in the ring: undefined when it is all there, else what is left of it. */
  const put = (item: Waiting): Waiting | undefined => {
    if (item._tag === "Line") {
      const from = ring.text(item.line, item.from, item.access)
      return from === -1 ? item.next : from === item.from ? item : { ...item, from }
    }
    const { decision, key, costUsd } = item
    const fits = entryIn(decision, key, costUsd, item.status, item.ms)
    if (fits === true) return undefined
    if (fits === false) return item
    const line = JSON.stringify(entryOf(decision, key, costUsd))
    return { _tag: "Line", line, from: 0, access: false, next: accessOf(item) }
  }
  /** The access line an entry carries, as text (made here), or undefined. */
  const accessOf = (item: Waiting): Waiting | undefined =>
    item._tag === "Entry" && item.status >= 0
      ? accessText(jsonAccessLine(item.decision, item.key, item.status, item.ms))
      : undefined
  /**
   * {@link put}, where an entry JSON cannot serialize (a bigint, a cycle, a getter that throws) is
   * dropped and said once, never thrown at the request or from a timer.
   */
  const tryPut = (item: Waiting): Waiting | undefined => {
    try {
      // An entry that went to text goes in as text at once, and a line's access line after it.
      let left = put(item)
      while (left !== undefined && left !== item) {
        item = left
        left = put(left)
      }
      return left
    } catch (error) {
      if (!unserializable)
        say(`an entry could not be written: ${error instanceof Error ? error.message : String(error)}`)
      unserializable = true
      // Its access line needs none of what failed.
      const access = accessOf(item)
      return access === undefined ? undefined : tryPut(access)
    }
  }
  return { entryIn, tryPut }
}

/** The file sink's writer thread (`auditWorker.mjs`), with its `workerData`; unref'd. */
const writerThread = (workerData: {
  readonly sab: SharedArrayBuffer
  readonly path: string
  readonly maxBytes: number
  readonly files: number
  readonly flushMs: number
  readonly accessFd: number
}): Worker => {
  const worker = new Worker(new URL("./auditWorker.mjs", import.meta.url), {
    workerData,
    // Not the event loop's flags (a loader, say): the thread runs plain JavaScript.
    execArgv: [],
    // The thread writes its lines with system calls, never through its `process.stdout`. Left to
    // Node, that stream would be piped into ours, and the pipe's error handler rethrows an error of
    // our standard output (EPIPE once its reader is gone) that `writeStdout` means to drop.
    stdout: true
  })
  worker.unref()
  return worker
}

/**
 * Appends to `path`; past `maxBytes` it becomes `path.1` (older ones shift up to `path.<files>`).
 *
 * The entries' lines are made and written by a thread of their own (`auditWorker.mjs`): the event
 * loop puts each entry's values in a shared ring (`auditRing.mjs`) — measured per entry on a slow
 * day, 0.2–1.1 µs back to back and 3.8–4.8 µs with code and memory cold, where the entry's
 * `JSON.stringify` and the copy of its text cost 3.4–5.8 and 6.4–8.0 µs (`bench/audit-ring.ts`
 * times it; the strings that come back going as numbers took some 15% off back to back, nothing
 * that showed with 1 MB read between entries) — and the thread
 * makes the lines and writes them, at most {@link FLUSH_MS} later (sooner when the ring is half
 * full), with one system call per megabyte. Entries the ring has no room for (the thread is behind)
 * wait in order on the event loop. Closing writes everything and waits for the thread to close the
 * file (at most {@link CLOSE_MS}; a reload's close does not wait, the gateway's last one does). A
 * file that cannot be opened is refused at once. Said on standard error, never thrown at the
 * request: a write that fails (a full disk, once), an entry JSON cannot serialize (dropped; once;
 * its access line is written all the same), a thread that stops or does not finish (with the
 * entries that waited).
 *
 * While the thread writes, it writes requests' access lines to standard output (`accessFd`) too,
 * in order, at the same times as the entries ({@link Sink.writeEntry}, {@link Sink.write}): an
 * entry carries the access line's few values of its own (the status, the time, the upstream it
 * names) and the thread makes the line from them and the entry's fields, where the event loop
 * would make it and copy it out for each request (some 5 µs of a request's ~200 on the event loop,
 * measured with `perf`). Once the thread has stopped, the sink takes no access line (the event loop
 * writes them as before); those in the ring when it stopped are lost with its entries. A closing
 * sink takes none either, nor one whose standard output is a socket ({@link takesLinesFromThreads}).
 */
export const fileSink = (path: string, maxBytes: number, files: number, options: FileSinkOptions = {}): Sink => {
  // Opened here too, so that a file that cannot be opened is refused at once (a reload keeps the old sink).
  closeSync(openSync(path, "a"))
  const accessFd = options.accessFd ?? 1
  const accessHere = takesLinesFromThreads(accessFd)
  const sab = Ring.allocate(options.ringBytes ?? RING_BYTES)
  const ring = Ring.writer(sab)
  const control = new Int32Array(sab, 0, 16)
  /** No entry is taken any more (the sink is closing or closed). */
  let closing = false
  /** A close has waited for the thread already. */
  let waited = false
  /** The writer thread is gone (or never started): nothing written any more. */
  let stopped = false
  const say = (what: string) => process.stderr.write(`sluice: the audit file ${path}: ${what}\n`)
  const worker = writerThread({ sab, path, maxBytes, files, flushMs: FLUSH_MS, accessFd })
  const lost = () => (waiting() > 0 ? ` (${waiting()} entries waiting were not written)` : "")
  const stop = (why: string) => {
    if (stopped) return
    stopped = true
    if (Atomics.load(control, Ring.DONE) === 1) return
    say(`no longer written: its writer thread ${why}${lost()}`)
    backlog = []
    first = 0
  }
  worker.on("error", (error) => stop(`failed: ${error.message}`))
  worker.on("exit", (code) => stop(`exited (${code})`))
  const signal = () => {
    Atomics.add(control, Ring.SIGNAL, 1)
    Atomics.notify(control, Ring.SIGNAL)
  }
  /** Entries, and lines from a character on, waiting for room in the ring, in order from `first`. */
  let backlog: Array<Waiting> = []
  let first = 0
  const waiting = () => backlog.length - first
  let retry: ReturnType<typeof setTimeout> | undefined
  const { entryIn, tryPut } = putter(ring, say)
  /** Moves what waits into the ring, as far as there is room. */
  const drain = () => {
    retry = undefined
    while (first < backlog.length) {
      const left = tryPut(backlog[first]!)
      if (left !== undefined) {
        backlog[first] = left
        break
      }
      first++
    }
    if (first === backlog.length) {
      backlog = []
      first = 0
    } else if (first > 1024 && first > backlog.length / 2) {
      backlog = backlog.slice(first)
      first = 0
    }
    if (waiting() > 0) later()
    else if (closing) end()
  }
  const later = () => {
    signal()
    // Not unref'd: entries waiting for room keep the process alive until they are in the ring.
    if (retry === undefined && !stopped) retry = setTimeout(drain, RETRY_MS)
  }
  const add = (item: Waiting) => {
    if (stopped || closing) return
    const left = waiting() > 0 ? item : tryPut(item)
    if (left !== undefined) {
      backlog.push(left)
      return later()
    }
    wake()
  }
  /** After a record is put: a reader that falls behind (the ring half full) is woken before its round. */
  const wake = () => {
    if (ring.used() > ring.bytes / 2) signal()
  }
  /** Tells the writer thread that nothing follows what the ring holds. */
  const end = () => {
    Atomics.store(control, Ring.CLOSE, 1)
    signal()
  }
  const takesAccess = () => accessHere && !stopped && !closing
  return {
    write: (line, access) => {
      const taken = access !== undefined && takesAccess()
      const text = line.endsWith("\n") ? line.slice(0, -1) : line
      add({ _tag: "Line", line: text, from: 0, access: false, next: taken ? accessText(access) : undefined })
      return taken
    },
    writeEntry: (decision, key, costUsd, status = -1) => {
      if (stopped || closing) return false
      const taken = status >= 0 && accessHere
      const ms = taken ? Date.now() : 0
      if (waiting() === 0) {
        // The usual way, straight into the ring (nothing made for it); any other goes through `add`.
        let fits: boolean | undefined
        try {
          fits = entryIn(decision, key, costUsd, taken ? status : -1, ms)
        } catch {
          fits = undefined
        }
        if (fits === true) {
          wake()
          return taken
        }
      }
      add({ _tag: "Entry", decision, key, costUsd, status: taken ? status : -1, ms })
      return taken
    },
    takesAccess,
    close: (wait = true) => {
      if (!closing) {
        closing = true
        // The thread writes the rest and closes the file; the process stays up until it has (a
        // signal's exit does not wait: the gateway's own close does, see `Log.close`).
        worker.ref()
        if (waiting() > 0) later()
        else end()
      }
      if (!wait || waited) return
      waited = true
      if (retry !== undefined) clearTimeout(retry)
      retry = undefined
      awaitWriter(
        control,
        () => !stopped,
        () => {
          drain()
          if (retry !== undefined) clearTimeout(retry)
          retry = undefined
          return waiting()
        },
        () => {
          // Past the deadline what still waits is dropped: the thread ends with what it has.
          backlog = []
          first = 0
          end()
        },
        say
      )
    }
  }
}

/**
 * Waits (blocking, at most {@link CLOSE_MS}) until a closing file sink's writer thread has taken
 * what waits (`drain` moves it into the ring and answers how much still waits), then, after
 * `end`, until it has closed the file; says what may be missing.
 */
const awaitWriter = (
  control: Int32Array,
  running: () => boolean,
  drain: () => number,
  end: () => void,
  say: (what: string) => void
): void => {
  const deadline = Date.now() + CLOSE_MS
  // The thread sets DONE to 1 when it has closed the file, 2 when it failed.
  const alive = () => running() && Atomics.load(control, Ring.DONE) === 0
  let waiting = drain()
  while (alive() && waiting > 0 && Date.now() < deadline) {
    const tail = Atomics.load(control, Ring.TAIL)
    // Woken when the thread has read more.
    Atomics.wait(control, Ring.TAIL, tail, RETRY_MS)
    waiting = drain()
  }
  const left = waiting > 0 ? ` (${waiting} entries waiting were not written)` : ""
  end()
  if (alive()) Atomics.wait(control, Ring.DONE, 0, Math.max(0, deadline - Date.now()))
  const done = Atomics.load(control, Ring.DONE)
  if (!running() && done !== 1) return // Said when it stopped.
  if (done === 2) say(`its writer thread failed while closing${left}; the last entries may be missing`)
  else if (done !== 1 || left !== "")
    say(`its writer thread did not finish writing within ${CLOSE_MS} ms${left}; the last entries may be missing`)
}

/** Builder fields the ring carries as values ({@link Ring.FIELDS}). */
const FIELD_COUNT = Ring.FIELDS.length

/**
 * Whether the ring can carry `decision` as values: a builder's (whose fields are {@link Ring.FIELDS},
 * in that order) with no other property; other decisions go as their JSON text.
 */
const viaValues = (decision: Decision.Decision): boolean => {
  if (!(decision instanceof Decision.Builder) || typeof (decision as { toJSON?: unknown }).toJSON === "function")
    return false
  let i = 0
  for (const field in decision) if (field !== Ring.FIELDS[i++]) return false
  return i === FIELD_COUNT
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
  /** The settings `sink` was opened with. */
  private sinkSettings: SluiceConfig.AuditConfig
  /** Sinks a reload replaced, maybe still writing. */
  private readonly closing = new Set<Sink>()
  private readonly listeners = new Set<Listener>()

  /** Opens the sink of `settings`; throws when its file cannot be opened. */
  constructor(settings: SluiceConfig.AuditConfig) {
    this.sink = sinkOf(settings)
    this.sinkSettings = settings
    this.resize(settings.keep, settings.content)
  }

  /**
   * Applies the settings of a reloaded config: a sink that changed is opened anew and the old one
   * closed (when the new file cannot be opened it throws and the old sink stays), and the decisions
   * kept carry over into the new `keep` (the newest) and `content`.
   */
  reconfigure(settings: SluiceConfig.AuditConfig): void {
    const old = this.sinkSettings
    if (sinkKey(settings) !== sinkKey(old)) {
      // Two threads never write one file: the old one finishes first when the path stays (and is
      // opened again as it was when the new one cannot be).
      const samePath = settings.sink === "file" && old.sink === "file" && settings.path === old.path
      if (samePath && this.sink !== undefined) {
        this.sink.close()
        this.sink = undefined
      }
      let sink: Sink | undefined
      try {
        sink = sinkOf(settings)
      } catch (error) {
        if (samePath) this.sink = sinkOf(old)
        throw error
      }
      if (this.sink !== undefined) {
        // The old sink finishes while the gateway serves; `close` waits for it if it has not.
        this.sink.close(false)
        this.closing.add(this.sink)
      }
      this.sink = sink
      this.sinkSettings = settings
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

  /**
   * Keeps one decision; serialized now only when a sink or a listener wants it. With a `status` (0
   * or more, what its request was answered), the sink may take the request's JSON access line too
   * ({@link Sink.takesAccess}): true when it did (the caller writes it otherwise).
   */
  add(decision: Decision.Decision, key: string | undefined, costUsd: number, content?: Content, status = -1): boolean {
    this.keep(decision, key, costUsd, content)
    const sink = this.sink
    if (sink === undefined && this.listeners.size === 0) return false
    if (content === undefined && this.listeners.size === 0) return sink!.writeEntry(decision, key, costUsd, status)
    const line = lineOf(decision, key, costUsd, content)
    const access =
      status >= 0 && sink?.takesAccess() === true ? jsonAccessLine(decision, key, status, Date.now()) : undefined
    const taken = sink?.write(line, access) ?? false
    for (const listener of this.listeners) listener(decision, key, line)
    return taken
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
    for (const sink of this.closing) sink.close()
    this.closing.clear()
    this.sink?.close()
  }
}
