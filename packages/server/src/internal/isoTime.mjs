/**
 * Epoch milliseconds as ISO 8601 text (`Date.prototype.toISOString`'s), for the lines the gateway
 * writes per request (the access log, the audit log). Most of a busy second's lines share their
 * second: its text is made once and the milliseconds appended, instead of a `Date` and its
 * formatting per line.
 *
 * Plain JavaScript on purpose: the audit file's writer thread (`auditWorker.mjs`) loads it with
 * Node's own loader, outside tsx and vitest transforms.
 */

/** The furthest `Date` reaches either side of 1970, in ms. */
export const MAX = 8.64e15

/** The second (epoch seconds) whose text `prefix` holds. */
let second = Number.NaN
/** `YYYY-MM-DDTHH:MM:SS.` of `second`. */
let prefix = ""

/**
 * `new Date(ms).toISOString()`, the same text (and the same `RangeError` for a time that is not one).
 * @param {number} ms
 * @returns {string}
 */
export const isoTime = (ms) => {
  // Fractions, and times past `Date`'s range (which throw), go `Date`'s way.
  if (!Number.isInteger(ms) || ms > MAX || ms < -MAX) return new Date(ms).toISOString()
  const s = Math.floor(ms / 1000)
  if (s !== second) {
    prefix = new Date(s * 1000).toISOString().slice(0, -4)
    second = s
  }
  const milli = ms - s * 1000
  return `${prefix}${milli < 10 ? "00" : milli < 100 ? "0" : ""}${milli}Z`
}
