/** Bench settings from the environment. */

/** A positive number from the variable `name`, `fallback` when unset; anything else is an error. */
export const positive = (name: string, fallback: number): number => {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === "") return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name}: expected a positive number, got '${raw}'`)
  return value
}

/**
 * The non-streaming closed loop's settings: measured and warm-up seconds (5 and 1 unless a bench
 * says otherwise), and connections.
 */
export const closedLoopSettings = (
  defaults: { readonly seconds: number; readonly warmupSeconds: number } = { seconds: 5, warmupSeconds: 1 }
) => ({
  seconds: positive("BENCH_SECONDS", defaults.seconds),
  warmupSeconds: positive("BENCH_WARMUP_SECONDS", defaults.warmupSeconds),
  connections: Math.round(positive("BENCH_CONNECTIONS", 50))
})
