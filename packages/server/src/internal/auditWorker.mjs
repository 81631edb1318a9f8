/**
 * The audit file's writer thread (see `auditRing.mjs` and the file sink in `audit.ts`): it reads
 * the entries the event loop puts in the ring, makes their JSON lines and appends them to the file,
 * rotating it past `maxBytes` as the sink's settings say.
 *
 * It wakes every `flushMs`, or sooner when the event loop signals (the ring is half full, or the
 * sink closes), writes the lines of everything the ring holds into a buffer (each entry's JSON
 * made from its record, byte by byte) and writes that with one system call per megabyte.
 * When the sink closes it writes what is left, closes the file, sets DONE to 1 and ends (DONE is 2
 * when it failed).
 *
 * The access lines the entries carry (see `auditRing.mjs`) go to `accessFd`, the process's standard
 * output, at the same times: in one write each round on a file or a terminal; on a pipe in writes of
 * whole lines of at most {@link PIPE_BUF} bytes, which the system writes whole, so that another
 * thread's lines (the event loop's log lines) never land inside one. A write that fails is dropped,
 * as Node's console drops it; a pipe that is full is waited for (once the sink closes, for
 * {@link CLOSING_WAIT_MS} at most).
 *
 * Plain JavaScript on purpose: worker threads load their script with Node's own loader, outside
 * tsx and vitest transforms.
 *
 * workerData: { sab, path, maxBytes, files, flushMs, accessFd } — the ring's memory and the sink's
 * settings. (The event loop opened the file once too, so that one that cannot be opened is refused
 * there.)
 */
import { closeSync, existsSync, fstatSync, ftruncateSync, openSync, renameSync, rmSync, writeSync } from "node:fs"
import { workerData } from "node:worker_threads"
import { CLOSE, DONE, EMPTY, FULL, piece, reader, SIGNAL, TAIL } from "./auditRing.mjs"

/** @type {{ sab: SharedArrayBuffer, path: string, maxBytes: number, files: number, flushMs: number, accessFd: number }} */
const settings = workerData
const control = new Int32Array(settings.sab, 0, 16)
const { path, maxBytes, files, flushMs, accessFd } = settings
let failed = false

/** The most bytes a pipe takes in one piece (POSIX's least, Linux's): a write of no more is never split. */
const PIPE_BUF = 4096

/**
 * Whether the access lines go to a pipe, which takes them in writes of {@link PIPE_BUF} at most. (The
 * sink hands none over when they would go to a socket.)
 */
const piped = (() => {
  try {
    return fstatSync(accessFd).isFIFO()
  } catch {
    return false
  }
})()

/** How long a closing sink's thread waits for a full pipe to take its access lines before it drops them. */
const CLOSING_WAIT_MS = 5_000

/** Waited on for a millisecond while a full pipe takes nothing (nothing wakes it sooner). */
const pause = new Int32Array(new SharedArrayBuffer(4))

/**
 * Writes `bytes` from `from` to `to` to the access lines' file descriptor: true when written, false
 * when a write failed (the rest is dropped). A non-blocking pipe that is full is tried again every
 * millisecond; once the sink closes, for {@link CLOSING_WAIT_MS} at most without progress (then the
 * rest is dropped), so that a reader that never reads again cannot keep the process from exiting.
 */
const writeOut = (/** @type {Buffer} */ bytes, /** @type {number} */ from, /** @type {number} */ to) => {
  let waiting = 0
  while (from < to) {
    try {
      from += writeSync(accessFd, bytes, from, to - from)
      waiting = 0
    } catch (error) {
      if (/** @type {{ code?: unknown }} */ (error).code !== "EAGAIN") return false
      if (Atomics.load(control, CLOSE) === 1 && ++waiting > CLOSING_WAIT_MS) return false
      Atomics.wait(pause, 0, 0, 1)
    }
  }
  return true
}

/** The access lines waiting to be written. */
const access = {
  out: Buffer.allocUnsafe(64 * 1024),
  used: 0,
  /** Makes room for `bytes` more: writes what waits, and grows the buffer when that is not enough. */
  room: (/** @type {number} */ bytes) => {
    if (access.out.length - access.used >= bytes) return
    flushAccess()
    if (access.out.length < bytes) access.out = Buffer.allocUnsafe(bytes)
  }
}

/** Writes the access lines waiting (on a pipe, whole lines of at most {@link PIPE_BUF} bytes a write). */
const flushAccess = () => {
  const { out, used } = access
  access.used = 0
  if (!piped) return void writeOut(out, 0, used)
  // A line longer than PIPE_BUF goes alone (and may be split).
  for (let from = 0, to = 0; from < used; from = to) {
    to = piece(out, from, used, PIPE_BUF)
    if (!writeOut(out, from, to)) return
  }
}

