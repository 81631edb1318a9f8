/**
 * The `sluice` commands that operate a running gateway through its admin API: `status`,
 * `breaker reset <upstream>`, `upstream disable|enable <id>` and `reload`. They call it with a client
 * derived from the API's own description (`AdminApi`), so the CLI and the server cannot disagree.
 *
 * Where: `--url` (default `SLUICE_URL`, else `http://127.0.0.1:8080`). The token: the variable named
 * by `--token-env` (default `SLUICE_ADMIN_TOKEN`), read through Effect's `Config`, never a flag (a
 * flag would land in the shell history and the process list).
 */
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import * as HttpApiClient from "@effect/platform/HttpApiClient"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { Config, Console, Data, Effect, Option, Redacted } from "effect"
import { AdminApi } from "./AdminApi.js"
import { connection, usage } from "./internal/adminUsage.js"
import * as Flags from "./internal/flags.js"

/** A command of this module that cannot run; the message says what to do. */
export class AdminCliError extends Data.TaggedError("AdminCliError")<{ readonly message: string }> {}

const FLAGS: Flags.Spec = { url: "value", "token-env": "value" }

/** The client of the admin API at `url`, sending `token`. */
const clientOf = (url: string, token: Redacted.Redacted<string>) =>
  HttpApiClient.make(AdminApi, {
    baseUrl: url,
    transformClient: HttpClient.mapRequest(HttpClientRequest.bearerToken(Redacted.value(token)))
  }).pipe(Effect.provide(FetchHttpClient.layer))

type Client = Effect.Effect.Success<ReturnType<typeof clientOf>>

/** What went wrong with a call, said for a person at a terminal. */
const explain = (url: string) => (error: unknown) => {
  const tagged = error as { readonly _tag?: string; readonly message?: string }
  switch (tagged._tag) {
    case "Unauthorized":
    case "Forbidden":
      return new AdminCliError({ message: `the gateway at ${url} refused the admin token: ${tagged.message}` })
    case "NotFound":
    case "Conflict":
      return new AdminCliError({ message: tagged.message ?? String(error) })
    case "InvalidConfig": {
      const problems = (error as { readonly problems: ReadonlyArray<string> }).problems
      return new AdminCliError({
        message: `refused; the running config stays:\n${problems.map((p) => `  - ${p}`).join("\n")}`
      })
    }
    case "RequestError":
    case "ResponseError":
      return new AdminCliError({
        message: `cannot reach the admin API at ${url} (${tagged.message}); is the gateway running with server.admin set?`
      })
    default:
      return new AdminCliError({ message: tagged.message ?? String(error) })
  }
}

/** `sluice status`'s table. */
const printStatus = (client: Client) =>
  Effect.gen(function* () {
    const status = yield* client.upstreams.status()
    const lines = [`generation ${status.generation}`, "", "Pools:"]
    for (const pool of status.pools)
      lines.push(
        `  ${pool.id}: ${pool.models.join(", ")} (${pool.strategy}; queue ${pool.queueDepth}) -> ${pool.upstreams.join(", ")}`
      )
    lines.push("", "Upstreams:")
    for (const u of status.upstreams) {
      const health = u.health as { healthy: boolean; lastError?: string }
      const breaker = u.breaker as { state: string; failures: number; lastFailure?: string }
      const budget = u.budget as { requestsUsed: number; tokensUsed: number; limits: { rpm?: number; tpm?: number } }
      const of = (used: number, limit: number | undefined) => (limit === undefined ? `${used}` : `${used}/${limit}`)
      lines.push(
        `  ${u.id} [${u.provider}]${u.enabled ? "" : " DISABLED"}: ${health.healthy ? "healthy" : "UNHEALTHY"}, breaker ${breaker.state} (${breaker.failures} failures), in flight ${u.inFlight}, rpm ${of(budget.requestsUsed, budget.limits.rpm)}, tpm ${of(budget.tokensUsed, budget.limits.tpm)}` +
          (breaker.lastFailure === undefined ? "" : `\n      last failure: ${breaker.lastFailure}`) +
          (health.lastError === undefined || health.healthy ? "" : `\n      last health error: ${health.lastError}`)
      )
    }
    yield* Console.log(lines.join("\n"))
  })

