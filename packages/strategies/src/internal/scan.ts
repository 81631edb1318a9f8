/** The scan the scoring strategies share: the candidate with the best score, ties broken fairly. */
import type { Strategy, Topology } from "@sluice/core"

/**
 * Pools of at most this many candidates have every score recorded in the decision; larger ones the
 * chosen candidate's and the runner-up's (a decision of 10,000 scores would help nobody).
 */
export const RECORDED = 8

/**
 * A candidate's score for a selection, with what the pick computed once for all candidates
 * (`context`); module-level functions, so a scan allocates no closure.
 */
export type Score<C = undefined> = (upstream: Topology.Upstream, selection: Strategy.Selection, context: C) => number

const scratch = new Float64Array(RECORDED)

/**
 * The candidate with the lowest score (`sign` -1: the highest), with the scores that chose it. A NaN
 * score counts as the worst. Ties are broken uniformly at random with `selection.random` (reservoir
 * sampling: one draw per tie met, none without ties), so no candidate is favoured by its place in the
 * config. One pass, no allocation per candidate.
 */
export const best = <C = undefined>(
  selection: Strategy.Selection,
  score: Score<C>,
  sign: 1 | -1 = 1,
  context?: C
): Strategy.Scored => {
  const { candidates } = selection
  const n = candidates.length
  const small = n <= RECORDED
  let chosen = 0
  let chosenScore = Number.NaN
  let chosenKey = Number.POSITIVE_INFINITY
  let ties = 1
  let second = -1
  let secondScore = Number.NaN
  let secondKey = Number.POSITIVE_INFINITY
  for (let i = 0; i < n; i++) {
    const raw = score(candidates[i]!, selection, context as C)
    if (small) scratch[i] = raw
    const key = Number.isNaN(raw) ? Number.POSITIVE_INFINITY : sign * raw
    const better = i === 0 || key < chosenKey
    if (better || (key === chosenKey && selection.random() * ++ties < 1)) {
      if (better) ties = 1
      if (i > 0) {
        second = chosen
        secondScore = chosenScore
        secondKey = chosenKey
      }
      chosen = i
      chosenScore = raw
      chosenKey = key
    } else if (second < 0 || key < secondKey) {
      second = i
      secondScore = raw
      secondKey = key
    }
  }
  const scores: Record<string, number> = {}
  if (small) for (let i = 0; i < n; i++) scores[candidates[i]!.id] = scratch[i]!
  else {
    scores[candidates[chosen]!.id] = chosenScore
    if (second >= 0) scores[candidates[second]!.id] = secondScore
  }
  return { upstream: candidates[chosen]!, scores }
}
