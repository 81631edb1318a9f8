/**
 * The load of each upstream as the Attempt stage counts it: attempts in flight and the tokens they
 * reserved (counted at admission, given back exactly once when the attempt finishes: a stream when it
 * ends), and, from how attempts finish, a decayed error rate and a decayed mean of the output tokens
 * answers had. One small JSON record per upstream in the state store (`load:<upstream>`), changed by
 * pure reducers, so a shared store can carry it as it carries the guards' state.
 */
import type { Outcome } from "../Guard.js"
import type { Local } from "../StateStore.js"
import { keyCache } from "./keys.js"
import { HALF_LIFE_MS } from "./latency.js"

/** One upstream's load. */
export interface Load {
  /** Attempts admitted and not yet finished. */
  readonly inFlight: number
  /** Tokens those attempts reserved (prompt + reserved completion). */
  readonly tokens: number
  /**
   * Decayed share of recent attempts the upstream failed (0 to 1), as of `at`: it starts at 0, and
   * each attempt moves it at least 10% of the way toward 1 (a failure) or 0 (a success).
   */
  readonly errors: number
  /** Decayed mean of the output tokens of its successful attempts that reported usage (0 before one). */
  readonly output: number
  /** Successful attempts averaged into `output`. */
  readonly outputs: number
  /** When (epoch ms) `errors` and `output` last took a sample; 0 before the first. */
  readonly at: number
}

/** The most an old average keeps against a new sample, however soon after it comes (as latencies). */
const MAX_KEPT = 0.9

const IDLE: Load = { inFlight: 0, tokens: 0, errors: 0, output: 0, outputs: 0, at: 0 }

/** The state-store key of an upstream's load. */
export const keyOf = keyCache("load:")

/** How much an average taken at `at` keeps against a sample at `now`. */
const keptAt = (at: number, now: number): number =>
  Math.min(MAX_KEPT, Math.pow(0.5, Math.max(0, now - at) / HALF_LIFE_MS))

/**
 * The error sample of an outcome: 1 for a failure on the upstream's side (retryable: 5xx, 429,
 * timeouts, connections), 0 for a success, none for a failure the request caused or an attempt that
 * never ended on its own.
 */
const errorSample = (outcome: Outcome): number | undefined =>
  outcome._tag === "Success" ? 0 : outcome._tag === "Failure" && outcome.error.retryable ? 1 : undefined

/** Counts an admitted attempt reserving `tokens`. Synchronous: one state update. */
export const started = (local: Local, upstreamId: string, tokens: number): void =>
  local.modify<Load, void>(keyOf(upstreamId), (current) => {
    const load = current ?? IDLE
    return [
      undefined,
      {
        inFlight: load.inFlight + 1,
        tokens: load.tokens + tokens,
        errors: load.errors,
        output: load.output,
        outputs: load.outputs,
        at: load.at
      }
    ]
  })

/** The load after an attempt reserving `tokens` finished with `outcome` at `now`. */
export const afterFinish = (current: Load | undefined, tokens: number, outcome: Outcome, now: number): Load => {
  const load = current ?? IDLE
  const error = errorSample(outcome)
  if (error === undefined) {
    return { ...load, inFlight: Math.max(0, load.inFlight - 1), tokens: Math.max(0, load.tokens - tokens) }
  }
  // The first sample blends with the optimistic start (no errors) as one that came at once would.
  const kept = load.at === 0 ? MAX_KEPT : keptAt(load.at, now)
  const outputTokens = outcome._tag === "Success" ? outcome.outputTokens : undefined
  return {
    inFlight: Math.max(0, load.inFlight - 1),
    tokens: Math.max(0, load.tokens - tokens),
    errors: kept * load.errors + (1 - kept) * error,
    output:
      outputTokens === undefined
        ? load.output
        : load.outputs === 0
          ? outputTokens
          : kept * load.output + (1 - kept) * outputTokens,
    outputs: outputTokens === undefined ? load.outputs : load.outputs + 1,
    at: now
  }
}

/** Gives back what an attempt reserving `tokens` held, and learns from its outcome. Synchronous. */
export const finished = (local: Local, upstreamId: string, tokens: number, outcome: Outcome, now: number): void =>
  local.modify<Load, void>(keyOf(upstreamId), (current) => [undefined, afterFinish(current, tokens, outcome, now)])

/** An upstream's load as last stored (undefined before its first attempt). Allocates nothing. */
export const read = (local: Local, upstreamId: string): Load | undefined => local.peek<Load>(keyOf(upstreamId))

/** The decayed error rate of `load` at `now`: it fades while the upstream takes no traffic. */
export const errorRateAt = (load: Load, now: number): number =>
  load.errors === 0 ? 0 : load.errors * Math.pow(0.5, Math.max(0, now - load.at) / HALF_LIFE_MS)
