import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, TestClock } from "effect"
import type { Provider, Wire } from "../src/index.js"
import { Errors, Router, Strategy, Topology } from "../src/index.js"
import {
  PROMPT_TOKENS,
  answer as answerOf,
  attemptsOf,
  chatRequest,
  completion,
  guardLog,
  guards,
  httpError,
  preferring,
  provider,
  recordingGuard,
  routerLayer,
  upstream
} from "./fixtures.js"

/** What the stub provider received: the upstream and the call (the client's request, the upstream's model). */
interface ChatCall {
  readonly upstream: string
  readonly call: Provider.Call<Wire.ChatCompletionRequest>
}

/** A provider whose chat answers per upstream id, recording the calls it received. */
const chatBy = (
  answers: Record<
    string,
    (call: Provider.Call<Wire.ChatCompletionRequest>) => Effect.Effect<Wire.ChatCompletion, Errors.UpstreamError>
  >,
  calls: Array<ChatCall> = []
) =>
  provider({
    chat: (u, call) =>
      Effect.suspend(() => {
        calls.push({ upstream: u.id, call })
        const answer = answers[u.id]
        return answer === undefined ? Effect.dieMessage(`no answer for ${u.id}`) : Effect.map(answer(call), answerOf)
      })
  })

const ok = (id: string) => () => Effect.succeed(completion(id))
const failWith = (id: string, status: number) => () => Effect.fail(httpError(id, status))

