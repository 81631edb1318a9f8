/**
 * Attempt: the stage that runs one attempt on the chosen upstream — admits it through every guard
 * (reserving atomically; a later guard's refusal rolls back the earlier ones), runs the provider call
 * under the upstream's deadline, and finishes the attempt exactly once: the outcome goes to every
 * guard's release, to the decision and to the attempt's span. Admission and finishing are
 * synchronous; only the call is an effect.
 */
import type { Tracer } from "effect"
import { Effect, Exit, FiberId, Option, Cause } from "effect"
import type { AttemptRecord } from "./Decision.js"
import { scoreList } from "./Decision.js"
import { Failure } from "./Errors.js"
import type { Exclusion, UpstreamError } from "./Errors.js"
import type { Attempt, Guard, Outcome, Release } from "./Guard.js"
import { liveClock, within } from "./internal/deadline.js"
import * as Latency from "./internal/latency.js"
import * as Load from "./internal/load.js"
import type { Request } from "./internal/request.js"
import type { Answer, Service as ProviderService } from "./Provider.js"
import { bindSession } from "./Select.js"
import type * as StateStore from "./StateStore.js"
import type { Upstream } from "./Topology.js"
import type { Usage } from "./Wire.js"

/** An attempt every guard admitted: finish it exactly once with {@link Service.finish}. */
export interface Admitted {
  readonly attempt: Attempt
  readonly releases: ReadonlyArray<Release>
  /** Epoch milliseconds when it was admitted. */
  readonly startedAt: number
  /** The attempt's span, when spans are exported; it ends when the attempt finishes. */
  span: Tracer.Span | undefined
  finished: boolean
}

/**
 * The provider call of an attempt: on `upstream`, for its `model`, whether spans are exported, and the
 * completion tokens reserved (the request's `max_tokens`, else its pool's default).
 */
export type Call<A> = (
  upstream: Upstream,
  model: string,
  traced: boolean,
  maxTokens: number
) => Effect.Effect<Answer<A>, UpstreamError>

/** The stage. */
export interface Service {
  /** Admits `attempt` through every guard, or returns the refusal (nothing stays reserved). Synchronous. */
  readonly admit: (request: Request, attempt: Attempt) => Admitted | Exclusion
  /**
   * Runs `call` for an admitted attempt under the upstream's deadline and finishes the attempt with
   * how it ended (usage from `usageOf` on success). `call` is told the completion tokens reserved for
   * the attempt (the request's `max_tokens`, else its pool's default). The effects the guards left
   * run afterwards.
   */
  readonly call: <A>(
    request: Request,
    admitted: Admitted,
    call: Call<A>,
    usageOf: (value: A) => Usage | undefined
  ) => Effect.Effect<Answer<A>, UpstreamError>
  /**
   * Finishes an attempt: records it in the decision, hands the outcome to every guard's release and
   * ends its span. Later calls do nothing (a stream's end and an interruption may both try).
   * Synchronous: run `request.flush()` afterwards.
   */
  readonly finish: (request: Request, admitted: Admitted, outcome: Outcome) => void
  /**
   * Records that the admitted upstream serves the request: the decision names it, its provider and the
   * `model` it answered with (also on the attempt's span), a pool that keeps sessions binds the
   * request's session to it, and the upstream's decayed latency of this `kind` takes the time since
   * admission (`request.now` is read as the moment). Synchronous; `call` does it on success, a stream
   * when its first content arrives.
   */
  readonly served: (request: Request, admitted: Admitted, kind: Latency.Kind, model?: string) => void
}

const NOT_SENT: Outcome = { _tag: "NotSent", latencyMs: 0 }

const NO_RELEASES: ReadonlyArray<Release> = []

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

/** The outcome of an attempt that answered. */
const succeeded = <A>(answer: Answer<A>, latencyMs: number, usageOf: (value: A) => Usage | undefined): Outcome => {
  const usage = usageOf(answer.value)
  return {
    _tag: "Success",
    latencyMs,
    inputTokens: usage?.prompt_tokens,
    outputTokens: usage?.completion_tokens,
    rateLimits: answer.rateLimits
  }
}

/** The `model` an answer names (chat completions and embeddings both carry one), if it is text. */
const modelOf = (value: unknown): string | undefined => {
  const model = typeof value === "object" && value !== null ? (value as { model?: unknown }).model : undefined
  return typeof model === "string" ? model : undefined
}