const ring = reader(settings.sab, access)

/** @param {unknown} error */
const report = (error) => {
  if (failed) return
  failed = true
  const message = error instanceof Error ? error.message : String(error)
  try {
    writeSync(2, `sluice: the audit file ${path} cannot be written: ${message}\n`)
  } catch {
    // Nowhere to say it.
  }
}

/** The file, or -1 when it could not be opened (the lines are dropped, reported once). */
let fd = -1
/** The file's size as far as it holds whole lines (what rotation counts). */
let size = 0

/** When opening last failed (epoch ms): it is tried again a second later, at the next flush. */
let openFailedAt = 0

/** Opens `path` (a failure is reported once, and opening is tried again a second later). */
const open = () => {
  openFailedAt = 0
  try {
    fd = openSync(path, "a")
    size = fstatSync(fd).size
  } catch (error) {
    fd = -1
    size = 0
    openFailedAt = Date.now()
    report(error)
  }
}
open()

/**
 * Writes `bytes` (whole lines) to the file. A failure is reported once and the bytes dropped; the
 * part of them written, if any, is cut off again, so that no line is left half written for the next
 * one to run into.
 */
const append = (/** @type {Buffer} */ bytes) => {
  if (fd === -1 && Date.now() - openFailedAt >= 1000) open()
  if (fd === -1) return
  try {
    for (let done = 0; done < bytes.length;) done += writeSync(fd, bytes, done, bytes.length - done)
    size += bytes.length
  } catch (error) {
    report(error)
    try {
      ftruncateSync(fd, size)
    } catch {
      // Left as it is.
    }
  }
}

/** The file becomes `path.1` (older ones shift up to `path.<files>`), and a new one is opened. */
const rotate = () => {
  try {
    if (fd !== -1) closeSync(fd)
  } catch (error) {
    report(error)
  }
  fd = -1
  let renamed = true
  try {
    if (files === 0) rmSync(path, { force: true })
    else {
      rmSync(`${path}.${files}`, { force: true })
      for (let i = files - 1; i >= 1; i--)
        if (existsSync(`${path}.${i}`)) renameSync(`${path}.${i}`, `${path}.${i + 1}`)
      renameSync(path, `${path}.1`)
    }
  } catch (error) {
    renamed = false
    report(error)
  }
  // Whatever the renames did, the file is opened again; when they failed, the next try comes after
  // another maxBytes (not at every line).
  open()
  if (!renamed) size = 0
}

/** The lines' bytes, written to the file when the ring is empty or this is full. */
let buffer = Buffer.allocUnsafe(1024 * 1024)
let used = 0

const flush = () => {
  if (used === 0) return
  append(buffer.subarray(0, used))
  used = 0
}

/**
 * Writes every whole line the ring holds into the buffer, rotating the file where a line would take
 * it past `maxBytes` (`size` counts what is written, `used` what waits in the buffer).
 */
const drain = () => {
  for (;;) {
    const start = used
    const end = ring.write(buffer, used)
    if (end === EMPTY) return
    if (end === FULL) {
      // A line longer than the buffer gets a buffer of its own size.
      if (used === 0) buffer = Buffer.allocUnsafe(buffer.length * 2)
      flush()
      continue
    }
    used = end
    if ((size > 0 || start > 0) && size + used > maxBytes) {
      // What came before goes to the file being rotated; this line starts the next.
      const bytes = end - start
      used = start
      flush()
      rotate()
      buffer.copyWithin(0, start, end)
      used = bytes
    }
  }
}

try {
  for (;;) {
    const signal = Atomics.load(control, SIGNAL)
    // The event loop sets CLOSE after its last record: seen before the ring is read, nothing follows.
    const closing = Atomics.load(control, CLOSE) === 1
    drain()
    flush()
    if (access.used > 0) flushAccess()
    // A closing event loop waiting for room is woken.
    Atomics.notify(control, TAIL)
    if (closing) break
    Atomics.wait(control, SIGNAL, signal, flushMs)
  }
  try {
    if (fd !== -1) closeSync(fd)
  } catch (error) {
    report(error)
  }
  Atomics.store(control, DONE, 1)
} catch (error) {
  // The event loop stops waiting for what will not come (and says so).
  Atomics.store(control, DONE, 2)
  throw error
} finally {
  Atomics.notify(control, DONE)
}