describe("Router.chat", () => {
  it.effect(
    "answers from the chosen upstream with a decision: pool, strategy, candidates, upstream, attempt, tokens",
    () => {
      const calls: Array<ChatCall> = []
      const pools = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a"), upstream("b")] })]
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const { decision, response } = yield* router.chat(chatRequest(), { requestId: "req-1" })
        expect(response.choices[0]?.message.content).toBe("answer from a")
        expect(calls.map((c) => c.upstream)).toEqual(["a"])
        expect(decision).toMatchObject({
          requestId: "req-1",
          operation: "chat",
          stream: false,
          model: "gpt-4o",
          pools: ["gpt"],
          pool: "gpt",
          strategy: "first",
          candidates: ["a", "b"],
          excluded: [],
          upstream: "a",
          promptTokens: PROMPT_TOKENS,
          promptTokensExact: false,
          inputTokens: 12,
          outputTokens: 7,
          outcome: "success",
          error: undefined
        })
        expect(attemptsOf(decision)).toEqual([{ attempt: 1, pool: "gpt", upstream: "a", outcome: "success" }])
      }).pipe(Effect.provide(routerLayer(pools, { provider: chatBy({ a: ok("a"), b: ok("b") }, calls) })))
    }
  )

  it.effect("sends the upstream's own model name and never streams a non-streaming call", () => {
    const calls: Array<ChatCall> = []
    const pools = [
      Topology.pool({
        id: "gpt",
        models: ["gpt-4o"],
        upstreams: [upstream("azure", { model: "my-gpt-4o-deployment" })]
      })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      yield* router.chat(chatRequest("gpt-4o", { stream: true, temperature: 0.2 }))
      // The call goes to the provider's `chat` (the stub's `chatStream` would die), which answers
      // whole whatever the client's `stream` flag says: the provider is handed the client's request
      // and the upstream's model name to send.
      expect(calls.map((c) => c.upstream)).toEqual(["azure"])
      expect(calls[0]?.call.model).toBe("my-gpt-4o-deployment")
      expect(calls[0]?.call.request).toMatchObject({ temperature: 0.2 })
    }).pipe(Effect.provide(routerLayer(pools, { provider: chatBy({ azure: ok("azure") }, calls) })))
  })

  it.effect("routes an alias as its target model", () => {
    const calls: Array<ChatCall> = []
    const pools = [
      Topology.pool({
        id: "mini",
        models: ["gpt-4o-mini"],
        aliases: { fast: "gpt-4o-mini" },
        upstreams: [upstream("a")]
      })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const { decision } = yield* router.chat(chatRequest("fast"))
      expect(calls[0]?.call.model).toBe("gpt-4o-mini")
      expect(decision.model).toBe("fast")
      expect(decision.pool).toBe("mini")
    }).pipe(Effect.provide(routerLayer(pools, { provider: chatBy({ a: ok("a") }, calls) })))
  })

  it.effect("fails over to another upstream after a 500 and records both attempts", () => {
    const calls: Array<ChatCall> = []
    const offered: Array<ReadonlyArray<string>> = []
    const pools = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a"), upstream("b")] })]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const { decision, response } = yield* router.chat(chatRequest())
      expect(response.choices[0]?.message.content).toBe("answer from b")
      expect(calls.map((c) => c.upstream)).toEqual(["a", "b"])
      // The strategy wants "a" again, but is only offered what has not been tried.
      expect(offered).toEqual([["a", "b"], ["b"]])
      expect(decision.upstream).toBe("b")
      expect(decision.candidates).toEqual(["a", "b"])
      expect(decision.outcome).toBe("success")
      expect(attemptsOf(decision)).toEqual([
        { attempt: 1, pool: "gpt", upstream: "a", outcome: "failure", status: 500, error: "upstream answered 500" },
        { attempt: 2, pool: "gpt", upstream: "b", outcome: "success" }
      ])
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          provider: chatBy({ a: failWith("a", 500), b: ok("b") }, calls),
          strategy: preferring(["a"], offered)
        })
      )
    )
  })

  it.effect("never calls the same upstream twice and fails with the last upstream's error when all fail", () => {
    const calls: Array<ChatCall> = []
    const pools = [
      Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a"), upstream("b")], maxAttempts: 5 })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* Effect.flip(router.chat(chatRequest()))
      expect(calls.map((c) => c.upstream)).toEqual(["a", "b"])
      expect(error).toBeInstanceOf(Errors.UpstreamError)
      expect(error).toMatchObject({ _tag: "UpstreamError", upstream: "b", status: 503 })
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          provider: chatBy({ a: failWith("a", 500), b: failWith("b", 503) }, calls),
          strategy: preferring(["a"])
        })
      )
    )
  })

  it.effect("stops after the pool's maxAttempts even when untried upstreams remain", () => {
    const calls: Array<ChatCall> = []
    const pools = [
      Topology.pool({
        id: "gpt",
        models: ["gpt-4o"],
        upstreams: [upstream("a"), upstream("b"), upstream("c")],
        maxAttempts: 2
      })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* Effect.flip(router.chat(chatRequest()))
      expect(calls.map((c) => c.upstream)).toEqual(["a", "b"])
      expect(error).toMatchObject({ _tag: "UpstreamError", upstream: "b" })
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          provider: chatBy({ a: failWith("a", 502), b: failWith("b", 502), c: ok("c") }, calls)
        })
      )
    )
  })

  it.effect("fails at once with a non-retryable 400, without trying another upstream", () => {
    const calls: Array<ChatCall> = []
    const pools = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a"), upstream("b")] })]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* Effect.flip(router.chat(chatRequest()))
      expect(error).toMatchObject({ _tag: "UpstreamError", upstream: "a", status: 400, retryable: false })
      expect(calls.map((c) => c.upstream)).toEqual(["a"])
    }).pipe(Effect.provide(routerLayer(pools, { provider: chatBy({ a: failWith("a", 400), b: ok("b") }, calls) })))
  })

  it.effect("moves to the fallback pool when the pool is exhausted and records both pools", () => {
    const calls: Array<ChatCall> = []
    const pools = [
      Topology.pool({ id: "primary", models: ["gpt-4o"], upstreams: [upstream("a")], fallback: "backup" }),
      Topology.pool({ id: "backup", models: ["backup-model"], upstreams: [upstream("b")] })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const { decision, response } = yield* router.chat(chatRequest())
      expect(response.choices[0]?.message.content).toBe("answer from b")
      expect(decision.pools).toEqual(["primary", "backup"])
      expect(decision.pool).toBe("backup")
      expect(decision.upstream).toBe("b")
      expect(attemptsOf(decision)).toEqual([
        { attempt: 1, pool: "primary", upstream: "a", outcome: "failure", status: 503, error: "upstream answered 503" },
        { attempt: 2, pool: "backup", upstream: "b", outcome: "success" }
      ])
      // The fallback pool serves the model the client asked for.
      expect(calls[1]?.call.model).toBe("gpt-4o")
    }).pipe(Effect.provide(routerLayer(pools, { provider: chatBy({ a: failWith("a", 503), b: ok("b") }, calls) })))
  })

  it.effect("moves to the fallback pool when no upstream of the pool is a candidate", () => {
    const pools = [
      Topology.pool({
        id: "primary",
        models: ["gpt-4o"],
        upstreams: [upstream("a", { enabled: false })],
        fallback: "backup"
      }),
      Topology.pool({ id: "backup", models: ["backup-model"], upstreams: [upstream("b")] })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const { decision } = yield* router.chat(chatRequest())
      expect(decision.pools).toEqual(["primary", "backup"])
      expect(decision.candidates).toEqual(["b"])
      expect(decision.excluded).toEqual([{ upstream: "a", stage: "config", reason: "disabled in config" }])
      expect(decision.upstream).toBe("b")
    }).pipe(Effect.provide(routerLayer(pools, { provider: chatBy({ b: ok("b") }) })))
  })

  it.effect("leaves a disabled upstream out of the candidates and records why", () => {
    const calls: Array<ChatCall> = []
    const pools = [
      Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a", { enabled: false }), upstream("b")] })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const { decision } = yield* router.chat(chatRequest())
      expect(calls.map((c) => c.upstream)).toEqual(["b"])
      expect(decision.candidates).toEqual(["b"])
      expect(decision.excluded).toEqual([{ upstream: "a", stage: "config", reason: "disabled in config" }])
    }).pipe(Effect.provide(routerLayer(pools, { provider: chatBy({ b: ok("b") }, calls) })))
  })

  it.effect("offers the strategy only the lowest priority tier that has a candidate", () => {
    const offered: Array<ReadonlyArray<string>> = []
    const pools = [
      Topology.pool({
        id: "gpt",
        models: ["gpt-4o"],
        upstreams: [upstream("backup", { priority: 1 }), upstream("main-1"), upstream("main-2")]
      })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const { decision } = yield* router.chat(chatRequest())
      expect(offered).toEqual([["main-1", "main-2"]])
      expect(decision.candidates).toEqual(["main-1", "main-2"])
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          provider: chatBy({ "main-1": ok("main-1"), "main-2": ok("main-2") }),
          strategy: preferring([], offered)
        })
      )
    )
  })

  it.effect("leaves out an upstream whose context window is too small, saying how many tokens were needed", () => {
    const pools = [
      Topology.pool({
        id: "gpt",
        models: ["gpt-4o"],
        upstreams: [upstream("small", { contextWindow: 50 }), upstream("large", { contextWindow: 128_000 })]
      })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const { decision } = yield* router.chat(chatRequest("gpt-4o", { max_tokens: 100 }))
      const needed = PROMPT_TOKENS + 100
      expect(decision.candidates).toEqual(["large"])
      expect(decision.upstream).toBe("large")
      expect(decision.excluded).toEqual([
        { upstream: "small", stage: "context-window", reason: `needs ${needed} tokens, context window is 50` }
      ])
    }).pipe(Effect.provide(routerLayer(pools, { provider: chatBy({ large: ok("large") }) })))
  })

  it.effect("fails with ContextLengthExceeded naming the counts when no upstream's window fits", () => {
    const pools = [
      Topology.pool({
        id: "gpt",
        models: ["gpt-4o"],
        upstreams: [upstream("a", { contextWindow: 50 }), upstream("b", { contextWindow: 60 })],
        fallback: "more"
      }),
      Topology.pool({ id: "more", models: ["more"], upstreams: [upstream("c", { contextWindow: 80 })] })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* Effect.flip(router.chat(chatRequest("gpt-4o", { max_completion_tokens: 100 })))
      expect(error).toBeInstanceOf(Errors.ContextLengthExceeded)
      expect(error).toMatchObject({
        pool: "gpt",
        promptTokens: PROMPT_TOKENS,
        maxTokens: 100,
        largestContextWindow: 80
      })
      expect(error.message).toContain(`needs ${PROMPT_TOKENS + 100} tokens (${PROMPT_TOKENS} in the prompt + 100`)
      expect(error.message).toContain("is 80 tokens")
    }).pipe(Effect.provide(routerLayer(pools, { provider: chatBy({}) })))
  })

  it.effect(
    "lets a request without max_tokens use a window its prompt fits, though the pool's default reservation would not",
    () => {
      const pools = [
        Topology.pool({
          id: "gpt",
          models: ["gpt-4o"],
          defaultMaxTokens: 1024,
          upstreams: [upstream("small", { contextWindow: 100 })]
        })
      ]
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const { decision } = yield* router.chat(chatRequest("gpt-4o"))
        expect(decision.upstream).toBe("small")
        expect(decision.excluded).toEqual([])
      }).pipe(Effect.provide(routerLayer(pools, { provider: chatBy({ small: ok("small") }) })))
    }
  )

  it.effect(
    "answers ContextLengthExceeded, not NoUpstreamAvailable, when a disabled upstream is in the pool too",
    () => {
      const pools = [
        Topology.pool({
          id: "gpt",
          models: ["gpt-4o"],
          upstreams: [upstream("off", { enabled: false }), upstream("small", { contextWindow: 5 })]
        })
      ]
      return Effect.gen(function* () {
        const router = yield* Router.Router
        const error = yield* Effect.flip(router.chat(chatRequest("gpt-4o")))
        expect(error).toBeInstanceOf(Errors.ContextLengthExceeded)
        expect(error).toMatchObject({ promptTokens: PROMPT_TOKENS, maxTokens: 0, largestContextWindow: 5 })
        expect(error.message).toBe(
          `this request needs ${PROMPT_TOKENS} prompt tokens and room for a completion, but the largest context ` +
            "window in pool 'gpt' and its fallbacks is 5 tokens; shorten the messages"
        )
      }).pipe(Effect.provide(routerLayer(pools, { provider: chatBy({}) })))
    }
  )

  it.effect("fails with NoUpstreamAvailable listing the exclusions when every upstream is disabled", () => {
    const pools = [
      Topology.pool({
        id: "gpt",
        models: ["gpt-4o"],
        upstreams: [upstream("a", { enabled: false }), upstream("b", { enabled: false })]
      })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* Effect.flip(router.chat(chatRequest()))
      expect(error).toBeInstanceOf(Errors.NoUpstreamAvailable)
      expect(error).toMatchObject({
        pool: "gpt",
        retryAfterSeconds: 1,
        exclusions: [
          { upstream: "a", stage: "config", reason: "disabled in config" },
          { upstream: "b", stage: "config", reason: "disabled in config" }
        ]
      })
    }).pipe(Effect.provide(routerLayer(pools, { provider: chatBy({}) })))
  })

  it.effect("fails an unknown model with ModelNotFound before calling anything", () => {
    const pools = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a")] })]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* Effect.flip(router.chat(chatRequest("gpt-9")))
      expect(error).toBeInstanceOf(Errors.ModelNotFound)
      expect(error.message).toBe("no pool serves model 'gpt-9'; known models: gpt-4o")
    }).pipe(Effect.provide(routerLayer(pools, { provider: chatBy({}) })))
  })

  it.effect("fails with NoUpstreamAvailable and the guard's Retry-After when a guard excludes every upstream", () => {
    const log = guardLog()
    const open: Errors.Exclusion = {
      upstream: "a",
      stage: "circuit-breaker",
      reason: "circuit open after 5 failures",
      retryAfterMs: 5000
    }
    const pools = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a")] })]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const error = yield* Effect.flip(router.chat(chatRequest()))
      expect(error).toBeInstanceOf(Errors.NoUpstreamAvailable)
      expect(error).toMatchObject({ pool: "gpt", retryAfterSeconds: 5, exclusions: [open] })
      expect(log.admitted).toEqual([])
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          provider: chatBy({}),
          guards: guards(recordingGuard(log, { exclude: (u) => (u.id === "a" ? open : undefined) }))
        })
      )
    )
  })

  it.effect("records a guard's exclusion in the decision and serves from the remaining upstream", () => {
    const log = guardLog()
    const pools = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a"), upstream("b")] })]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const { decision } = yield* router.chat(chatRequest())
      expect(decision.candidates).toEqual(["b"])
      expect(decision.excluded).toEqual([
        { upstream: "a", stage: "rate-limit", reason: "rpm budget spent", retryAfterMs: 5000 }
      ])
      expect(decision.upstream).toBe("b")
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          provider: chatBy({ b: ok("b") }),
          guards: guards(
            recordingGuard(log, {
              exclude: (u) =>
                u.id === "a"
                  ? { upstream: "a", stage: "rate-limit", reason: "rpm budget spent", retryAfterMs: 5000 }
                  : undefined
            })
          )
        })
      )
    )
  })

  it.effect("tells each guard the outcome of every admitted attempt exactly once", () => {
    const first = guardLog()
    const second = guardLog()
    const pools = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a"), upstream("b")] })]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      yield* router.chat(chatRequest())
      for (const log of [first, second]) {
        expect(log.admitted).toEqual(["a", "b"])
        expect(log.released.map((r) => [r.upstream, r.outcome._tag])).toEqual([
          ["a", "Failure"],
          ["b", "Success"]
        ])
        const [failure, success] = log.released
        expect(failure?.outcome).toMatchObject({ _tag: "Failure", error: { upstream: "a", status: 500 } })
        expect(success?.outcome).toMatchObject({ _tag: "Success", inputTokens: 12, outputTokens: 7 })
      }
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          provider: chatBy({ a: failWith("a", 500), b: ok("b") }),
          guards: guards(recordingGuard(first, { name: "first" }), recordingGuard(second, { name: "second" }))
        })
      )
    )
  })

  it.effect("releases earlier guards when a later one refuses admission, and does not count it as an attempt", () => {
    const first = guardLog()
    const second = guardLog()
    const lostRace: Errors.Exclusion = { upstream: "a", stage: "concurrency", reason: "no free slot" }
    const pools = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("a"), upstream("b")] })]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const { decision } = yield* router.chat(chatRequest())
      expect(first.admitted).toEqual(["a", "b"])
      expect(first.released.map((r) => [r.upstream, r.outcome._tag])).toEqual([
        ["a", "NotSent"],
        ["b", "Success"]
      ])
      expect(second.admitted).toEqual(["b"])
      expect(decision.excluded).toEqual([lostRace])
      expect(attemptsOf(decision)).toEqual([{ attempt: 1, pool: "gpt", upstream: "b", outcome: "success" }])
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          provider: chatBy({ b: ok("b") }),
          guards: guards(
            recordingGuard(first),
            recordingGuard(second, { refuse: (attempt) => (attempt.upstream.id === "a" ? lostRace : undefined) })
          )
        })
      )
    )
  })

  it.effect("times out an upstream that never answers after its timeoutMs and fails over", () => {
    const log = guardLog()
    const pools = [
      Topology.pool({
        id: "gpt",
        models: ["gpt-4o"],
        upstreams: [upstream("stuck", { timeoutMs: 1000 }), upstream("b")]
      })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat(chatRequest()))
      yield* TestClock.adjust("999 millis")
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust("1 millis")
      const { decision } = yield* Fiber.join(fiber)
      expect(decision.upstream).toBe("b")
      expect(decision.attempts).toEqual([
        {
          attempt: 1,
          pool: "gpt",
          upstream: "stuck",
          outcome: "failure",
          latencyMs: 1000,
          error: "no response within 1000 ms"
        },
        { attempt: 2, pool: "gpt", upstream: "b", outcome: "success", latencyMs: 0 }
      ])
      expect(log.released[0]?.outcome).toMatchObject({
        _tag: "Failure",
        latencyMs: 1000,
        error: { _tag: "UpstreamError", upstream: "stuck", kind: "timeout", retryable: true }
      })
      expect(decision.durationMs).toBe(1000)
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          provider: chatBy({ stuck: () => Effect.never, b: ok("b") }),
          guards: guards(recordingGuard(log))
        })
      )
    )
  })

  it.effect("tells guards an attempt was interrupted when the caller gives up", () => {
    const log = guardLog()
    const pools = [Topology.pool({ id: "gpt", models: ["gpt-4o"], upstreams: [upstream("stuck")] })]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const fiber = yield* Effect.fork(router.chat(chatRequest()))
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.interrupt(fiber)
      expect(log.released).toEqual([{ upstream: "stuck", outcome: { _tag: "Interrupted", latencyMs: 2000 } }])
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          provider: chatBy({ stuck: () => Effect.never }),
          guards: guards(recordingGuard(log))
        })
      )
    )
  })
})

