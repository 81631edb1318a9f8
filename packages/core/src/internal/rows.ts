/** Small helpers for the guards' pure reducers, which copy their state instead of changing it. */

/** A copy of `rows` with its last row replaced: one new array, not a slice and a spread. */
export const withLast = <R>(rows: ReadonlyArray<R>, last: R): ReadonlyArray<R> => {
  const copy = rows.slice()
  copy[copy.length - 1] = last
  return copy
}

/** A copy of `rows` with row `at` replaced. */
export const withRow = <R>(rows: ReadonlyArray<R>, at: number, row: R): ReadonlyArray<R> => {
  const copy = rows.slice()
  copy[at] = row
  return copy
}

/** A copy of `rows` without row `at`. */
export const withoutRow = <R>(rows: ReadonlyArray<R>, at: number): ReadonlyArray<R> => {
  const copy = rows.slice()
  copy.splice(at, 1)
  return copy
}
