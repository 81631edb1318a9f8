import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type OpenAI from "openai"
import { simulatedConfig, startGateway } from "./harness.js"

const sleep = (ms: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, ms)))

/** One chat request through the SDK; `content` labels it in the upstream's request log. */
const ask = (client: OpenAI, content: string, headers: Record<string, string> = {}) =>
  client.chat.completions.create(
    { model: "gpt-4o-mini", messages: [{ role: "user", content }], max_tokens: 8 },
    { headers }
  )

/** What the upstream was asked, in arrival order. */
const arrivals = (requests: ReadonlyArray<{ readonly body: unknown }>) =>
  requests.map((r) => (r.body as { messages: Array<{ content: string }> }).messages[0]?.content ?? "")

const TEAM_A = "sk-team-a-0123456789"
const TEAM_B = "sk-team-b-9876543210"

/** One upstream taking one request at a time; team A's key has priority 10, team B's 1. */
const prioritised = () =>
  simulatedConfig(
    [{ id: "only", limits: { maxConcurrency: 1 }, simulate: { latencyMs: 150 } }],
    [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["only"], queue: { maxSize: 10, maxWaitMs: 10_000 } }],
    {
      priorities: [
        { apiKeyEnv: "SLUICE_TEST_TEAM_A_KEY", priority: 10 },
        { apiKeyEnv: "SLUICE_TEST_TEAM_B_KEY", priority: 1 }
      ]
    }
  )

const env = { SLUICE_TEST_TEAM_A_KEY: TEAM_A, SLUICE_TEST_TEAM_B_KEY: TEAM_B }

describe("queue priority by API key, through the gateway with the openai SDK", () => {
  it.live("serves a waiting request bearing a higher-priority API key before earlier waiters with a lower one", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(prioritised(), { env })
      const teamA = gateway.clientWith(TEAM_A)
      const teamB = gateway.clientWith(TEAM_B)
      const all: Array<Promise<unknown>> = [ask(gateway.client, "busy")]
      yield* sleep(50)
      for (const [client, content] of [
        [teamB, "b-1"],
        [teamB, "b-2"],
        [teamA, "a-1"]
      ] as const) {
        all.push(ask(client, content))
        yield* sleep(30)
      }
      yield* Effect.promise(() => Promise.all(all))
      expect(arrivals(gateway.simulator("only").requests())).toEqual(["busy", "a-1", "b-1", "b-2"])
    }).pipe(Effect.scoped)
  )

  it.live("ignores x-sluice-priority from clients no key allows to set it: configured keys and anonymous ones", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(prioritised(), { env })
      const all: Array<Promise<unknown>> = [ask(gateway.client, "busy")]
      yield* sleep(50)
      for (const [client, content, headers] of [
        // Team B's key is configured at 1: asking for 50 in the header does not raise it.
        [gateway.clientWith(TEAM_B), "b-asks-50", { "x-sluice-priority": "50" }],
        // Anyone else cannot jump the queue by asking.
        [gateway.client, "other-asks-1000000", { "x-sluice-priority": "1000000" }],
        [gateway.clientWith(TEAM_A), "a", {}]
      ] as const) {
        all.push(ask(client, content, headers))
        yield* sleep(30)
      }
      yield* Effect.promise(() => Promise.all(all))
      expect(arrivals(gateway.simulator("only").requests())).toEqual(["busy", "a", "b-asks-50", "other-asks-1000000"])
    }).pipe(Effect.scoped)
  )

  it.live("refuses to start when a priority's apiKeyEnv is not set, naming it", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(startGateway(prioritised(), { env: { SLUICE_TEST_TEAM_A_KEY: TEAM_A } }))
      expect(String(error.message)).toContain(
        "server.priorities[1].apiKeyEnv: environment variable SLUICE_TEST_TEAM_B_KEY is not set"
      )
      expect(String(error.message)).not.toContain(TEAM_A)
    }).pipe(Effect.scoped)
  )
})
