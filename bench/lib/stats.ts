/** Latency summaries: nearest-rank percentiles over a list of milliseconds. */

export interface Summary {
  readonly count: number
  readonly min: number
  readonly mean: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
}

const nearestRank = (sorted: Float64Array, q: number): number => {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.max(1, Math.ceil(q * sorted.length))
  return sorted[Math.min(sorted.length, rank) - 1] ?? Number.NaN
}

/** Summarises samples in milliseconds (NaN everywhere when there are none). */
export const summarize = (samples: ReadonlyArray<number>): Summary => {
  const sorted = Float64Array.from(samples).sort()
  let sum = 0
  for (const x of sorted) sum += x
  return {
    count: sorted.length,
    min: sorted[0] ?? Number.NaN,
    mean: sorted.length === 0 ? Number.NaN : sum / sorted.length,
    p50: nearestRank(sorted, 0.5),
    p90: nearestRank(sorted, 0.9),
    p99: nearestRank(sorted, 0.99),
    max: sorted[sorted.length - 1] ?? Number.NaN
  }
}

/** Rounds for JSON output (keeps NaN out of the file: null instead). */
export const round = (x: number, digits = 3): number | null => {
  if (!Number.isFinite(x)) return null
  const f = 10 ** digits
  return Math.round(x * f) / f
}

/** Fixed-width number for tables; "-" when not finite. */
export const fmt = (x: number | undefined, digits = 3): string =>
  x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(digits)

/** A signed difference, e.g. "+0.412". */
export const signed = (x: number, digits = 3): string =>
  !Number.isFinite(x) ? "-" : (x >= 0 ? "+" : "") + x.toFixed(digits)

/** Renders rows as a plain text table with right-aligned columns (the first one left-aligned). */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join("  ")
  const rule = widths.map((w) => "-".repeat(w)).join("  ")
  return [line(header), rule, ...rows.map(line)].join("\n")
}
