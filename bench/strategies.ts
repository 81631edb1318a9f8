/**
 * Strategies in the lab, the full matrix: `npm run bench:strategies`.
 *
 * Every strategy the strategies package knows, in each of the lab's scenarios (a) to (e) for the
 * scenario's own length (an hour of traffic for most, 20 minutes of tenfold overload for (d)), and
 * hedged in (a) and (b) — in the lab's virtual time, so the hours take minutes and the same seed
 * gives the same table. See `LabScenarios` in `@sluice/providers` for what each column means.
 *
 * Environment (optional): BENCH_SEED=1, the seed of every run; BENCH_MINUTES, to shorten every
 * scenario to that many minutes. Prints one Markdown table per scenario; writes nothing.
 */
import { Effect } from "effect"
import { LabScenarios } from "../packages/providers/src/index.js"
import { Strategies } from "../packages/strategies/src/index.js"

const numberFrom = (name: string): number | undefined => {
  const raw = process.env[name]
  if (raw === undefined || raw === "") return undefined
  const value = Number(raw)
  if (!(value > 0)) throw new Error(`${name}: expected a positive number, got '${raw}'`)
  return value
}

const started = Date.now()
const rows = await Effect.runPromise(
  LabScenarios.matrix({
    strategies: Strategies.names,
    layer: Strategies.layer(),
    seed: numberFrom("BENCH_SEED") ?? 1,
    minutes: numberFrom("BENCH_MINUTES"),
    onRow: (row) =>
      process.stderr.write(
        `(${row.scenario}) ${row.strategy}${row.hedge === undefined ? "" : " +hedge"}: ${row.offered} requests, ${((Date.now() - started) / 1000).toFixed(0)} s\n`
      )
  })
)
console.log(`Sluice strategies in the lab (${((Date.now() - started) / 1000).toFixed(0)} s)\n`)
console.log(LabScenarios.table(rows))
console.log(LabScenarios.hedgeTable(rows))
