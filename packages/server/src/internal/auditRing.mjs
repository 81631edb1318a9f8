/**
 * The ring that carries audit entries from the event loop to the audit file's writer thread
 * (`auditWorker.mjs`): a `SharedArrayBuffer` the event loop copies each entry's values into and
 * the writer reads them from, with no message or system call per entry.
 *
 * The event loop writes an entry's values, not its JSON: the decision's fields in a fixed order
 * (those of `Decision.Builder`, {@link FIELDS}) and their values tagged by type, a string as its
 * Latin-1 bytes when it has no other character, else as its UTF-16 units — or, when it comes back
 * from entry to entry, as the number the reader keeps its JSON under (see {@link writer}) — and an
 * integer of 32 bits in 4 bytes. The writer rebuilds the same record and makes its JSON line, so the
 * line is the text `JSON.stringify` makes of the entry on the event loop.
 *
 * The times (the entry's, the access line's) go as their numbers, and the reader writes their text.
 *
 * Plain JavaScript on purpose: the writer thread loads it with Node's own loader, outside tsx and
 * vitest transforms.
 *
 * Layout: an `Int32Array` of control words ({@link HEAD}, {@link TAIL}, {@link SIGNAL},
 * {@link CLOSE}, {@link DONE}), then the data, in bytes (a T_NUM's number is 8-byte aligned, UTF-16
 * units 2-byte aligned; a T_INT's 4 bytes and a T_REF's 2 are not). A record is a kind byte, its length in bytes (4 bytes), and its payload. An
 * object's value is its tag, each key (tagged as a string) and its value, and T_END. The writer of
 * the ring moves HEAD, the reader TAIL; HEAD === TAIL is empty.
 */

import { isoTime, MAX as MAX_TIME } from "./isoTime.mjs"

/** Control words (indexes of the `Int32Array`). */
export const HEAD = 0
export const TAIL = 1
/** Bumped (and notified) to wake the reader before its next round. */
export const SIGNAL = 2
/** Set when the sink closes: the reader writes what is left, closes the file and sets DONE. */
export const CLOSE = 3
/** 1 once the reader has written everything and closed the file; 2 when it failed. */
export const DONE = 4
/** Bytes of control words before the data. */
const CONTROL_BYTES = 64

/** Record kinds. */
const ENTRY = 1
/** A line's text (of an entry the ring cannot carry as values, or with content). */
const TEXT = 2
/** A part of a line's text that goes on in the next record (a line longer than {@link MAX_RECORD}). */
const TEXT_PART = 3
/** An entry, then what its request's access line adds to it (see {@link writer}'s `entry`). */
const ENTRY_ACCESS = 4
/** An access line's text (of a request whose entry went as text), and a part of one, as TEXT and TEXT_PART. */
const ACCESS_TEXT = 5
const ACCESS_PART = 6
/** The records go on at the start of the data. */
const WRAP = 0xff

/** Value tags. */
const T_END = 0
const T_STR = 1
const T_NUM = 2
const T_TRUE = 3
const T_FALSE = 4
const T_NULL = 5
const T_ARR = 6
const T_OBJ = 7
const T_UNDEF = 8
/** A string the reader keeps already: its number (2 bytes). See {@link writer}. */
const T_REF = 9
/** A string the reader keeps from here on under the next number, then written as a T_STR's. */
const T_DEF = 10
/** An integer of 32 bits (4 bytes), where a T_NUM takes 8 and its alignment. */
const T_INT = 11

/** The most strings a writer numbers (numbers are 2 bytes). */
const MAX_REFS = 4096
/** The longest string a writer numbers, in UTF-16 units (its JSON is at most 6 bytes a unit, and quotes). */
const REF_LENGTH = 64
/** How many strings seen once a writer remembers before it forgets them all. */
const SEEN = 1024

/** The largest record in bytes; an entry that needs more goes as its text, in parts. */
export const MAX_RECORD = 32 * 1024

/** Nesting deeper than this goes as text (a decision is a few levels deep). */
const MAX_DEPTH = 32

/**
 * The decision's fields, in the order `Decision.Builder` has them (which `JSON.stringify` follows);
 * `AuditRing.test.ts` checks this list against a builder.
 */
export const FIELDS = [
  "requestId",
  "operation",
  "stream",
  "model",
  "pool",
  "strategy",
  "promptTokens",
  "promptTokensExact",
  "startedAt",
  "pools",
  "excluded",
  "attempts",
  "candidates",
  "upstream",
  "provider",
  "responseModel",
  "queueWaitMs",
  "backoffMs",
  "sticky",
  "scores",
  "promptTokensCounted",
  "promptTokensRules",
  "inputTokens",
  "outputTokens",
  "outcome",
  "error",
  "durationMs",
  "firstChunkMs",
  "hedge",
  "hedges"
]

