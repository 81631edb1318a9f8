/**
 * Live: what a strategy can read of each candidate now — requests in flight, the tokens they
 * reserved, decayed latency (whole answers; apart from that, streams' time to first content; per
 * output token), a recent error rate, the share of its RPM / TPM budgets left, its price and its
 * quality score.
 *
 * Nothing is computed until a strategy asks, one candidate and one figure at a time, so a strategy
 * that reads nothing (round robin) pays nothing, and reading allocates nothing but
 * {@link View.candidate}. The state behind it lives in the {@link StateStore} (`load:<upstream>`,
 * `latency:<kind>:<upstream>`, the rate limiter's `rl:<upstream>`), as small JSON records that a
 * shared store can carry between instances. The Attempt stage counts attempts in flight at admission
 * and gives them back exactly once when they finish (a stream when it ends); latencies are taken when
 * an attempt serves; the error rate and output tokens when it finishes. Attempts are counted only in
 * pipelines whose strategy reads the live load (see `Strategy.Service.live`).
 */
import type { Outcome } from "./Guard.js"
import * as Latency from "./internal/latency.js"
import * as Load from "./internal/load.js"
import { shareLeft } from "./RateLimiter.js"
import type { Local } from "./StateStore.js"
import type { Upstream } from "./Topology.js"

/** A decayed average of milliseconds; see {@link View.latency}. */
export type Decayed = Latency.Decayed

/** Which latency: `answer`, `first-content` (streams), `per-output-token`. */
export type LatencyKind = Latency.Kind

/** After this long, an old average (latency, error rate, output tokens) weighs half of what it did. */
export const HALF_LIFE_MS = Latency.HALF_LIFE_MS

/** Everything known of one candidate now (see {@link View.candidate}). */
export interface Candidate {
  readonly upstream: string
  readonly inFlight: number
  readonly reservedTokens: number
  readonly latency: Decayed | undefined
  readonly firstContent: Decayed | undefined
  readonly perOutputToken: Decayed | undefined
  readonly errorRate: number
  readonly outputTokens: number | undefined
  readonly budgetLeft: number
  readonly pricing: Upstream["pricing"]
  readonly quality: number | undefined
}

/** The live state of candidates, read when asked. Valid during the `select` call it was handed to. */
export interface View {
  /** Attempts admitted on `upstream` and not yet finished (a stream until it ends). */
  readonly inFlight: (upstream: Upstream) => number
  /** Tokens the attempts in flight on `upstream` reserved: prompt + reserved completion. */
  readonly reservedTokens: (upstream: Upstream) => number
  /**
   * The decayed average of `kind`: the time to a whole `answer`, a stream's time to its
   * `first-content`, or the time `per-output-token` of successful attempts; undefined before the
   * first sample. Its `at` tells how old it is, its `peak` the worst recent
   * sample.
   */
  readonly latency: (upstream: Upstream, kind: LatencyKind) => Decayed | undefined
  /**
   * The decayed share (0 to 1) of recent attempts `upstream` failed on its side (5xx, 429, timeouts,
   * connections); it fades while the upstream takes no traffic.
   */
  readonly errorRate: (upstream: Upstream) => number
  /** The decayed mean of the output tokens of `upstream`'s answers; undefined before one reported usage. */
  readonly outputTokens: (upstream: Upstream) => number | undefined
  /**
   * The share (0 to 1) of `upstream`'s RPM / TPM budgets left now, the smaller of the two (and of
   * what the upstream reported remaining); 0 while it is held back by a 429; 1 without limits.
   */
  readonly budgetLeft: (upstream: Upstream) => number
  /** All of the above for one candidate, with its price and quality, as one record (allocates). */
  readonly candidate: (upstream: Upstream) => Candidate
}

/** A {@link View} at a moment the caller moves: set `now` before handing it to a strategy. */
export interface Reader extends View {
  /** Epoch milliseconds the decayed figures and budgets are read at. */
  now: number
}

/** A reader of the live state in `local`, at `now`. */
export const make = (local: Local, now = 0): Reader => {
  const reader: Reader = {
    now,
    inFlight: (upstream) => Load.read(local, upstream.id)?.inFlight ?? 0,
    reservedTokens: (upstream) => Load.read(local, upstream.id)?.tokens ?? 0,
    latency: (upstream, kind) => Latency.read(local, kind, upstream.id),
    errorRate: (upstream) => {
      const load = Load.read(local, upstream.id)
      return load === undefined ? 0 : Load.errorRateAt(load, reader.now)
    },
    outputTokens: (upstream) => {
      const load = Load.read(local, upstream.id)
      return load === undefined || load.outputs === 0 ? undefined : load.output
    },
    budgetLeft: (upstream) => shareLeft(local, upstream, reader.now),
    candidate: (upstream) => ({
      upstream: upstream.id,
      inFlight: reader.inFlight(upstream),
      reservedTokens: reader.reservedTokens(upstream),
      latency: reader.latency(upstream, "answer"),
      firstContent: reader.latency(upstream, "first-content"),
      perOutputToken: reader.latency(upstream, "per-output-token"),
      errorRate: reader.errorRate(upstream),
      outputTokens: reader.outputTokens(upstream),
      budgetLeft: reader.budgetLeft(upstream),
      pricing: upstream.pricing,
      quality: upstream.quality
    })
  }
  return reader
}

/**
 * Counts an attempt admitted on `upstreamId` reserving `tokens`, as the Attempt stage does (for
 * tests, simulations and tools that drive a strategy without a router).
 */
export const started = (local: Local, upstreamId: string, tokens: number): void =>
  Load.started(local, upstreamId, tokens)

/**
 * Gives back what {@link started} counted, and learns from how the attempt ended at `now`, as the
 * Attempt stage does when an attempt finishes.
 */
export const finished = (local: Local, upstreamId: string, tokens: number, outcome: Outcome, now: number): void =>
  Load.finished(local, upstreamId, tokens, outcome, now)

/** Records a latency sample of `ms` at `now`, as the Attempt stage does when an attempt serves. */
export const recordLatency = (local: Local, kind: LatencyKind, upstreamId: string, ms: number, now: number): void =>
  Latency.record(local, kind, upstreamId, ms, now)
