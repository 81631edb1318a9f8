/**
 * The `sluice` command: `serve` (the gateway), `simulate` (a standalone simulated upstream) and
 * `validate` (check a config file).
 */
// The module, not the package's index: the index loads every Node service of @effect/platform-node
// (workers, clusters, sockets, terminal...), ~9 MB resident the CLI never uses.
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Simulator } from "@sluice/providers"
import { Config as SluiceConfig } from "@sluice/core"
import { Console, Data, Effect, Either, Layer } from "effect"
import * as AdminUsage from "./internal/adminUsage.js"
import * as ConfigFile from "./ConfigFile.js"
import * as Flags from "./internal/flags.js"
import * as Nursery from "./internal/nursery.js"
import * as Server from "./Server.js"

/** Usage text. */
export const usage = `Sluice — an OpenAI-compatible LLM load balancer

Usage:
  sluice serve [--config FILE] [--watch]
                                   run the gateway (default: the embedded config with simulated upstreams);
                                   SIGHUP reloads the file, --watch also reloads it when it changes,
                                   SIGTERM / SIGINT drain (server.drainMs) and exit 0
  sluice validate --config FILE    check a config file and the environment it needs; list every problem
  sluice simulate [flags]          run a standalone simulated OpenAI-compatible upstream (see 'sluice simulate --help')
${AdminUsage.usage}
  sluice help

Environment: the variables a config names in apiKeyEnv hold the API keys; PORT and HOST override
server.port / server.host; OTEL_EXPORTER_OTLP_ENDPOINT (and the other standard OTEL_* variables) export
traces; LOG_LEVEL overrides server.log.level.

${AdminUsage.connection}`

/** A command line that cannot be run: an unknown command or a missing argument. */
export class CliError extends Data.TaggedError("CliError")<{ readonly message: string }> {}

/** A command line's problems, every one, then the usage. */
const fail = (command: string, problems: ReadonlyArray<string>) =>
  Effect.fail(
    new CliError({
      message: `sluice ${command}: ${problems.length} problem${problems.length === 1 ? "" : "s"}:\n${problems
        .map((p) => `  - ${p}`)
        .join("\n")}\n\n${usage}`
    })
  )

/**
 * The program for a command line (without `node` and the script). `serve` and `validate` read the
 * config with {@link ConfigFile.load}, which checks the file and the environment in one pass and fails
 * with a `ConfigError` listing every problem. `serve` and `simulate` run until interrupted.
 */
export const program = (argv: ReadonlyArray<string>): Effect.Effect<void, unknown> => {
  const [command = "serve", ...rest] = argv
  switch (command) {
    case "serve": {
      const parsed = Flags.parse(rest, { config: "value", watch: "switch" })
      if (parsed.problems.length > 0) return fail("serve", parsed.problems)
      const path = (parsed.flags["config"] as string | undefined) ?? ConfigFile.defaultPath
      const watch = parsed.flags["watch"] === true
      return Effect.gen(function* () {
        const config = yield* ConfigFile.load(path)
        if (path === ConfigFile.defaultPath)
          yield* Console.log("Using the embedded default config (simulated upstreams, no API key needed).")
        // Listening: the start-up allocations are done, traffic may grow the young generation again.
        return yield* Layer.launch(
          Layer.tap(Server.layer(config, { reload: { path, watch } }), () => Effect.sync(Nursery.release))
        )
      })
    }
    case "validate": {
      const parsed = Flags.parse(rest, { config: "value" })
      const path = parsed.flags["config"] as string | undefined
      const problems = [
        ...parsed.problems,
        ...(path === undefined && !rest.includes("--config") ? ["--config FILE is required"] : [])
      ]
      if (problems.length > 0 || path === undefined) return fail("validate", problems)
      return Effect.flatMap(ConfigFile.load(path), (config) => {
        const variables = [...new Set(SluiceConfig.apiKeyVariables(config).map((v) => v.variable))]
        const keys = variables.length === 0 ? "" : `; API keys set in ${variables.join(", ")}`
        return Console.log(`${path}: valid (${config.pools.length} pools, ${config.upstreams.length} upstreams${keys})`)
      })
    }
    case "simulate": {
      if (rest.includes("--help")) return Console.log(Simulator.usage)
      const parsed = Simulator.parseArgs(rest)
      if (Either.isLeft(parsed)) return Effect.fail(parsed.left)
      return Effect.gen(function* () {
        const sim = yield* Simulator.start(parsed.right, parsed.right)
        yield* Console.log(`Simulated OpenAI-compatible upstream listening on ${sim.url} (API at ${sim.url}/v1)`)
        return yield* Effect.never
      }).pipe(Effect.scoped)
    }
    case "status":
    case "breaker":
    case "upstream":
    case "reload":
      // Loaded on demand: `serve` never needs the admin API's client.
      return Effect.flatMap(
        Effect.promise(() => import("./AdminCli.js")),
        (AdminCli) => AdminCli.program(command, rest)
      )
    case "help":
    case "--help":
    case "-h":
      return Console.log(usage)
    default:
      return Effect.fail(new CliError({ message: `unknown command '${command}'\n\n${usage}` }))
  }
}

/** Runs the CLI with `process.argv`, printing errors plainly and exiting non-zero on failure. */
export const main = (argv: ReadonlyArray<string> = process.argv.slice(2)): void => {
  // Every command but `serve` is done loading here; `serve` releases once it listens.
  if ((argv[0] ?? "serve") !== "serve") Nursery.release()
  const run = program(argv).pipe(
    Effect.catchAll((error) =>
      Effect.zipRight(
        Console.error(error instanceof Error ? error.message : String(error)),
        Effect.sync(() => {
          process.exitCode = 1
        })
      )
    )
  )
  NodeRuntime.runMain(run, { disableErrorReporting: false, disablePrettyLogger: true })
}