describe("Router.embeddings", () => {
  it.effect("routes embeddings through the pipeline with an estimated prompt count and fails over", () => {
    const calls: Array<string> = []
    const pools = [
      Topology.pool({ id: "embed", models: ["text-embedding-3-small"], upstreams: [upstream("a"), upstream("b")] })
    ]
    const response = (id: string): Wire.EmbeddingsResponse => ({
      object: "list",
      data: [{ object: "embedding", index: 0, embedding: [0.1, 0.2] }],
      model: `text-embedding-3-small@${id}`,
      usage: { prompt_tokens: 4, total_tokens: 4 }
    })
    return Effect.gen(function* () {
      const router = yield* Router.Router
      const routed = yield* router.embeddings({ model: "text-embedding-3-small", input: ["hello world", "hi"] })
      expect(routed.response.model).toBe("text-embedding-3-small@b")
      expect(calls).toEqual(["a", "b"])
      expect(routed.decision).toMatchObject({
        operation: "embeddings",
        stream: false,
        pool: "embed",
        upstream: "b",
        // ceil(11 / 4) + ceil(2 / 4)
        promptTokens: 4,
        promptTokensExact: false,
        inputTokens: 4,
        outputTokens: undefined,
        outcome: "success"
      })
      expect(routed.decision.attempts.map((a) => a.outcome)).toEqual(["failure", "success"])
    }).pipe(
      Effect.provide(
        routerLayer(pools, {
          provider: provider({
            embeddings: (u) =>
              Effect.suspend(() => {
                calls.push(u.id)
                return u.id === "a" ? Effect.fail(httpError("a", 500)) : Effect.succeed(answerOf(response(u.id)))
              })
          })
        })
      )
    )
  })
})

describe("Router.models", () => {
  it.effect("lists exact model names and aliases as OpenAI model objects owned by their pool", () => {
    const pools = [
      Topology.pool({
        id: "gpt",
        models: ["gpt-4o", "gpt-4o-*"],
        aliases: { smart: "gpt-4o" },
        upstreams: [upstream("a")]
      }),
      Topology.pool({ id: "local", models: ["llama3.1:8b"], upstreams: [upstream("b")] })
    ]
    return Effect.gen(function* () {
      const router = yield* Router.Router
      expect(yield* router.models).toEqual([
        { id: "gpt-4o", object: "model", created: 0, owned_by: "sluice:gpt" },
        { id: "llama3.1:8b", object: "model", created: 0, owned_by: "sluice:local" },
        { id: "smart", object: "model", created: 0, owned_by: "sluice:gpt" }
      ])
    }).pipe(Effect.provide(routerLayer(pools, { provider: provider({}), strategy: Strategy.first })))
  })
})
