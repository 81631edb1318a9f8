/**
 * Loading the configuration file: YAML or JSON, decoded by the core schema, with `PORT` / `HOST`
 * from the environment overriding the file. Every problem is reported by path.
 */
import { Config as SluiceConfig } from "@sluice/core"
import { Strategies } from "@sluice/strategies"
import { Config, Effect, Either, Option } from "effect"
import { readFile } from "node:fs/promises"
import { fileURLToPath } from "node:url"
import { parse as parseYaml } from "yaml"

/** Where the embedded default config lives (simulated upstreams, no API key needed). */
export const defaultPath: string = fileURLToPath(new URL("../config/default.yaml", import.meta.url))

/**
 * What pools may name as `strategy` by default: the built-in strategies. Pass the custom names too
 * when the pipeline is given custom strategies (`Sluice.layer(config, { strategies })`).
 */
export const defaultOptions: SluiceConfig.DecodeOptions = { strategies: Strategies.names }

/** Parses YAML or JSON text (JSON is YAML) and decodes it. */
export const parse = (
  text: string,
  source: string,
  options: SluiceConfig.DecodeOptions = defaultOptions
): Either.Either<SluiceConfig.ConfigFile, SluiceConfig.ConfigError> => {
  let document: unknown
  try {
    document = parseYaml(text, { prettyErrors: true })
  } catch (error) {
    return Either.left(
      new SluiceConfig.ConfigError({
        source,
        problems: [`(file): not valid YAML or JSON: ${error instanceof Error ? error.message : String(error)}`]
      })
    )
  }
  return SluiceConfig.decode(document, source, options)
}

/** Reads and decodes a config file; `PORT` and `HOST` override `server.port` / `server.host`. */
export const load = (
  path: string,
  options: SluiceConfig.DecodeOptions = defaultOptions
): Effect.Effect<SluiceConfig.ConfigFile, SluiceConfig.ConfigError> =>
  Effect.gen(function* () {
    const text = yield* Effect.tryPromise({
      try: () => readFile(path, "utf8"),
      catch: (error) =>
        new SluiceConfig.ConfigError({
          source: path,
          problems: [`(file): cannot read: ${error instanceof Error ? error.message : String(error)}`]
        })
    })
    const config = yield* parse(text, path, options)
    return yield* withEnvironment(config)
  })

/** Applies `PORT` / `HOST` from the environment. */
export const withEnvironment = (
  config: SluiceConfig.ConfigFile
): Effect.Effect<SluiceConfig.ConfigFile, SluiceConfig.ConfigError> =>
  Effect.gen(function* () {
    const port = yield* Config.option(Config.integer("PORT")).pipe(
      Effect.mapError(
        () => new SluiceConfig.ConfigError({ source: "environment", problems: ["PORT: expected an integer"] })
      )
    )
    const host = yield* Config.option(Config.string("HOST")).pipe(Effect.orElseSucceed(() => Option.none<string>()))
    if (Option.isNone(port) && Option.isNone(host)) return config
    return {
      ...config,
      server: {
        ...config.server,
        ...(Option.isSome(port) ? { port: port.value } : {}),
        ...(Option.isSome(host) ? { host: host.value } : {})
      }
    }
  })