/**
 * A new ring's shared memory: `bytes` of data (a multiple of 8, at least 4 × {@link MAX_RECORD}).
 * @param {number} bytes
 */
export const allocate = (bytes) => {
  // Each record is written where a whole MAX_RECORD fits: in a smaller ring an empty ring's middle
  // would fit none, on either side.
  if (bytes % 8 !== 0 || bytes < 4 * MAX_RECORD)
    throw new RangeError(`an audit ring takes a multiple of 8 bytes, at least ${4 * MAX_RECORD}`)
  return new SharedArrayBuffer(CONTROL_BYTES + bytes)
}

/** @param {SharedArrayBuffer} sab */
const views = (sab) => {
  const bytes = sab.byteLength - CONTROL_BYTES
  return {
    control: new Int32Array(sab, 0, CONTROL_BYTES / 4),
    u8: new Uint8Array(sab, CONTROL_BYTES, bytes),
    u16: new Uint16Array(sab, CONTROL_BYTES, bytes / 2),
    f64: new Float64Array(sab, CONTROL_BYTES, bytes / 8),
    bytes
  }
}

/** String encodings (the byte before a string's length). */
const LATIN1 = 0
const UTF16 = 1

/** Thrown inside {@link writer} when a record outgrows its room or a value cannot be carried. */
const NO = { no: true }

/**
 * The event loop's side: `entry` puts one entry in the ring, `text` one line's text (see each).
 *
 * Most strings of a decision come back at every request (the pool, the upstreams, the provider, the
 * outcome, the keys of an attempt's record): a string up to {@link REF_LENGTH} units long seen a
 * second time (the strings seen once are all forgotten when {@link SEEN} of them are remembered)
 * goes in once more, marked T_DEF, and
 * the reader keeps its JSON under the next number; from the next record on it goes as that number
 * (T_REF). At most `maxRefs` strings are numbered; past that, strings go as they are. So an entry of
 * an answered request takes some 230 bytes of the ring rather than 540, fewer for the event loop to
 * write and the writer thread to read (`bench/audit-ring.ts`: some 15% less of the event loop an
 * entry back to back, nothing that showed with the memory cold). Every string still round-trips exactly:
 * numbering changes only where its bytes come from.
 * @param {SharedArrayBuffer} sab
 * @param {number} [maxRefs] the most strings numbered (tests set fewer)
 */
