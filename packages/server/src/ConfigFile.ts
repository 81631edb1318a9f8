/**
 * Loading the configuration file: YAML or JSON, decoded by the core schema, its API key variables
 * checked, with `PORT` / `HOST` from the environment overriding the file. Every problem is reported
 * by path, all at once.
 */
import { Config as SluiceConfig } from "@sluice/core"
import { Providers } from "@sluice/providers"
import { Strategies } from "@sluice/strategies"
import { Config, Effect, Either, Option } from "effect"
import { readFile } from "node:fs/promises"
import { fileURLToPath } from "node:url"
import { parse as parseYaml } from "yaml"

/** Where the embedded default config lives (simulated upstreams, no API key needed). */
export const defaultPath: string = fileURLToPath(new URL("../config/default.yaml", import.meta.url))

/**
 * What a config is checked against by default: the built-in strategies (`pools[].strategy`) and the
 * provider kinds Sluice ships (`upstreams[].provider` and each kind's settings, such as `simulate:`).
 * Options given to {@link parse} or {@link load} replace these field by field: pass the custom
 * strategy names too when the pipeline is given custom strategies (`Sluice.layer(config, { strategies })`).
 */
export const defaultOptions: SluiceConfig.DecodeOptions = { strategies: Strategies.names, providers: Providers.kinds }

/** Parses YAML or JSON text (JSON is YAML) into a document; `Left` is the problem. */
const parseDocument = (text: string): Either.Either<unknown, string> => {
  try {
    return Either.right(parseYaml(text, { prettyErrors: true }))
  } catch (error) {
    return Either.left(`(file): not valid YAML or JSON: ${error instanceof Error ? error.message : String(error)}`)
  }
}

/**
 * Parses YAML or JSON text and decodes it, checked against {@link defaultOptions} with `options`
 * over them. Pure: the environment (`apiKeyEnv` variables, `PORT`, `HOST`) is not looked at;
 * {@link load} checks it too.
 */
export const parse = (
  text: string,
  source: string,
  options: SluiceConfig.DecodeOptions = {}
): Either.Either<SluiceConfig.ConfigFile, SluiceConfig.ConfigError> =>
  Either.flatMap(
    Either.mapLeft(parseDocument(text), (problem) => new SluiceConfig.ConfigError({ source, problems: [problem] })),
    (document) => SluiceConfig.decode(document, source, { ...defaultOptions, ...options })
  )

/**
 * Reads and checks a config file in one pass: its syntax, the schema, the references between
 * entries, the strategies and provider kinds ({@link defaultOptions} with `options` over them),
 * every `apiKeyEnv` variable (upstreams' and `server.priorities`') and `PORT` / `HOST`, which
 * override `server.port` / `server.host`. Fails with one {@link SluiceConfig.ConfigError} listing
 * every problem by path; secret values never appear in it.
 */
export const load = (
  path: string,
  options: SluiceConfig.DecodeOptions = {}
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
    const document = parseDocument(text)
    if (Either.isLeft(document)) return yield* new SluiceConfig.ConfigError({ source: path, problems: [document.left] })
    const [decoded, address] = yield* Effect.all([
      Effect.either(SluiceConfig.decodeWithEnvironment(document.right, path, { ...defaultOptions, ...options })),
      readAddress
    ])
    if (Either.isRight(decoded) && address.problems.length === 0) return override(decoded.right, address)
    const problems = [...(Either.isLeft(decoded) ? decoded.left.problems : []), ...address.problems]
    return yield* new SluiceConfig.ConfigError({ source: path, problems })
  })

interface Address {
  readonly port: Option.Option<number>
  readonly host: Option.Option<string>
  readonly problems: ReadonlyArray<string>
}

/** `PORT` and `HOST` from the environment, with what is wrong with them. */
const readAddress: Effect.Effect<Address> = Effect.gen(function* () {
  const read = (name: string) =>
    Config.option(Config.string(name)).pipe(Effect.orElseSucceed(() => Option.none<string>()))
  const rawPort = yield* read("PORT")
  const host = yield* read("HOST")
  const port = Option.map(rawPort, (raw) => (/^\d+$/.test(raw.trim()) ? Number(raw) : Number.NaN))
  const valid = Option.isNone(port) || (Number.isInteger(port.value) && port.value >= 0 && port.value <= 65535)
  return {
    port: valid ? port : Option.none(),
    host,
    problems: valid
      ? []
      : [
          `PORT (environment): expected an integer port between 0 and 65535, got '${Option.getOrElse(rawPort, () => "")}'`
        ]
  }
})

const override = (config: SluiceConfig.ConfigFile, address: Address): SluiceConfig.ConfigFile =>
  Option.isNone(address.port) && Option.isNone(address.host)
    ? config
    : {
        ...config,
        server: {
          ...config.server,
          ...(Option.isSome(address.port) ? { port: address.port.value } : {}),
          ...(Option.isSome(address.host) ? { host: address.host.value } : {})
        }
      }
