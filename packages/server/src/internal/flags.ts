/**
 * Strict command-line flags: `--name value`, `--name=value` or a bare `--switch`. Every problem —
 * an unknown flag, a missing value, a value given to a switch, too many arguments — is listed at
 * once, so a command line is fixed in one round.
 */

/** The flags a command accepts: those taking a value, and switches. */
export type Spec = Readonly<Record<string, "value" | "switch">>

/** What was given. */
export interface Parsed {
  readonly flags: Readonly<Record<string, string | true>>
  readonly positionals: ReadonlyArray<string>
}

/** Parses `argv` against `spec`, accepting up to `maxPositionals` plain arguments; `problems` lists what is wrong. */
export const parse = (
  argv: ReadonlyArray<string>,
  spec: Spec,
  maxPositionals = 0
): Parsed & { readonly problems: ReadonlyArray<string> } => {
  const flags: Record<string, string | true> = {}
  const positionals: Array<string> = []
  const problems: Array<string> = []
  const known = Object.keys(spec)
    .map((name) => `--${name}`)
    .join(", ")
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (!arg.startsWith("--")) {
      positionals.push(arg)
      continue
    }
    const eq = arg.indexOf("=")
    const name = arg.slice(2, eq === -1 ? undefined : eq)
    const kind = spec[name]
    if (kind === undefined) {
      problems.push(`unknown flag --${name}${known === "" ? "" : `; known: ${known}`}`)
      continue
    }
    if (kind === "switch") {
      if (eq !== -1) problems.push(`--${name} takes no value`)
      else flags[name] = true
      continue
    }
    const value = eq !== -1 ? arg.slice(eq + 1) : argv[i + 1]
    if (eq === -1 && value !== undefined && !value.startsWith("--")) i++
    if (value === undefined || value === "" || (eq === -1 && value.startsWith("--")))
      problems.push(`--${name} needs a value`)
    else flags[name] = value
  }
  if (positionals.length > maxPositionals)
    problems.push(
      `unexpected argument${positionals.length - maxPositionals > 1 ? "s" : ""} ${positionals
        .slice(maxPositionals)
        .map((p) => `'${p}'`)
        .join(", ")}`
    )
  return { flags, positionals, problems }
}
