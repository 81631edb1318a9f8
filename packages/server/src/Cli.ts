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
import * as ConfigFile from "./ConfigFile.js"
import * as Server from "./Server.js"

/** Usage text. */
export const usage = `Sluice — an OpenAI-compatible LLM load balancer

Usage:
  sluice serve [--config FILE]     run the gateway (default: the embedded config with simulated upstreams)
  sluice validate --config FILE    check a config file and the environment it needs; list every problem
  sluice simulate [flags]          run a standalone simulated OpenAI-compatible upstream (see 'sluice simulate --help')
  sluice help

Environment: the variables a config names in apiKeyEnv hold the API keys; PORT and HOST override
server.port / server.host; OTEL_EXPORTER_OTLP_ENDPOINT exports traces.`

/** Reads `--name value` or `--name=value` from argv. */
const flag = (argv: ReadonlyArray<string>, name: string): string | undefined => {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === `--${name}`) return argv[i + 1]
    if (arg.startsWith(`--${name}=`)) return arg.slice(name.length + 3)
  }
  return undefined
}

/** A command line that cannot be run: an unknown command or a missing argument. */
export class CliError extends Data.TaggedError("CliError")<{ readonly message: string }> {}

/**
 * The program for a command line (without `node` and the script). `serve` and `validate` read the
 * config with {@link ConfigFile.load}, which checks the file and the environment in one pass and fails
 * with a `ConfigError` listing every problem. `serve` and `simulate` run until interrupted.
 */
export const program = (argv: ReadonlyArray<string>): Effect.Effect<void, unknown> => {
  const [command = "serve", ...rest] = argv
  switch (command) {
    case "serve": {
      const path = flag(rest, "config") ?? ConfigFile.defaultPath
      return Effect.gen(function* () {
        const config = yield* ConfigFile.load(path)
        if (path === ConfigFile.defaultPath)
          yield* Console.log("Using the embedded default config (simulated upstreams, no API key needed).")
        return yield* Layer.launch(Server.layer(config))
      })
    }
    case "validate": {
      const path = flag(rest, "config")
      if (path === undefined) return Effect.fail(new CliError({ message: `validate needs --config FILE\n\n${usage}` }))
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