export const writer = (sab, maxRefs = MAX_REFS) => {
  if (maxRefs > 0x10000) throw new RangeError("an audit ring numbers at most 65,536 strings (2 bytes a number)")
  const { control, u8, u16, f64, bytes } = views(sab)
  /** The strings the reader keeps, by their number. */
  const refs = new Map()
  /** How many strings the reader keeps (a string numbered twice in one record is kept twice). */
  let numbered = 0
  /** Strings seen once, not numbered (a string seen again is). */
  const seen = new Set()
  /**
   * Strings the record being written numbers (the first `defining` of them): the reader keeps them
   * only once it is published. Counted, not emptied: setting an array's length goes through V8's
   * runtime, a cost at every entry.
   */
  const defined = []
  let defining = 0
  let head = Atomics.load(control, HEAD)
  /** Where the record being written may end. */
  let limit = 0
  let at = 0

  /** Starts a record of at most `most` bytes at `at`; false when there is no room. */
  const reserve = (/** @type {number} */ most) => {
    const tail = Atomics.load(control, TAIL)
    if (head >= tail) {
      // After every record at least one byte is left before the end, for a WRAP.
      if (bytes - head > most) {
        at = head
        limit = head + most - 8
        return true
      }
      if (tail - 1 < most) return false
      u8[head] = WRAP
      head = 0
      Atomics.store(control, HEAD, head)
      at = 0
      limit = most - 8
      return true
    }
    if (tail - head - 1 <= most) return false
    at = head
    // Less the 8-byte alignment of the record's end.
    limit = head + most - 8
    return true
  }

  /** Ends the record started at `head` as a record of `kind`, and hands it to the reader. */
  const publish = (/** @type {number} */ kind) => {
    // The next record starts 8-byte aligned, as the reader expects numbers to be.
    at = (at + 7) & ~7
    const length = at - head
    u8[head] = kind
    u8[head + 1] = length & 0xff
    u8[head + 2] = (length >>> 8) & 0xff
    u8[head + 3] = (length >>> 16) & 0xff
    u8[head + 4] = length >>> 24
    head = at
    Atomics.store(control, HEAD, head)
  }

  /** A string: its encoding, its length in characters (4 bytes), its bytes or UTF-16 units. */
  const chars = (/** @type {string} */ s) => {
    const n = s.length
    if (at + 7 + 2 * n > limit) throw NO
    u8[at + 1] = n & 0xff
    u8[at + 2] = (n >>> 8) & 0xff
    u8[at + 3] = (n >>> 16) & 0xff
    u8[at + 4] = n >>> 24
    const start = at + 5
    let i = 0
    for (; i < n; i++) {
      const c = s.charCodeAt(i)
      if (c > 0xff) break
      u8[start + i] = c
    }
    if (i === n) {
      u8[at] = LATIN1
      at = start + n
      return
    }
    u8[at] = UTF16
    const units = (start + 1) >> 1
    for (i = 0; i < n; i++) u16[units + i] = s.charCodeAt(i)
    at = (units + n) << 1
  }

  /** A string: by its number when the reader keeps it, else as its characters (numbered if seen before). */
  const str = (/** @type {string} */ s) => {
    // A longer string is never numbered, nor looked up (its hash would take a pass over it).
    if (s.length <= REF_LENGTH) {
      const ref = refs.get(s)
      if (ref !== undefined) {
        u8[at] = T_REF
        u8[at + 1] = ref & 0xff
        u8[at + 2] = ref >>> 8
        at += 3
        return
      }
      if (numbered + defining < maxRefs) {
        if (seen.delete(s)) {
          // Not numbered within this record: the reader bounds a record's JSON by what it keeps before it.
          defined[defining++] = s
          u8[at++] = T_DEF
          return chars(s)
        }
        if (seen.size >= SEEN) seen.clear()
        seen.add(s)
      }
    }
    u8[at++] = T_STR
    chars(s)
  }

  // Each kind of value has a function of its own, so that V8's inline caches at each (the `toJSON`
  // lookup, the records' keys) see a few shapes rather than every shape an entry holds.

  /** A tag and a 32-bit integer (a length, or an integer value). */
  const tagged = (/** @type {number} */ tag, /** @type {number} */ n) => {
    u8[at] = tag
    u8[at + 1] = n & 0xff
    u8[at + 2] = (n >>> 8) & 0xff
    u8[at + 3] = (n >>> 16) & 0xff
    u8[at + 4] = n >>> 24
    at += 5
  }

  /** A time (epoch ms) the reader writes as text; anything else (which `toISOString` refuses) goes as text. */
  const time = (/** @type {unknown} */ t) => {
    if (typeof t !== "number" || !(t >= -MAX_TIME && t <= MAX_TIME)) throw NO
    value(t, 0)
  }

  /** @param {unknown} v @param {number} depth */
  const value = (v, depth) => {
    if (at + 16 > limit) throw NO
    if (typeof v === "string") str(v)
    else if (typeof v === "number") {
      // An integer of 32 bits (-0 too, which JSON writes as 0) takes 5 bytes, any other number 8 aligned.
      if ((v | 0) === v) return tagged(T_INT, v)
      u8[at] = T_NUM
      at = (at + 8) & ~7
      f64[at >> 3] = v
      at += 8
    } else if (typeof v === "boolean") u8[at++] = v ? T_TRUE : T_FALSE
    else if (v === undefined) u8[at++] = T_UNDEF
    else if (v === null) u8[at++] = T_NULL
    else if (typeof v !== "object" || depth >= MAX_DEPTH) {
      // A bigint (JSON throws); a function or symbol is not a field's value here. Deep nesting goes as text.
      throw NO
    } else if (Array.isArray(v)) array(v, depth)
    else record(/** @type {Record<string, unknown>} */ (v), depth)
  }

  /** @param {ReadonlyArray<unknown>} v @param {number} depth */
  const array = (v, depth) => {
    // A toJSON JSON would call (own or inherited, enumerable or not) goes as text.
    if (typeof (/** @type {{ toJSON?: unknown }} */ (v).toJSON) === "function") throw NO
    const n = v.length
    tagged(T_ARR, n)
    // JSON writes null for an undefined element (and for a hole).
    for (let i = 0; i < n; i++) {
      const e = v[i]
      if (e === undefined || typeof e === "function" || typeof e === "symbol") {
        if (at + 1 > limit) throw NO
        u8[at++] = T_NULL
      } else value(e, depth + 1)
    }
  }

  /** @param {Record<string, unknown>} v @param {number} depth */
  const record = (v, depth) => {
    // Plain records only: anything else (a class, a Date) is left to JSON.stringify, as is a toJSON.
    if (Object.getPrototypeOf(v) !== Object.prototype || typeof v["toJSON"] === "function") throw NO
    u8[at++] = T_OBJ
    for (const k in v) {
      const e = v[k]
      if (e === undefined || typeof e === "symbol" || typeof e === "function") continue
      if (at + 3 > limit) throw NO
      str(k)
      value(e, depth + 1)
    }
    if (at + 1 > limit) throw NO
    u8[at++] = T_END
  }

  return {
    /**
     * One entry: false when the ring has no room now; undefined when the entry cannot go as values (a
     * value JSON treats its own way, a record longer than {@link MAX_RECORD}, a start that is not a
     * time), nothing written either way.
     *
     * With `ms` (when the request was answered, epoch ms), the entry carries its request's access
     * line too (`accessLine.ts`'s `jsonAccessLine`): the reader writes it from the entry's fields and
     * these — the `status` answered and the `upstream` it names (the decision's, else its last
     * attempt's).
     * @param {object} decision a `Decision.Builder`, with no other own properties
     * @param {string | undefined} key
     * @param {number} costUsd
     * @param {number} [ms]
     * @param {number} [status]
     * @param {string} [upstream]
     * @returns {boolean | undefined}
     */
    entry: (decision, key, costUsd, ms, status, upstream) => {
      if (!reserve(MAX_RECORD)) return false
      at += 5
      // The fields of FIELDS, in its order, each read by its name (one shape at each read).
      const d = /** @type {Record<string, unknown>} */ (decision)
      try {
        // In the order of the entry's JSON: its time (of the decision's start), its cost, the decision.
        time(d.startedAt)
        value(costUsd, 0)
        // A request's own id is never seen again: not remembered as seen.
        const id = d.requestId
        if (typeof id === "string") {
          u8[at++] = T_STR
          chars(id)
        } else value(id, 1)
        value(d.operation, 1)
        value(d.stream, 1)
        value(d.model, 1)
        value(d.pool, 1)
        value(d.strategy, 1)
        value(d.promptTokens, 1)
        value(d.promptTokensExact, 1)
        value(d.startedAt, 1)
        value(d.pools, 1)
        value(d.excluded, 1)
        value(d.attempts, 1)
        value(d.candidates, 1)
        value(d.upstream, 1)
        value(d.provider, 1)
        value(d.responseModel, 1)
        value(d.queueWaitMs, 1)
        value(d.backoffMs, 1)
        value(d.sticky, 1)
        value(d.scores, 1)
        value(d.promptTokensCounted, 1)
        value(d.promptTokensRules, 1)
        value(d.inputTokens, 1)
        value(d.outputTokens, 1)
        value(d.outcome, 1)
        value(d.error, 1)
        value(d.durationMs, 1)
        value(d.firstChunkMs, 1)
        value(d.hedge, 1)
        value(d.hedges, 1)
        value(key, 0)
        if (ms !== undefined) {
          value(upstream, 0)
          value(status, 0)
          time(ms)
        }
      } catch (e) {
        // Nothing of the record is published, so none of the strings it numbered is.
        defining = 0
        if (e === NO) return undefined
        throw e
      }
      for (let i = 0; i < defining; i++) refs.set(defined[i], numbered++)
      defining = 0
      publish(ms === undefined ? ENTRY : ENTRY_ACCESS)
      return true
    },
    /**
     * One line's text (without its newline) from its character `from` on, in parts when it is long:
     * -1 once it is all in the ring, else where it stopped for want of room (`from`: nothing
     * written). The reader joins the parts, so the rest may follow later — before any other record.
     * An `access` line is a request's access line, which the reader writes where access lines go.
     * @param {string} line
     * @param {number} from
     * @param {boolean} [access]
     * @returns {number}
     */
    text: (line, from, access = false) => {
      const part = (MAX_RECORD - 32) >> 1
      for (;;) {
        if (!reserve(MAX_RECORD)) return from
        at += 5
        const end = Math.min(line.length, from + part)
        chars(from === 0 && end === line.length ? line : line.slice(from, end))
        publish(access ? (end < line.length ? ACCESS_PART : ACCESS_TEXT) : end < line.length ? TEXT_PART : TEXT)
        if (end === line.length) return -1
        from = end
      }
    },
    /** Bytes in use (written, not yet read). */
    used: () => {
      const tail = Atomics.load(control, TAIL)
      return head >= tail ? head - tail : bytes - tail + head
    },
    bytes
  }
}

