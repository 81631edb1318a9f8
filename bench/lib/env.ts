/** Bench settings from the environment. */

/** A positive number from the variable `name`, `fallback` when unset; anything else is an error. */
export const positive = (name: string, fallback: number): number => {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === "") return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name}: expected a positive number, got '${raw}'`)
  return value
}

/** The non-streaming closed loop's settings: measured and warm-up seconds, and connections. */
export const closedLoopSettings = () => ({
  seconds: positive("BENCH_SECONDS", 5),
  warmupSeconds: positive("BENCH_WARMUP_SECONDS", 1),
  connections: Math.round(positive("BENCH_CONNECTIONS", 50))
})