/** What each command does with the client, or its problems. */
const action = (
  command: string,
  positionals: ReadonlyArray<string>
): { readonly run: (client: Client) => Effect.Effect<void, unknown> } | ReadonlyArray<string> => {
  /** A command taking one id after its `verb` word (`breaker reset ID`). */
  const one = (what: string, run: (id: string) => (client: Client) => Effect.Effect<void, unknown>) =>
    positionals.length === 2 ? { run: run(positionals[1]!) } : [`expected ${what}`]
  switch (command) {
    case "status":
      return positionals.length === 0 ? { run: printStatus } : ["status takes no arguments"]
    case "reload":
      return positionals.length === 0
        ? {
            run: (client) =>
              Effect.flatMap(client.config.reload(), (a) =>
                Console.log(`reloaded: generation ${a.generation} serves new requests`)
              )
          }
        : ["reload takes no arguments"]
    case "breaker":
      return positionals[0] !== "reset"
        ? ["expected: sluice breaker reset UPSTREAM"]
        : one(
            "one UPSTREAM after 'breaker reset'",
            (id) => (client) =>
              Effect.flatMap(client.upstreams.resetBreaker({ path: { id } }), (u) =>
                Console.log(`breaker of ${id} reset: ${(u.breaker as { state: string }).state}`)
              )
          )
    case "upstream": {
      const verb = positionals[0]
      if (verb !== "disable" && verb !== "enable") return ["expected: sluice upstream disable|enable ID"]
      return one(`one ID after 'upstream ${verb}'`, (id) => (client) => {
        const call =
          verb === "disable" ? client.upstreams.disable({ path: { id } }) : client.upstreams.enable({ path: { id } })
        return Effect.flatMap(call, (a) =>
          Console.log(`${id} ${verb}d: generation ${a.generation} serves new requests`)
        )
      })
    }
    default:
      return [`unknown command '${command}'`]
  }
}

/** Positionals after the command word, with `breaker reset` / `upstream disable` counted in. */
const MAX_POSITIONALS: Readonly<Record<string, number>> = { status: 0, reload: 0, breaker: 2, upstream: 2 }

/** The program of an admin command (`argv` after the command word). Lists every problem at once. */
export const program = (command: string, argv: ReadonlyArray<string>): Effect.Effect<void, AdminCliError> =>
  Effect.gen(function* () {
    const parsed = Flags.parse(argv, FLAGS, MAX_POSITIONALS[command] ?? 0)
    const act = action(command, parsed.positionals)
    const problems = [...parsed.problems, ...("run" in act ? [] : act)]
    const tokenEnv = (parsed.flags["token-env"] as string | undefined) ?? "SLUICE_ADMIN_TOKEN"
    const token = yield* Config.option(Config.redacted(tokenEnv)).pipe(Effect.orElseSucceed(() => Option.none()))
    if (Option.isNone(token)) problems.push(`set the admin token in ${tokenEnv} (the gateway's server.admin.tokenEnv)`)
    if (problems.length > 0 || !("run" in act) || Option.isNone(token))
      return yield* new AdminCliError({
        message: `sluice ${command}: ${problems.length} problem${problems.length === 1 ? "" : "s"}:\n${problems.map((p) => `  - ${p}`).join("\n")}\n\n${usage}\n\n${connection}`
      })
    const fromEnv = yield* Config.option(Config.string("SLUICE_URL")).pipe(Effect.orElseSucceed(() => Option.none()))
    const url = (
      (parsed.flags["url"] as string | undefined) ?? Option.getOrElse(fromEnv, () => "http://127.0.0.1:8080")
    ).replace(/\/+$/, "")
    const client = yield* clientOf(url, token.value)
    yield* act.run(client).pipe(Effect.mapError(explain(url)))
  })