/** The ASCII bytes of `text`. */
const ascii = (/** @type {string} */ text) => Uint8Array.from(text, (c) => c.charCodeAt(0))

/** `"<field>":` for each of {@link FIELDS}, with the comma before it. */
const FIELD_KEYS = FIELDS.map((f) => ascii(`,"${f}":`))
const TIME = ascii(`{"time":`)
const COST = ascii(`,"costUsd":`)
const DECISION = ascii(`,"decision":{`)
const KEY = ascii(`,"key":`)
const NULL = ascii("null")
const TRUE = ascii("true")
const FALSE = ascii("false")
const HEX = ascii("0123456789abcdef")

/** The access line's text around its values (`accessLine.ts`'s `jsonAccessLine` has the same). */
const A_REQUEST_ID = ascii(`{"message":{"msg":"request","requestId":`)
const A_OPERATION = ascii(`,"operation":`)
const A_STREAM = ascii(`,"stream":`)
const A_POOL = ascii(`,"pool":`)
const A_UPSTREAM = ascii(`,"upstream":`)
const A_KEY = ascii(`,"key":`)
const A_STATUS = ascii(`,"status":`)
const A_OUTCOME = ascii(`,"outcome":`)
const A_ATTEMPTS = ascii(`,"attempts":`)
const A_DURATION = ascii(`,"durationMs":`)
const A_QUEUE_WAIT = ascii(`,"queueWaitMs":`)
const A_INPUT = ascii(`,"inputTokens":`)
const A_OUTPUT = ascii(`,"outputTokens":`)
const A_FIRST_CHUNK = ascii(`,"firstChunkMs":`)
const A_ERROR = ascii(`,"error":`)
const A_TIMESTAMP = ascii(`},"logLevel":"INFO","timestamp":`)
const A_END = ascii(`,"annotations":{},"spans":{},"fiberId":""}`)