/** The outcome of an attempt that ended with `cause`: its failure, else an interruption (or a defect). */
export const failedWith = (cause: Cause.Cause<UpstreamError>, latencyMs: number): Outcome => {
  const failure = Cause.failureOption(cause)
  return Option.isSome(failure)
    ? { _tag: "Failure", latencyMs, error: failure.value, rateLimits: failure.value.rateLimits }
    : { _tag: "Interrupted", latencyMs }
}

/**
 * Hands `outcome` to every release, even when one throws (a guard's bug must not keep the other
 * guards' reservations); returns the first error thrown, for the caller to rethrow once done.
 */
const releaseAll = (
  releases: ReadonlyArray<Release>,
  outcome: Outcome,
  step: Request
): { readonly error: unknown } | undefined => {
  let bug: { readonly error: unknown } | undefined
  for (const release of releases) {
    try {
      release(outcome, step)
    } catch (error) {
      bug ??= { error }
    }
  }
  return bug
}

/** An outcome as the exit its span ends with. */
const exitOf = (outcome: Outcome): Exit.Exit<void, UpstreamError> =>
  outcome._tag === "Failure"
    ? Exit.fail(outcome.error)
    : outcome._tag === "Success"
      ? Exit.void
      : Exit.interrupt(FiberId.none)

/** The tokens an attempt reserves: its prompt and its reserved completion. */
const reservedBy = (attempt: Attempt): number => attempt.promptTokens + attempt.reservedOutputTokens

/**
 * Makes the stage over the pipeline's guards and provider. With `counting` (the strategy reads the
 * live load; see `Strategy.Service.live`), every admitted attempt is counted in flight on its upstream
 * until it finishes, and its outcome goes into the upstream's error rate and output tokens.
 */
