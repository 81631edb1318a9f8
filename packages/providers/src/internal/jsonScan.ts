/**
 * A JSON validator for streamed chunks that allocates nothing: it walks the text once and says
 * whether it is one JSON object (exactly what `JSON.parse` accepts, with an object on top), and
 * whether a key of that object asks for a closer look (`error` not null, `usage` an object or array,
 * or a key written with escapes, which could spell either).
 *
 * A pass-through stream only needs to know that each chunk is sound before it relays its bytes;
 * parsing every chunk into objects to learn that costs a fifth of a pass-through chunk's time and
 * leaves its objects as garbage. A chunk that asks for a closer look (an in-band error, the usage chunk) is parsed
 * by the caller as before. Deeper than {@link MAX_DEPTH} the scan stops and asks for a closer look too.
 */

/** What {@link scan} found. */
export const Scanned = {
  /** Not JSON, or JSON whose top level is not an object. */
  Invalid: 0,
  /** A JSON object with nothing to look at more closely. */
  Plain: 1,
  /** Valid as far as scanned, but parse it: a key may carry an error or usage, or it nests deep. */
  Closer: 2
} as const

/** What {@link scan} found. */
export type Scanned = (typeof Scanned)[keyof typeof Scanned]

/** Nesting beyond which the scan leaves the verdict to `JSON.parse`. */
const MAX_DEPTH = 64

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COMMA = 0x2c
const COLON = 0x3a
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const MINUS = 0x2d
const PLUS = 0x2b
const DOT = 0x2e
const ZERO = 0x30
const NINE = 0x39

const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09
const isDigit = (c: number) => c >= ZERO && c <= NINE
const isHex = (c: number) => isDigit(c) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46)

/** Whether the last string {@link skipString} read holds an escape. */
let escaped = false

/** The index after the string starting at `i` (its opening quote), or -1 when it is not a JSON string. */
const skipString = (text: string, i: number): number => {
  const n = text.length
  escaped = false
  for (i++; i < n; i++) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) return i + 1
    if (c < 0x20) return -1
    if (c === BACKSLASH) {
      escaped = true
      const e = text.charCodeAt(++i)
      if (e === 0x75) {
        // \uXXXX
        if (i + 4 >= n) return -1
        for (let k = 1; k <= 4; k++) if (!isHex(text.charCodeAt(i + k))) return -1
        i += 4
      } else if (
        e !== QUOTE &&
        e !== BACKSLASH &&
        e !== 0x2f &&
        e !== 0x62 &&
        e !== 0x66 &&
        e !== 0x6e &&
        e !== 0x72 &&
        e !== 0x74
      ) {
        return -1
      }
    }
  }
  return -1
}

/** The index after the number starting at `i`, or -1 when it is not a JSON number. */
const skipNumber = (text: string, i: number): number => {
  if (text.charCodeAt(i) === MINUS) i++
  const first = text.charCodeAt(i)
  if (first === ZERO) i++
  else if (first > ZERO && first <= NINE) while (isDigit(text.charCodeAt(++i)));
  else return -1
  if (text.charCodeAt(i) === DOT) {
    if (!isDigit(text.charCodeAt(++i))) return -1
    while (isDigit(text.charCodeAt(++i)));
  }
  const e = text.charCodeAt(i)
  if (e === 0x65 || e === 0x45) {
    const sign = text.charCodeAt(++i)
    if (sign === PLUS || sign === MINUS) i++
    if (!isDigit(text.charCodeAt(i))) return -1
    while (isDigit(text.charCodeAt(++i)));
  }
  return i
}

/** The index after `word` at `i`, or -1. */
const skipWord = (text: string, i: number, word: string): number => (text.startsWith(word, i) ? i + word.length : -1)

/** Whether the top-level key `text[from, to)` (quotes excluded, no escapes) is one to look at, given its value's first character. */
const worthACloserLook = (text: string, from: number, to: number, value: number): boolean => {
  const length = to - from
  if (length !== 5) return false
  if (text.startsWith("error", from)) return value !== 0x6e // anything but null
  if (text.startsWith("usage", from)) return value === OPEN_BRACE || value === OPEN_BRACKET
  return false
}

/** The containers around the cursor, outermost first: 1 for an object, 0 for an array. */
const objects = new Uint8Array(MAX_DEPTH)

/** Whether a top-level key of the object being scanned asks for a closer look. */
let closer = false

/** The index after the whitespace at `i`. */
const skipSpace = (text: string, i: number): number => {
  while (isSpace(text.charCodeAt(i))) i++
  return i
}

/** Scans `text`; see {@link Scanned}. */
export const scan = (text: string): Scanned => {
  const n = text.length
  let i = skipSpace(text, 0)
  if (text.charCodeAt(i) !== OPEN_BRACE) return Scanned.Invalid
  let depth = 0
  closer = false
  for (;;) {
    // A value starts at `i` (after whitespace).
    i = skipSpace(text, i)
    let c = text.charCodeAt(i)
    if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (depth >= MAX_DEPTH) return Scanned.Closer
      const object = c === OPEN_BRACE
      objects[depth++] = object ? 1 : 0
      i = skipSpace(text, i + 1)
      c = text.charCodeAt(i)
      if (c !== (object ? CLOSE_BRACE : CLOSE_BRACKET)) {
        if (object) {
          i = key(text, i, depth === 1)
          if (i < 0) return Scanned.Invalid
        }
        continue
      }
      // An empty container: its end is read below, as any value's.
    } else {
      if (c === QUOTE) i = skipString(text, i)
      else if (c === MINUS || isDigit(c)) i = skipNumber(text, i)
      else if (c === 0x74) i = skipWord(text, i, "true")
      else if (c === 0x66) i = skipWord(text, i, "false")
      else if (c === 0x6e) i = skipWord(text, i, "null")
      else return Scanned.Invalid
      if (i < 0) return Scanned.Invalid
      i = skipSpace(text, i)
      c = text.charCodeAt(i)
    }
    // After a value (or at an empty container's end): the next member, or the end of containers.
    for (;;) {
      const object = objects[depth - 1] === 1
      if (c === (object ? CLOSE_BRACE : CLOSE_BRACKET)) {
        depth--
        i = skipSpace(text, i + 1)
        if (depth === 0) return i === n ? (closer ? Scanned.Closer : Scanned.Plain) : Scanned.Invalid
        c = text.charCodeAt(i)
        continue
      }
      if (c !== COMMA) return Scanned.Invalid
      i++
      if (object) {
        i = key(text, skipSpace(text, i), depth === 1)
        if (i < 0) return Scanned.Invalid
      }
      break
    }
  }
}

/**
 * Reads a key and its colon at `i`: the index of its value (after whitespace), or -1 when it is not a
 * key. Sets {@link closer} when `top` and the key is one to look at, or is written with escapes.
 */
const key = (text: string, i: number, top: boolean): number => {
  if (text.charCodeAt(i) !== QUOTE) return -1
  const end = skipString(text, i)
  if (end < 0) return -1
  const colon = skipSpace(text, end)
  if (text.charCodeAt(colon) !== COLON) return -1
  const at = skipSpace(text, colon + 1)
  if (top && (escaped || worthACloserLook(text, i + 1, end - 1, text.charCodeAt(at)))) closer = true
  return at
}
