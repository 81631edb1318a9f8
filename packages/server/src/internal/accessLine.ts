/**
 * The JSON access line of a request (the `info` line `Logging.accessLog` writes per request), made
 * straight from its decision. Here rather than in `Logging` because the audit file sink makes it too,
 * for the requests whose access line its writer thread writes (see `audit.ts`).
 */
import type { Decision } from "@sluice/core"
import { isoTime } from "./isoTime.mjs"

/**
 * Printable ASCII but `"` and `\`: a string of only these is its own JSON text between quotes. The
 * ids, names and outcomes of an access line are; testing that costs less than `JSON.stringify`
 * setting up its writer for each of them.
 */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/

/** Whether every string of the line {@link jsonAccessLine} is making went plain: the line is then ASCII. */
let linePlain = true

/** A string's JSON text (as `JSON.stringify` writes it). */
const jsonString = (text: string): string => {
  if (PLAIN.test(text)) return `"${text}"`
  linePlain = false
  return JSON.stringify(text)
}

/** A string's JSON text, `null` for none. */
const jsonText = (text: string | undefined): string => (text === undefined ? "null" : jsonString(text))

/** A number's JSON text (`null` for none, and for NaN and the infinities, as `JSON.stringify` writes them). */
const jsonNumber = (n: number | undefined): string => (n !== undefined && Number.isFinite(n) ? `${n}` : "null")

/**
 * The JSON access line of a request answered at `ms` (epoch ms): the text `Logging.accessLine` makes
 * of `Logging.accessFields`, written straight from the decision — without the record and a
 * `JSON.stringify` walking it (`JsonLogger.test.ts` checks that the two agree).
 * {@link lastAccessLineAscii} tells right after whether it is all ASCII.
 */
export const jsonAccessLine = (d: Decision.Decision, key: string | undefined, status: number, ms: number): string => {
  linePlain = true
  return (
    `{"message":{"msg":"request","requestId":${jsonString(d.requestId)},"operation":${jsonString(d.operation)},` +
    `"stream":${d.stream},"pool":${jsonString(d.pool)},` +
    `"upstream":${jsonText(d.upstream ?? d.attempts[d.attempts.length - 1]?.upstream)},"key":${jsonText(key)},` +
    `"status":${jsonNumber(status)},"outcome":${jsonString(d.outcome)},"attempts":${d.attempts.length},` +
    `"durationMs":${jsonNumber(d.durationMs)},"queueWaitMs":${jsonNumber(d.queueWaitMs)},` +
    `"inputTokens":${jsonNumber(d.inputTokens)},"outputTokens":${jsonNumber(d.outputTokens)}` +
    (d.firstChunkMs === undefined ? "" : `,"firstChunkMs":${jsonNumber(d.firstChunkMs)}`) +
    (d.error === undefined ? "" : `,"error":${jsonString(d.error)}`) +
    `},"logLevel":"INFO","timestamp":"${isoTime(ms)}","annotations":{},"spans":{},"fiberId":""}`
  )
}

/**
 * Whether the line {@link jsonAccessLine} made last is all ASCII: its bytes are then its characters
 * (Latin-1), which are quicker to write than UTF-8.
 */
export const lastAccessLineAscii = (): boolean => linePlain