export const make = (
  guards: ReadonlyArray<Guard>,
  provider: ProviderService,
  local: StateStore.Local,
  counting = true
): Service => {
  const admit = (request: Request, attempt: Attempt): Admitted | Exclusion => {
    let releases: Array<Release> | undefined
    for (let i = 0; i < guards.length; i++) {
      let admitted: Release | Exclusion
      try {
        admitted = guards[i]!.admit(attempt, request)
      } catch (bug) {
        // A guard's bug must not keep what the guards before it reserved.
        if (releases !== undefined) releaseAll(releases, NOT_SENT, request)
        throw bug
      }
      if (typeof admitted !== "function") {
        if (releases !== undefined) releaseAll(releases, NOT_SENT, request)
        return admitted
      }
      ;(releases ??= []).push(admitted)
    }
    request.attempts++
    request.pass.attempts++
    if (counting) Load.started(local, attempt.upstream.id, reservedBy(attempt))
    return { attempt, releases: releases ?? NO_RELEASES, startedAt: request.now, span: undefined, finished: false }
  }

  /** Gives back the attempt's count and learns from its outcome, at the moment it ended. */
  const counted = (attempt: Attempt, startedAt: number, outcome: Outcome): void => {
    const endedAt = startedAt + outcome.latencyMs
    Load.finished(local, attempt.upstream.id, reservedBy(attempt), outcome, endedAt)
    if (outcome._tag === "Success" && outcome.outputTokens !== undefined && outcome.outputTokens > 0)
      Latency.record(local, "per-output-token", attempt.upstream.id, outcome.latencyMs / outcome.outputTokens, endedAt)
  }

  const finish = (request: Request, admitted: Admitted, outcome: Outcome): void => {
    if (admitted.finished) return
    admitted.finished = true
    const { attempt } = admitted
    const record: Mutable<AttemptRecord> = {
      attempt: attempt.attempt,
      pool: attempt.pool.id,
      upstream: attempt.upstream.id,
      outcome: outcome._tag === "Success" ? "success" : outcome._tag === "Failure" ? "failure" : "interrupted",
      latencyMs: outcome.latencyMs
    }
    if (outcome._tag === "Failure") {
      if (outcome.error.status !== undefined) record.status = outcome.error.status
      record.error = outcome.error.message
    }
    if (attempt.scores !== undefined) record.scores = attempt.scores
    request.decision.attempts.push(record)
    if (outcome._tag === "Success") {
      request.decision.inputTokens = outcome.inputTokens
      request.decision.outputTokens = outcome.outputTokens
    }
    if (counting) counted(attempt, admitted.startedAt, outcome)
    const bug = releaseAll(admitted.releases, outcome, request)
    const span = admitted.span
    if (span !== undefined) {
      span.attribute("sluice.attempt.outcome", outcome._tag === "NotSent" ? "interrupted" : outcome._tag.toLowerCase())
      span.attribute("sluice.attempt.latency_ms", outcome.latencyMs)
      if (outcome._tag === "Failure" && outcome.error.status !== undefined) {
        span.attribute("http.response.status_code", outcome.error.status)
      }
      span.end(request.clock.unsafeCurrentTimeNanos(), exitOf(outcome))
    }
    if (bug !== undefined) throw bug.error
  }

  /** The deadline of a whole answer: the provider's own where it keeps one on the live clock, else the router's. */
  const deadline = <A>(request: Request, upstream: Upstream, effect: Effect.Effect<A, UpstreamError>) =>
    request.clock === liveClock && provider.enforcesTimeout?.(upstream) === true
      ? effect
      : within(request.clock, upstream.timeoutMs, () =>
          Failure.timeout(upstream.id, `no response within ${upstream.timeoutMs} ms`)
        )(effect)

  const call: Service["call"] = (request, admitted, run, usageOf) => {
    const upstream = admitted.attempt.upstream
    const traced = request.span !== undefined
    // The route is uninterruptible (see `Request.restore`): only the call itself may be interrupted,
    // and these handlers finish the attempt however it ends. Built lazily, so a provider that throws
    // fails this attempt instead of escaping it.
    const calling = request.restore(
      Effect.suspend(() =>
        deadline(
          request,
          upstream,
          run(upstream, upstream.model ?? request.match.model, traced, admitted.attempt.reservedOutputTokens)
        )
      )
    )
    const effect = Effect.matchCauseEffect(calling, {
      onSuccess: (answer) => {
        request.tick()
        served(request, admitted, "answer", modelOf(answer.value))
        finish(request, admitted, succeeded(answer, Math.max(0, request.now - admitted.startedAt), usageOf))
        // A transition's span event belongs on the route span, not on the attempt span just ended.
        const after = traced ? Effect.void : request.flush()
        return after === Effect.void ? Effect.succeed(answer) : Effect.as(after, answer)
      },
      onFailure: (cause) => {
        request.tick()
        finish(request, admitted, failedWith(cause, Math.max(0, request.now - admitted.startedAt)))
        return traced ? Effect.failCause(cause) : Effect.zipRight(request.flush(), Effect.failCause(cause))
      }
    })
    return traced
      ? Effect.ensuring(
          inAttemptSpan(request, admitted, effect),
          Effect.suspend(() => request.flush())
        )
      : effect
  }

  const served = (request: Request, admitted: Admitted, kind: Latency.Kind, model?: string): void => {
    Latency.record(
      local,
      kind,
      admitted.attempt.upstream.id,
      Math.max(0, request.now - admitted.startedAt),
      request.now
    )
    request.decision.upstream = admitted.attempt.upstream.id
    request.decision.provider = admitted.attempt.upstream.provider
    // The scores that chose what served: after a hedge, a later selection (the hedge's) may not be it.
    request.decision.scores = admitted.attempt.scores
    if (model !== undefined) {
      request.decision.responseModel = model
      admitted.span?.attribute("gen_ai.response.model", model)
    }
    bindSession(local, request, admitted.attempt)
  }

  return { admit, call, finish, served }
}

/** Runs `effect` in the attempt's `sluice.attempt` span (which `finish` ends). */
export const inAttemptSpan = <A, E, R>(
  request: Request,
  admitted: Admitted,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> => {
  const { attempt } = admitted
  return Effect.flatMap(
    Effect.makeSpan("sluice.attempt", {
      attributes: {
        "sluice.attempt": attempt.attempt,
        "sluice.pool": attempt.pool.id,
        "sluice.upstream": attempt.upstream.id,
        "gen_ai.provider.name": attempt.upstream.provider,
        "gen_ai.request.model": attempt.upstream.model ?? request.match.model
      },
      captureStackTrace: false
    }),
    (span) => {
      if (attempt.scores !== undefined) span.attribute("sluice.strategy.scores", scoreList(attempt.scores))
      admitted.span = span
      return Effect.withParentSpan(effect, span)
    }
  )
}
