/** `GET /v1/models/{id}` (`models.retrieve`) through the gateway. */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { NotFoundError } from "openai"
import { simulatedConfig, startGateway } from "./harness.js"

describe("GET /v1/models/{id}", () => {
  it.live(
    "retrieves a model the pools serve, aliases and pattern matches included, and answers 404 naming the known ones",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(
          simulatedConfig(
            [{ id: "a" }],
            [
              {
                id: "chat",
                models: ["gpt-4o-mini", "org/model-x"],
                aliases: { fast: "gpt-4o-mini" },
                upstreams: ["a"]
              },
              { id: "claude", models: ["claude-*"], upstreams: ["a"] }
            ]
          )
        )
        const model = yield* Effect.promise(() => gateway.client.models.retrieve("gpt-4o-mini"))
        expect(model).toMatchObject({ id: "gpt-4o-mini", object: "model", owned_by: "sluice:chat" })
        const slashed = yield* Effect.promise(() => gateway.client.models.retrieve("org/model-x"))
        expect(slashed.id).toBe("org/model-x")
        expect((yield* Effect.promise(() => gateway.client.models.retrieve("fast"))).id).toBe("fast")
        // A name a pool matches by its pattern: routed, so retrievable too.
        const matched = yield* Effect.promise(() => gateway.client.models.retrieve("claude-sonnet-4-5"))
        expect(matched).toMatchObject({ id: "claude-sonnet-4-5", object: "model", owned_by: "sluice:claude" })
        const missing = yield* Effect.promise(() =>
          gateway.client.models.retrieve("gpt-5").then(
            () => undefined,
            (error: unknown) => error
          )
        )
        expect(missing).toBeInstanceOf(NotFoundError)
        expect((missing as NotFoundError).message).toContain("known models: gpt-4o-mini")
      }).pipe(Effect.scoped)
  )
})