/** Indexes in {@link FIELDS} of the fields an access line has. */
const F_REQUEST_ID = FIELDS.indexOf("requestId")
const F_OPERATION = FIELDS.indexOf("operation")
const F_STREAM = FIELDS.indexOf("stream")
const F_POOL = FIELDS.indexOf("pool")
const F_ATTEMPTS = FIELDS.indexOf("attempts")
const F_OUTCOME = FIELDS.indexOf("outcome")
const F_DURATION = FIELDS.indexOf("durationMs")
const F_QUEUE_WAIT = FIELDS.indexOf("queueWaitMs")
const F_INPUT = FIELDS.indexOf("inputTokens")
const F_OUTPUT = FIELDS.indexOf("outputTokens")
const F_FIRST_CHUNK = FIELDS.indexOf("firstChunkMs")
const F_ERROR = FIELDS.indexOf("error")

/**
 * Where access lines go: `out` from `used`. `room(bytes)` is called before a line that may take up
 * to `bytes` is written; it makes that room (writing out what `out` holds, growing it).
 * @typedef {{ out: Buffer, used: number, room: (bytes: number) => void }} AccessLines
 */

/** Access lines gathered in memory (for tests: {@link reader}'s `access` takes them). */
const gathered = () => {
  /** @type {AccessLines} */
  const lines = {
    out: Buffer.alloc(64 * 1024),
    used: 0,
    room: (bytes) => {
      if (lines.out.length - lines.used >= bytes) return
      const more = Buffer.alloc(Math.max(2 * lines.out.length, lines.used + bytes))
      lines.out.copy(more, 0, 0, lines.used)
      lines.out = more
    }
  }
  return lines
}

/**
 * How JSON writes each Latin-1 character: 0 as it is (ASCII), 1 with a short escape (`\n`...),
 * 2 as `\u00XX`, 3 as two bytes of UTF-8.
 */
const ESCAPES = Uint8Array.from({ length: 256 }, (_, c) =>
  c === 0x22 || c === 0x5c || c === 0x08 || c === 0x0c || c === 0x0a || c === 0x0d || c === 0x09
    ? 1
    : c < 0x20
      ? 2
      : c < 0x80
        ? 0
        : 3
)
/** The letter of each short escape. */
const SHORT = Uint8Array.from({ length: 256 }, (_, c) =>
  c === 0x08 ? 0x62 : c === 0x0c ? 0x66 : c === 0x0a ? 0x6e : c === 0x0d ? 0x72 : c === 0x09 ? 0x74 : c
)

/**
 * The reader's side: `write(out, pos)` writes the next line (and its newline) as UTF-8 into `out`
 * from `pos` and gives the position after it; {@link EMPTY} when the ring holds no whole line,
 * {@link FULL} when `out` may not have room for the next record's line (the room asked for is
 * bounded by the record's bytes and the widest string kept: from 0 in 1 MB, an entry of an answered
 * request always has; a long line of text, or a long entry of wide kept strings, may need more, and
 * the worker's buffer grows). An entry's line is written byte by byte from the record, the text
 * `JSON.stringify` makes of the entry (`AuditRing.test.ts` checks that the two agree), without
 * making a string or an object. TAIL moves past each record once it is read.
 *
 * The access lines entries carry (and the access lines' texts) go to `access`, each with its
 * newline, in the order of the records: an entry's is written from the JSON its fields have in the
 * entry's line, copied from where that line went.
 * @param {SharedArrayBuffer} sab
 * @param {AccessLines} [access]
 */
