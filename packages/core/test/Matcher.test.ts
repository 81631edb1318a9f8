import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Matcher, Topology } from "../src/index.js"

const upstream = (id: string) => Topology.upstream({ id, provider: "openai", baseUrl: "http://127.0.0.1:1/v1" })

const pools = [
  Topology.pool({ id: "exact", models: ["gpt-4o"], upstreams: [upstream("a")] }),
  Topology.pool({
    id: "aliased",
    models: ["gpt-4o-mini"],
    // An alias that shadows an exact name elsewhere loses to it.
    aliases: { fast: "gpt-4o-mini", "gpt-4o": "gpt-4o-mini", "gpt-4o-latest": "gpt-4o-mini" },
    upstreams: [upstream("b")]
  }),
  Topology.pool({ id: "any-gpt", models: ["gpt-*"], upstreams: [upstream("c")] }),
  Topology.pool({ id: "gpt-4o-family", models: ["gpt-4o*"], upstreams: [upstream("d")] }),
  Topology.pool({ id: "llama", models: ["llama3.1:8b", "meta-llama/*"], upstreams: [upstream("e")] })
]

const matcher = Matcher.make(pools)

const poolOf = (model: string) => Effect.map(matcher.match(model), (m) => ({ pool: m.pool.id, model: m.model }))

describe("Matcher", () => {
  it.effect("prefers an exact model name over an alias and a wildcard", () =>
    Effect.gen(function* () {
      expect(yield* poolOf("gpt-4o")).toEqual({ pool: "exact", model: "gpt-4o" })
      expect(yield* poolOf("gpt-4o-mini")).toEqual({ pool: "aliased", model: "gpt-4o-mini" })
    })
  )

  it.effect("routes an alias to its pool and rewrites the model to the alias target", () =>
    Effect.gen(function* () {
      expect(yield* poolOf("fast")).toEqual({ pool: "aliased", model: "gpt-4o-mini" })
      // The alias wins over the `gpt-4o*` and `gpt-*` wildcards that also match it.
      expect(yield* poolOf("gpt-4o-latest")).toEqual({ pool: "aliased", model: "gpt-4o-mini" })
    })
  )

  it.effect("picks the longest matching wildcard and keeps the model name", () =>
    Effect.gen(function* () {
      expect(yield* poolOf("gpt-4o-2024-08-06")).toEqual({ pool: "gpt-4o-family", model: "gpt-4o-2024-08-06" })
      expect(yield* poolOf("gpt-3.5-turbo")).toEqual({ pool: "any-gpt", model: "gpt-3.5-turbo" })
      expect(yield* poolOf("meta-llama/Llama-3.1-70B")).toEqual({ pool: "llama", model: "meta-llama/Llama-3.1-70B" })
    })
  )

  it.effect("breaks a tie between equally long wildcards by config order", () =>
    Effect.gen(function* () {
      const tied = Matcher.make([
        Topology.pool({ id: "first", models: ["gpt-4*"], upstreams: [upstream("a")] }),
        Topology.pool({ id: "second", models: ["gpt-*o"], upstreams: [upstream("b")] })
      ])
      expect((yield* tied.match("gpt-4o")).pool.id).toBe("first")
      expect((yield* tied.match("gpt-5o")).pool.id).toBe("second")
    })
  )

  it.effect("treats dots and other regex characters in model names literally", () =>
    Effect.gen(function* () {
      expect((yield* poolOf("llama3.1:8b")).pool).toBe("llama")
      const error = yield* Effect.flip(poolOf("llama3x1:8b"))
      expect(error._tag).toBe("ModelNotFound")
    })
  )

  it.effect("fails an unknown model with ModelNotFound whose message lists the known models", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(matcher.match("claude-3-opus"))
      expect(error._tag).toBe("ModelNotFound")
      expect(error.model).toBe("claude-3-opus")
      expect(error.known).toEqual(
        expect.arrayContaining(["gpt-4o", "gpt-4o-mini", "fast", "gpt-*", "gpt-4o*", "llama3.1:8b", "meta-llama/*"])
      )
      expect(error.message).toMatch(/^no pool serves model 'claude-3-opus'; known models: gpt-4o, /)
      expect(error.message).toContain("fast")
      expect(error.message).toContain("gpt-*")
    })
  )

  it.effect("says so when no models are configured at all", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Matcher.make([]).match("gpt-4o"))
      expect(error.message).toBe("no pool serves model 'gpt-4o'; known models: none configured")
    })
  )

  it("lists exact names and aliases with their pools, but not wildcards", () => {
    expect(matcher.models).toEqual([
      { id: "gpt-4o", pool: "exact" },
      { id: "gpt-4o-mini", pool: "aliased" },
      { id: "llama3.1:8b", pool: "llama" },
      { id: "fast", pool: "aliased" },
      { id: "gpt-4o-latest", pool: "aliased" }
    ])
  })

  it("finds a pool by id", () => {
    expect(matcher.pool("llama")?.models).toEqual(["llama3.1:8b", "meta-llama/*"])
    expect(matcher.pool("nope")).toBeUndefined()
  })

  it.effect("is built from the Topology by Matcher.layer", () =>
    Effect.gen(function* () {
      const m = yield* Matcher.Matcher
      expect((yield* m.match("fast")).pool.id).toBe("aliased")
    }).pipe(Effect.provide(Matcher.layer), Effect.provide(Topology.layerPools(pools)))
  )
})