export const reader = (sab, access = gathered()) => {
  const { control, u8, u16, f64 } = views(sab)
  const buffer = Buffer.from(sab, CONTROL_BYTES, sab.byteLength - CONTROL_BYTES)
  let tail = Atomics.load(control, TAIL)
  /** Where the record is read. */
  let at = 0
  /** The line's bytes go here, from `pos`. */
  let out = Buffer.alloc(0)
  let pos = 0

  const bytes = (/** @type {Uint8Array} */ b) => {
    for (let i = 0; i < b.length; i++) out[pos + i] = b[i]
    pos += b.length
  }

  const escape = (/** @type {number} */ c) => {
    out[pos] = 0x5c
    out[pos + 1] = 0x75
    out[pos + 2] = HEX[c >>> 12]
    out[pos + 3] = HEX[(c >>> 8) & 15]
    out[pos + 4] = HEX[(c >>> 4) & 15]
    out[pos + 5] = HEX[c & 15]
    pos += 6
  }

  /** A Latin-1 character as JSON writes it. */
  const latin1 = (/** @type {number} */ c) => {
    const how = ESCAPES[c]
    if (how === 0) out[pos++] = c
    else if (how === 3) {
      out[pos] = 0xc0 | (c >>> 6)
      out[pos + 1] = 0x80 | (c & 0x3f)
      pos += 2
    } else if (how === 1) {
      out[pos] = 0x5c
      out[pos + 1] = SHORT[c]
      pos += 2
    } else escape(c)
  }

  /** A string as JSON writes it: quoted, escaped, UTF-8. */
  const string = () => {
    const n = u8[at + 1] | (u8[at + 2] << 8) | (u8[at + 3] << 16) | (u8[at + 4] << 24)
    out[pos++] = 0x22
    if (u8[at] === LATIN1) {
      const start = at + 5
      for (let i = start; i < start + n; i++) latin1(u8[i])
      at = start + n
    } else {
      const start = (at + 6) >> 1
      for (let i = start; i < start + n; i++) {
        const c = u16[i]
        if (c < 0x100) latin1(c)
        else if (c < 0x800) {
          out[pos] = 0xc0 | (c >>> 6)
          out[pos + 1] = 0x80 | (c & 0x3f)
          pos += 2
        } else if (c < 0xd800 || c > 0xdfff) {
          out[pos] = 0xe0 | (c >>> 12)
          out[pos + 1] = 0x80 | ((c >>> 6) & 0x3f)
          out[pos + 2] = 0x80 | (c & 0x3f)
          pos += 3
        } else if (c < 0xdc00 && i + 1 < start + n && u16[i + 1] >= 0xdc00 && u16[i + 1] <= 0xdfff) {
          // A surrogate pair: one character of four bytes.
          const p = 0x10000 + ((c - 0xd800) << 10) + (u16[i + 1] - 0xdc00)
          out[pos] = 0xf0 | (p >>> 18)
          out[pos + 1] = 0x80 | ((p >>> 12) & 0x3f)
          out[pos + 2] = 0x80 | ((p >>> 6) & 0x3f)
          out[pos + 3] = 0x80 | (p & 0x3f)
          pos += 4
          i++
        } else escape(c) // A lone surrogate, as JSON writes it.
      }
      at = (start + n) << 1
    }
    out[pos++] = 0x22
  }

  /** The JSON of the strings the writer numbered (T_DEF), by their number. */
  const kept = []
  /** The most bytes of JSON a kept string has. */
  let widest = 0

  /** A string (T_STR, T_DEF or T_REF) as JSON writes it. */
  const text = () => {
    const tag = u8[at]
    if (tag === T_REF) {
      const ref = u8[at + 1] | (u8[at + 2] << 8)
      const json = kept[ref]
      if (json === undefined) throw new Error(`audit ring: unknown string ${ref}`)
      at += 3
      return bytes(json)
    }
    if (tag !== T_STR && tag !== T_DEF) throw new Error(`audit ring: a string's tag expected, not ${tag}`)
    at++
    if (tag === T_STR) return string()
    const start = pos
    string()
    const json = Uint8Array.prototype.slice.call(out, start, pos)
    kept.push(json)
    if (json.length > widest) widest = json.length
  }

  /** An integer's digits. */
  const integer = (/** @type {number} */ n) => {
    if (n < 0) {
      out[pos++] = 0x2d
      n = -n
    }
    let digits = 1
    for (let m = n; m >= 10; m = Math.floor(m / 10)) digits++
    for (let i = pos + digits - 1; i >= pos; i--) {
      out[i] = 0x30 + (n % 10)
      n = Math.floor(n / 10)
    }
    pos += digits
  }

  /** Any value as JSON writes it. */
  const value = () => {
    const tag = u8[at]
    switch (tag) {
      case T_STR:
      case T_DEF:
      case T_REF:
        return text()
      case T_INT: {
        const n = u8[at + 1] | (u8[at + 2] << 8) | (u8[at + 3] << 16) | (u8[at + 4] << 24)
        at += 5
        return integer(n)
      }
      case T_NUM: {
        at = (at + 8) & ~7
        const n = f64[at >> 3]
        at += 8
        if (!Number.isFinite(n)) return bytes(NULL)
        const text = `${n}`
        for (let i = 0; i < text.length; i++) out[pos + i] = text.charCodeAt(i)
        pos += text.length
        return
      }
      case T_TRUE:
        at++
        return bytes(TRUE)
      case T_FALSE:
        at++
        return bytes(FALSE)
      case T_NULL:
      case T_UNDEF:
        at++
        return bytes(NULL)
      case T_ARR: {
        const n = u8[at + 1] | (u8[at + 2] << 8) | (u8[at + 3] << 16) | (u8[at + 4] << 24)
        at += 5
        out[pos++] = 0x5b
        for (let i = 0; i < n; i++) {
          if (i > 0) out[pos++] = 0x2c
          value()
        }
        out[pos++] = 0x5d
        return
      }
      case T_OBJ: {
        at++
        out[pos++] = 0x7b
        // Each key is tagged as a string; T_END ends the record.
        for (let first = true; u8[at] !== T_END; first = false) {
          if (!first) out[pos++] = 0x2c
          text()
          out[pos++] = 0x3a
          value()
        }
        at++
        out[pos++] = 0x7d
        return
      }
      default:
        throw new Error(`audit ring: unknown value tag ${tag}`)
    }
  }

  /** Where the fields of the entry written last begin in its line (-1 for a field left out), and end. */
  const starts = new Int32Array(FIELDS.length)
  const ends = new Int32Array(FIELDS.length)
  let keyStart = -1
  let keyEnd = -1
  /** How many attempts the entry written last has. */
  let attempts = 0

  /** A time (a number's value, epoch ms) as JSON writes its `toISOString` text. */
  const time = () => {
    let ms
    if (u8[at] === T_INT) {
      ms = u8[at + 1] | (u8[at + 2] << 8) | (u8[at + 3] << 16) | (u8[at + 4] << 24)
      at += 5
    } else {
      at = (at + 8) & ~7
      ms = f64[at >> 3]
      at += 8
    }
    const text = isoTime(ms)
    out[pos++] = 0x22
    for (let i = 0; i < text.length; i++) out[pos + i] = text.charCodeAt(i)
    pos += text.length
    out[pos++] = 0x22
  }

  /** An entry's line: `{"time":…,"costUsd":…,"decision":{…},"key":…}`, the fields left undefined left out. */
  const entry = () => {
    attempts = 0
    bytes(TIME)
    time()
    bytes(COST)
    value()
    bytes(DECISION)
    for (let i = 0; i < FIELD_KEYS.length; i++) {
      if (u8[at] === T_UNDEF) {
        at++
        starts[i] = -1
        continue
      }
      const key = /** @type {Uint8Array} */ (FIELD_KEYS[i])
      // The first field written has no comma before it.
      if (out[pos - 1] === 0x7b) for (let j = 1; j < key.length; j++) out[pos++] = key[j]
      else bytes(key)
      if (i === F_ATTEMPTS)
        attempts = u8[at] === T_ARR ? u8[at + 1] | (u8[at + 2] << 8) | (u8[at + 3] << 16) | (u8[at + 4] << 24) : 0
      starts[i] = pos
      value()
      ends[i] = pos
    }
    out[pos++] = 0x7d
    if (u8[at] === T_UNDEF) {
      at++
      keyStart = -1
    } else {
      bytes(KEY)
      keyStart = pos
      value()
      keyEnd = pos
    }
    out[pos++] = 0x7d
  }

  /** The JSON of `line` from `start` to `end`, or null when `start` is -1 (a field left out). */
  const copy = (/** @type {Buffer} */ line, /** @type {number} */ start, /** @type {number} */ end) => {
    if (start === -1) return bytes(NULL)
    for (let i = start; i < end; i++) out[pos++] = line[i]
  }

  /** A field of the entry written last, from `line` (where it was written). */
  const field = (/** @type {Buffer} */ line, /** @type {number} */ i) => copy(line, starts[i], ends[i])

  /**
   * The access line of the entry just written to `line`, to `out` from `pos`: its fields' JSON copied
   * from that line, then the upstream, status and time the record adds after the entry.
   */
  const accessLine = (/** @type {Buffer} */ line) => {
    bytes(A_REQUEST_ID)
    field(line, F_REQUEST_ID)
    bytes(A_OPERATION)
    field(line, F_OPERATION)
    bytes(A_STREAM)
    field(line, F_STREAM)
    bytes(A_POOL)
    field(line, F_POOL)
    bytes(A_UPSTREAM)
    value()
    bytes(A_KEY)
    copy(line, keyStart, keyEnd)
    bytes(A_STATUS)
    value()
    bytes(A_OUTCOME)
    field(line, F_OUTCOME)
    bytes(A_ATTEMPTS)
    integer(attempts)
    bytes(A_DURATION)
    field(line, F_DURATION)
    bytes(A_QUEUE_WAIT)
    field(line, F_QUEUE_WAIT)
    bytes(A_INPUT)
    field(line, F_INPUT)
    bytes(A_OUTPUT)
    field(line, F_OUTPUT)
    if (starts[F_FIRST_CHUNK] !== -1) {
      bytes(A_FIRST_CHUNK)
      field(line, F_FIRST_CHUNK)
    }
    if (starts[F_ERROR] !== -1) {
      bytes(A_ERROR)
      field(line, F_ERROR)
    }
    bytes(A_TIMESTAMP)
    time()
    bytes(A_END)
    out[pos++] = 0x0a
  }

  /** A line's text, joined from its parts; an access line's. */
  let pending = ""
  let pendingAccess = ""
  /** Where `next` has lines written. */
  let scratch = Buffer.alloc(1024 * 1024)

  /**
   * @param {Buffer} into
   * @param {number} from
   * @returns {number}
   */
  const write = (into, from) => {
    for (;;) {
      const head = Atomics.load(control, HEAD)
      if (tail === head) return EMPTY
      const kind = u8[tail]
      if (kind === WRAP) {
        tail = 0
        Atomics.store(control, TAIL, tail)
        continue
      }
      const length = u8[tail + 1] | (u8[tail + 2] << 8) | (u8[tail + 3] << 16) | (u8[tail + 4] << 24)
      // At most 6 bytes of JSON for a byte of the record, the fields' names, the newline; in an
      // entry, a kept string's 3 bytes stand for its JSON and the comma or colon and comma around
      // it (a record refers only to strings kept before it).
      const most = kind === ENTRY || kind === ENTRY_ACCESS ? Math.max(6, Math.ceil((widest + 2) / 3)) : 6
      if (into.length - from < length * most + 1024) return FULL
      at = tail + 5
      out = into
      pos = from
      let done = true
      if (kind === ENTRY) entry()
      else if (kind === ENTRY_ACCESS) {
        entry()
        const end = pos
        // The access line's fields are parts of the entry's line, its upstream, status and time
        // the rest of the record, its other text under 1 KB.
        access.room(end - from + length * most + 1024)
        out = access.out
        pos = access.used
        accessLine(into)
        access.used = pos
        out = into
        pos = end
      } else if (kind === ACCESS_TEXT || kind === ACCESS_PART) {
        const n = u8[at + 1] | (u8[at + 2] << 8) | (u8[at + 3] << 16) | (u8[at + 4] << 24)
        const part =
          u8[at] === LATIN1
            ? buffer.toString("latin1", at + 5, at + 5 + n)
            : buffer.toString("utf16le", (at + 6) & ~1, ((at + 6) & ~1) + 2 * n)
        done = false
        if (kind === ACCESS_PART) pendingAccess += part
        else {
          const text = pendingAccess + part
          pendingAccess = ""
          access.room(text.length * 3 + 1)
          access.used += access.out.write(text, access.used)
          access.out[access.used++] = 0x0a
        }
      } else if (kind === TEXT || kind === TEXT_PART) {
        const n = u8[at + 1] | (u8[at + 2] << 8) | (u8[at + 3] << 16) | (u8[at + 4] << 24)
        const part =
          u8[at] === LATIN1
            ? buffer.toString("latin1", at + 5, at + 5 + n)
            : buffer.toString("utf16le", (at + 6) & ~1, ((at + 6) & ~1) + 2 * n)
        if (kind === TEXT_PART) {
          pending += part
          done = false
        } else {
          const text = pending + part
          pending = ""
          if (into.length - from < text.length * 3 + 1) {
            // Too long for `into` as it is: the part is read again with more room.
            pending = text.slice(0, text.length - part.length)
            return FULL
          }
          pos += into.write(text, pos)
        }
      } else throw new Error(`audit ring: unknown record kind ${kind}`)
      tail += length
      Atomics.store(control, TAIL, tail)
      if (done) {
        into[pos++] = 0x0a
        return pos
      }
    }
  }

  return {
    write,
    /** The access lines written since the last call, with their newlines (for tests, with the `access` lines in memory). */
    access: () => {
      const text = access.out.toString("utf8", 0, access.used)
      access.used = 0
      return text
    },
    /** The next line's text, or undefined (for tests: it goes through `write`). */
    next: () => {
      for (;;) {
        const end = write(scratch, 0)
        if (end === FULL) scratch = Buffer.alloc(scratch.length * 2)
        else return end === EMPTY ? undefined : scratch.toString("utf8", 0, end - 1)
      }
    }
  }
}

/** What {@link reader}'s `write` answers when the ring holds no whole line. */
export const EMPTY = -1
/** What {@link reader}'s `write` answers when the next line may not fit where it was to go. */
export const FULL = -2

/**
 * Where the next piece of `bytes` (whole lines, from `from` to `to`, where a line ends) ends: the
 * most whole lines that take at most `most` bytes, or the first line alone when it is longer.
 * @param {Uint8Array} bytes
 * @param {number} from
 * @param {number} to
 * @param {number} most
 * @returns {number}
 */
export const piece = (bytes, from, to, most) => {
  if (to - from <= most) return to
  const cut = bytes.lastIndexOf(0x0a, from + most - 1)
  return cut >= from ? cut + 1 : bytes.indexOf(0x0a, from) + 1
}
