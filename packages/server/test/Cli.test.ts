/**
 * The `sluice` command line: in process through `Cli.program` (with its output captured and a
 * hermetic environment), and as the real `bin` in a child process where the exit code or the
 * documented run line is the point.
 */
import { describe, expect, it } from "@effect/vitest"
import { Simulator } from "@sluice/providers"
import type { Scope } from "effect"
import { Config } from "@sluice/core"
import { ConfigProvider, Effect, Exit, Fiber, Option, Schema } from "effect"
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import OpenAI from "openai"
import * as Cli from "../src/Cli.js"
import { simulatedConfig, startGateway } from "./harness.js"

const repoRoot = fileURLToPath(new URL("../../../", import.meta.url))
const bin = fileURLToPath(new URL("../bin/sluice.js", import.meta.url))
const example = fileURLToPath(new URL("../config/example.yaml", import.meta.url))

/** A temporary config file, removed when the scope closes. */
const configFile = (yaml: string): Effect.Effect<string, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const dir = mkdtempSync(join(tmpdir(), "sluice-cli-"))
      const path = join(dir, "sluice.yaml")
      writeFileSync(path, yaml)
      return path
    }),
    (path) => Effect.sync(() => rmSync(join(path, ".."), { recursive: true, force: true }))
  )

/** A running `Cli.program`: its fiber and what it printed so far. */
interface Run {
  readonly fiber: Fiber.RuntimeFiber<void, unknown>
  readonly stdout: () => string
  readonly stderr: () => string
  /** Waits until stdout matches (fails if the program ends first, or after 10 s). */
  readonly waitFor: (pattern: RegExp) => Effect.Effect<RegExpExecArray>
}

/**
 * Starts `sluice <argv>` in process, in the test's scope (interrupted when it closes), seeing only
 * `env` as its environment (`PORT=0` and `HOST=127.0.0.1` unless overridden).
 */
const start = (argv: ReadonlyArray<string>, env: Readonly<Record<string, string>> = {}) =>
  Effect.gen(function* () {
    const out: Array<string> = []
    const err: Array<string> = []
    const base = yield* Effect.console
    const console = {
      ...base,
      log: (...args: ReadonlyArray<unknown>) => Effect.sync(() => void out.push(args.map(String).join(" "))),
      error: (...args: ReadonlyArray<unknown>) => Effect.sync(() => void err.push(args.map(String).join(" "))),
      // The logger writes through the console's synchronous side (the banner goes through the logger).
      unsafe: {
        ...base.unsafe,
        log: (...args: ReadonlyArray<unknown>) => void out.push(args.map(String).join(" ")),
        error: (...args: ReadonlyArray<unknown>) => void err.push(args.map(String).join(" "))
      }
    }
    const provider = ConfigProvider.fromMap(new Map(Object.entries({ PORT: "0", HOST: "127.0.0.1", ...env })))
    const fiber = yield* Cli.program(argv).pipe(
      Effect.withConsole(console),
      Effect.withConfigProvider(provider),
      Effect.forkScoped
    )
    const stdout = () => out.join("\n")
    const waitFor = (pattern: RegExp): Effect.Effect<RegExpExecArray> =>
      Effect.gen(function* () {
        for (let i = 0; i < 1000; i++) {
          const match = pattern.exec(stdout())
          if (match !== null) return match
          const done = yield* Fiber.poll(fiber)
          if (Option.isSome(done)) return yield* Effect.dieMessage(`ended before printing ${pattern}: ${done.value}`)
          yield* Effect.sleep("10 millis")
        }
        return yield* Effect.dieMessage(`did not print ${pattern} within 10 s; printed: ${stdout()}`)
      })
    return { fiber, stdout, stderr: () => err.join("\n"), waitFor } satisfies Run
  })

/** Runs `sluice <argv>` in process to its end. */
const complete = (argv: ReadonlyArray<string>, env: Readonly<Record<string, string>> = {}) =>
  Effect.gen(function* () {
    const run = yield* start(argv, env)
    const exit = yield* Fiber.await(run.fiber)
    return { exit, stdout: run.stdout(), problems: problemsOf(exit) }
  })

const problemsOf = (exit: Exit.Exit<void, unknown>): ReadonlyArray<string> | undefined => {
  if (Exit.isSuccess(exit)) return undefined
  const error = exit.cause._tag === "Fail" ? (exit.cause.error as { problems?: ReadonlyArray<string> }) : undefined
  return error?.problems
}

/** True once nothing accepts connections on `url` any more. */
const refused = (url: string) =>
  Effect.promise(() =>
    fetch(url).then(
      () => false,
      () => true
    )
  )

/** A child process of the real `sluice` bin, killed when the scope closes. */
const spawnBin = (argv: ReadonlyArray<string>, env: NodeJS.ProcessEnv) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, [bin, ...argv], { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"] })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")))
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")))
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
      return { child, exited, stdout: () => stdout, stderr: () => stderr }
    }),
    ({ child, exited }) =>
      Effect.promise(() => {
        if (child.exitCode !== null || child.signalCode !== null) return exited
        child.kill("SIGTERM")
        // A child that ignores SIGTERM for 5 s is killed outright rather than left behind.
        const hard = setTimeout(() => child.kill("SIGKILL"), 5_000)
        return exited.finally(() => clearTimeout(hard))
      })
  )

/** The environment of this process without the given variables (and without trace export). */
const environmentWithout = (names: ReadonlyArray<string>): NodeJS.ProcessEnv => {
  const env = { ...process.env }
  for (const name of [...names, "OTEL_EXPORTER_OTLP_ENDPOINT", "PORT", "HOST"]) delete env[name]
  return env
}

const LISTENING = /Sluice gateway listening on (http:\/\/127\.0\.0\.1:(\d+))/

describe("sluice serve", () => {
  it.live(
    "serves a config file on a free port, answers the openai SDK with the key from the environment, and stops when interrupted",
    () =>
      Effect.gen(function* () {
        const upstream = yield* Simulator.start({ name: "cli-upstream", completionTokens: 3 })
        const path = yield* configFile(
          [
            "upstreams:",
            `  - { id: real, provider: openai-compatible, baseUrl: "${upstream.url}/v1", apiKeyEnv: SLUICE_CLI_KEY }`,
            "pools:",
            "  - { id: chat, models: [gpt-4o-mini], upstreams: [real] }"
          ].join("\n")
        )
        const run = yield* start(["serve", "--config", path], { SLUICE_CLI_KEY: "sk-cli-secret-value" })
        const [, base] = yield* run.waitFor(LISTENING)
        const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "client-key", maxRetries: 0, timeout: 10_000 })
        const { data, response } = yield* Effect.promise(() =>
          client.chat.completions
            .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] })
            .withResponse()
        )
        expect(data.choices[0]?.message.content).toMatch(/^\[cli-upstream\]/)
        expect(response.headers.get("x-sluice-upstream")).toBe("real")
        expect(upstream.requests().at(-1)?.headers["authorization"]).toBe("Bearer sk-cli-secret-value")
        expect(run.stdout()).toContain("real [openai-compatible]")
        expect(run.stdout()).not.toContain("sk-cli-secret-value")
        yield* Fiber.interrupt(run.fiber)
        expect(yield* refused(`${base}/health`)).toBe(true)
      }).pipe(Effect.scoped),
    20_000
  )

  it.live("refuses to serve anyone on a reachable address without client keys, unless auth.open says so", () =>
    Effect.gen(function* () {
      const yaml = (open: boolean) =>
        [
          ...(open ? ["server: { auth: { open: true } }"] : []),
          "upstreams:",
          "  - { id: s, provider: simulated }",
          "pools:",
          "  - { id: p, models: [m], upstreams: [s] }"
        ].join("\n")
      const closed = yield* complete(["serve", "--config", yield* configFile(yaml(false))], { HOST: "0.0.0.0" })
      expect(closed.problems).toEqual([
        "server.host: '0.0.0.0' is reachable from other machines and no client keys are set; add server.auth.keys, bind 127.0.0.1, or set server.auth.open: true to serve anyone on purpose"
      ])
      expect(closed.stdout).not.toContain("listening")
      const run = yield* start(["serve", "--config", yield* configFile(yaml(true))], { HOST: "0.0.0.0" })
      const banner = yield* run.waitFor(/Open: clients need no key/)
      expect(banner).not.toBeNull()
      expect(run.stdout()).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+/)
    }).pipe(Effect.scoped)
  )

  it.live("refuses an invalid config, listing every problem (schema, references, environment) at once", () =>
    Effect.gen(function* () {
      const path = yield* configFile(
        [
          "server:",
          "  priorities:",
          "    - { apiKeyEnv: SLUICE_CLI_TEAM_KEY, priority: 5 }",
          "upstreams:",
          "  - { id: a, provider: openai, baseUrl: https://api.openai.com/v1, apiKeyEnv: SLUICE_CLI_OPENAI_KEY }",
          "  - { id: b, provider: simulated, weight: -3 }",
          "  - { id: c, provider: groq, baseUrl: https://api.groq.com/openai/v1, apiKeyEnv: SLUICE_CLI_GROQ_KEY }",
          "pools:",
          "  - { id: p, models: [m], strategy: fastest, upstreams: [a, b, c, gone], fallback: p }"
        ].join("\n")
      )
      const { exit, stdout, problems } = yield* complete(["serve", "--config", path], {
        SLUICE_CLI_GROQ_KEY: "gsk-set-and-secret",
        PORT: "eighty"
      })
      expect(Exit.isFailure(exit)).toBe(true)
      expect(problems).toEqual([
        "upstreams[1].weight: Expected a positive number, actual -3",
        "pools[0].strategy: unknown strategy 'fastest'; known: round-robin, weighted, random, priority, least-connections, latency, p2c, least-tokens, cost, headroom, consistent-hash",
        "pools[0].upstreams[3]: unknown upstream 'gone'; known: a, b, c",
        "pools[0].fallback: fallback chain has a cycle: p -> p",
        "server.priorities[0].apiKeyEnv: environment variable SLUICE_CLI_TEAM_KEY is not set",
        "upstreams[0].apiKeyEnv: environment variable SLUICE_CLI_OPENAI_KEY is not set",
        "PORT (environment): expected an integer port between 0 and 65535, got 'eighty'"
      ])
      expect(stdout).not.toContain("listening")
    }).pipe(Effect.scoped)
  )

  it.live(
    "as the bin: prints every problem of an invalid config to stderr and exits 1",
    () =>
      Effect.gen(function* () {
        const path = yield* configFile(
          [
            "upstreams:",
            "  - { id: a, provider: openai, baseUrl: https://api.openai.com/v1, apiKeyEnv: SLUICE_CLI_UNSET_KEY }",
            "pools:",
            "  - { id: p, models: [m], upstreams: [a, gone] }"
          ].join("\n")
        )
        const child = yield* spawnBin(["serve", "--config", path], environmentWithout(["SLUICE_CLI_UNSET_KEY"]))
        const code = yield* Effect.promise(() => child.exited)
        expect(code).toBe(1)
        expect(child.stderr()).toContain(`invalid configuration in ${path}:`)
        expect(child.stderr()).toContain("  - pools[0].upstreams[1]: unknown upstream 'gone'; known: a")
        expect(child.stderr()).toContain(
          "  - upstreams[0].apiKeyEnv: environment variable SLUICE_CLI_UNSET_KEY is not set"
        )
        expect(child.stdout()).not.toContain("listening")
      }).pipe(Effect.scoped),
    30_000
  )

  it.live(
    "as the bin: runs the example config with exactly the variables its header documents",
    () =>
      Effect.gen(function* () {
        const header = readFileSync(example, "utf8").split("\n").slice(0, 3).join("\n")
        const line = /^#\s+((?:[A-Z_]+=\.\.\. )+)npx sluice (serve --config \S+)$/m.exec(header)
        expect(line).not.toBeNull()
        const documented = line![1]!
          .trim()
          .split(" ")
          .map((assignment) => assignment.split("=")[0]!)
        expect(documented).toEqual(["OPENAI_API_KEY", "GROQ_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"])
        // Nothing else from this machine's environment may help: every variable the file could name is removed.
        const env = environmentWithout([...documented, "SLUICE_PRIORITY_KEY"])
        for (const name of documented) env[name] = `placeholder-${name.toLowerCase()}`
        env["PORT"] = "0"
        const child = yield* spawnBin(line![2]!.split(" "), env)
        let match: RegExpExecArray | null = null
        for (let i = 0; i < 2000 && match === null && child.child.exitCode === null; i++) {
          yield* Effect.sleep("10 millis")
          match = LISTENING.exec(child.stdout())
        }
        expect(child.stderr()).not.toContain("invalid configuration")
        expect(match).not.toBeNull()
        const base = match![1]!
        const health = yield* Effect.promise(() => fetch(`${base}/health`).then((r) => r.status))
        expect(health).toBe(200)
        const models = yield* Effect.promise(() =>
          fetch(`${base}/v1/models`).then((r) => r.json() as Promise<{ data: Array<{ id: string }> }>)
        )
        expect(models.data.map((m) => m.id)).toContain("smart")
        expect(child.stdout() + child.stderr()).not.toContain("placeholder-")
      }).pipe(Effect.scoped),
    40_000
  )
})

describe("sluice validate", () => {
  const yaml = [
    "server:",
    "  priorities: [{ apiKeyEnv: SLUICE_CLI_TEAM_KEY, priority: 5 }]",
    "upstreams:",
    "  - { id: a, provider: openai, baseUrl: https://api.openai.com/v1, apiKeyEnv: SLUICE_CLI_OPENAI_KEY }",
    "pools:",
    "  - { id: p, models: [m], upstreams: [a] }"
  ].join("\n")

  it.live("accepts a config whose variables are set, naming them but never their values", () =>
    Effect.gen(function* () {
      const path = yield* configFile(yaml)
      const { exit, stdout } = yield* complete(["validate", "--config", path], {
        SLUICE_CLI_TEAM_KEY: "team-secret-value",
        SLUICE_CLI_OPENAI_KEY: "sk-secret-value"
      })
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(stdout).toBe(
        `${path}: valid (1 pools, 1 upstreams; API keys set in SLUICE_CLI_TEAM_KEY, SLUICE_CLI_OPENAI_KEY)`
      )
      expect(stdout).not.toMatch(/secret-value/)
    }).pipe(Effect.scoped)
  )

  it.live("checks the environment too: every unset or empty variable by path, with the file's problems", () =>
    Effect.gen(function* () {
      const path = yield* configFile(yaml.replace("upstreams: [a]", "upstreams: [a, b]"))
      const { exit, problems } = yield* complete(["validate", "--config", path], { SLUICE_CLI_OPENAI_KEY: " " })
      expect(Exit.isFailure(exit)).toBe(true)
      expect(problems).toEqual([
        "pools[0].upstreams[1]: unknown upstream 'b'; known: a",
        "server.priorities[0].apiKeyEnv: environment variable SLUICE_CLI_TEAM_KEY is not set",
        "upstreams[0].apiKeyEnv: environment variable SLUICE_CLI_OPENAI_KEY is empty"
      ])
    }).pipe(Effect.scoped)
  )

  it.live("never repeats a key pasted where a variable name belongs, whatever the provider's key format", () =>
    Effect.gen(function* () {
      // OpenAI's, Groq's (letters, digits and '_': shaped like a variable name) and a bare hex key.
      for (const pasted of ["sk-proj-Abc123-pasted", "gsk_Abc123pastedSECRET", "abc123def456abc123def456"]) {
        const path = yield* configFile(yaml.replace("apiKeyEnv: SLUICE_CLI_OPENAI_KEY", `apiKeyEnv: ${pasted}`))
        const { exit, problems } = yield* complete(["validate", "--config", path], { SLUICE_CLI_TEAM_KEY: "t" })
        expect(Exit.isFailure(exit)).toBe(true)
        expect(problems).toEqual([
          "upstreams[0].apiKeyEnv: expected the name of an environment variable (upper-case letters, digits and '_', e.g. OPENAI_API_KEY), not the key itself; the value is not shown"
        ])
        expect(JSON.stringify(exit)).not.toContain(pasted)
        expect(JSON.stringify(problems)).not.toContain("Abc123")
      }
    }).pipe(Effect.scoped)
  )

  it.live("names an unknown provider kind with the known ones, and bad simulate settings, by path with the rest", () =>
    Effect.gen(function* () {
      const path = yield* configFile(
        [
          "upstreams:",
          "  - { id: a, provider: bedrock, baseUrl: https://bedrock.example.com/v1 }",
          "  - { id: b, provider: simulated, simulate: { failureRate: 1.5 } }",
          "  - { id: c, provider: openai-compatible }",
          "pools:",
          "  - { id: p, models: [m], upstreams: [a, b, c] }"
        ].join("\n")
      )
      const { exit, problems } = yield* complete(["validate", "--config", path])
      expect(Exit.isFailure(exit)).toBe(true)
      expect(problems).toEqual([
        "upstreams[0].provider: unknown provider 'bedrock'; known: openai, openai-compatible, azure, groq, mistral, together, deepseek, openrouter, fireworks, cerebras, xai, cohere, vllm, lmstudio, ollama, anthropic, gemini, simulated",
        "upstreams[1].simulate.failureRate: Expected a number between 0 and 1, actual 1.5",
        "upstreams[2].baseUrl: required for provider 'openai-compatible'"
      ])
    }).pipe(Effect.scoped)
  )

  it.live("asks for --config", () =>
    Effect.gen(function* () {
      const { exit } = yield* complete(["validate"])
      expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && String(exit.cause.error)).toContain(
        "--config FILE is required"
      )
    }).pipe(Effect.scoped)
  )
})

describe("strict flags", () => {
  const message = (exit: Exit.Exit<void, unknown>) =>
    Exit.isFailure(exit) && exit.cause._tag === "Fail" ? String((exit.cause.error as Error).message) : ""

  it.live(
    "serve refuses an unknown flag, its stray value and a flag without its value, listing all, instead of starting",
    () =>
      Effect.gen(function* () {
        const { exit } = yield* complete(["serve", "--port", "9999", "--config"])
        expect(message(exit)).toContain(
          "sluice serve: 3 problems:\n  - unknown flag --port; known: --config, --watch\n  - --config needs a value\n  - unexpected argument '9999'"
        )
      }).pipe(Effect.scoped)
  )

  it.live("validate lists a missing value, a value given to nothing and a stray argument at once", () =>
    Effect.gen(function* () {
      const { exit } = yield* complete(["validate", "--config", "--verbose", "extra"])
      expect(message(exit)).toContain(
        "sluice validate: 3 problems:\n  - --config needs a value\n  - unknown flag --verbose; known: --config\n  - unexpected argument 'extra'"
      )
    }).pipe(Effect.scoped)
  )
})

describe("sluice simulate", () => {
  it.live("runs a simulated upstream that answers 200, then 429 with retry-after and x-ratelimit-* past --rpm", () =>
    Effect.gen(function* () {
      const run = yield* start(["simulate", "--port", "0", "--rpm", "2", "--name", "cli-sim"])
      const [, url] = yield* run.waitFor(/listening on (http:\/\/127\.0\.0\.1:\d+)/)
      const ask = () =>
        Effect.promise(() =>
          fetch(`${url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ model: "sim-model", messages: [{ role: "user", content: "Hi" }] })
          }).then(async (r) => ({ status: r.status, headers: r.headers, body: await r.text() }))
        )
      const first = yield* ask()
      const second = yield* ask()
      const third = yield* ask()
      expect([first.status, second.status, third.status]).toEqual([200, 200, 429])
      expect(first.body).toContain("[cli-sim]")
      expect(first.headers.get("x-ratelimit-limit-requests")).toBe("2")
      expect(first.headers.get("x-ratelimit-remaining-requests")).toBe("1")
      expect(Number(third.headers.get("retry-after"))).toBeGreaterThan(0)
      expect(third.headers.get("x-ratelimit-limit-requests")).toBe("2")
      expect(third.headers.get("x-ratelimit-remaining-requests")).toBe("0")
      expect(third.headers.get("x-ratelimit-reset-requests")).toMatch(/^\d+(\.\d+)?m?s$|^\d+m\d+(\.\d+)?s$/)
      expect(JSON.parse(third.body)).toMatchObject({ error: { type: "requests", code: "rate_limit_exceeded" } })
      yield* Fiber.interrupt(run.fiber)
      expect(yield* refused(`${url}/health`)).toBe(true)
    }).pipe(Effect.scoped)
  )

  it.live("rejects a bad flag, naming it", () =>
    Effect.gen(function* () {
      const { exit } = yield* complete(["simulate", "--failure-rate", "2"])
      expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && String(exit.cause.error)).toContain(
        "--failure-rate: expected a probability between 0 and 1, got '2'"
      )
    }).pipe(Effect.scoped)
  )
})

describe("sluice status, breaker reset, upstream disable|enable, reload (through the admin API)", () => {
  const TOKEN = "adm-cli-0123456789abcdef"
  const operated = () => {
    const config = simulatedConfig(
      [{ id: "a", simulate: { failureRate: 1 }, circuitBreaker: { failureThreshold: 1 } }, { id: "b" }],
      [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["a", "b"] }]
    )
    return {
      ...config,
      server: Schema.decodeUnknownSync(Config.ServerConfig)({ admin: { tokenEnv: "SLUICE_CLI_ADMIN_TOKEN" } })
    }
  }
  const failure = (exit: Exit.Exit<void, unknown>) =>
    Exit.isFailure(exit) && exit.cause._tag === "Fail" ? String((exit.cause.error as Error).message) : ""

  it.live("shows the status, resets a breaker, disables and enables an upstream", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(operated(), { env: { SLUICE_CLI_ADMIN_TOKEN: TOKEN } })
      const env = { SLUICE_ADMIN_TOKEN: TOKEN, SLUICE_URL: gateway.url }
      // a fails and its breaker opens.
      for (let i = 0; i < 3; i++)
        yield* Effect.promise(() =>
          gateway.client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
        )
      const status = yield* complete(["status"], env)
      expect(Exit.isSuccess(status.exit)).toBe(true)
      expect(status.stdout).toContain("chat: gpt-4o-mini (round-robin; queue 0) -> a, b")
      expect(status.stdout).toMatch(/a \[simulated\]: healthy, breaker open \(1 failures\)/)
      const reset = yield* complete(["breaker", "reset", "a"], env)
      expect(failure(reset.exit)).toBe("")
      expect(reset.stdout).toContain("breaker of a reset: closed")
      const disabled = yield* complete(["upstream", "disable", "a", "--url", gateway.url], env)
      expect(disabled.stdout).toContain("a disabled: generation 2 serves new requests")
      expect((yield* complete(["status"], env)).stdout).toContain("a [simulated] DISABLED")
      expect((yield* complete(["upstream", "enable", "a"], env)).stdout).toContain("a enabled: generation 3")
      const unknown = yield* complete(["breaker", "reset", "nope"], env)
      expect(failure(unknown.exit)).toContain("no upstream 'nope'; known: a, b")
      // Not started from a file.
      expect(failure((yield* complete(["reload"], env)).exit)).toContain("not started from a config file")
      expect(
        failure((yield* complete(["status"], { ...env, SLUICE_ADMIN_TOKEN: "wrong-token-value" })).exit)
      ).toContain("refused the admin token")
    }).pipe(Effect.scoped)
  )

  it.live("reload swaps in the file the gateway was started from, and refuses an invalid one by path", () =>
    Effect.gen(function* () {
      const yaml = (models: string, weight = 1) =>
        [
          "server: { admin: { tokenEnv: SLUICE_CLI_ADMIN_TOKEN } }",
          "upstreams:",
          `  - { id: a, provider: simulated, weight: ${weight} }`,
          "pools:",
          `  - { id: chat, models: [${models}], upstreams: [a] }`
        ].join("\n")
      const path = yield* configFile(yaml("gpt-4o-mini"))
      const gateway = yield* startGateway(
        {
          ...simulatedConfig([{ id: "a" }], [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["a"] }]),
          server: operated().server
        },
        // The refused reload's warning is collected rather than printed.
        { env: { SLUICE_CLI_ADMIN_TOKEN: TOKEN }, reload: { path }, logs: [] }
      )
      const env = { SLUICE_ADMIN_TOKEN: TOKEN, SLUICE_URL: gateway.url }
      const ask = (model: string) =>
        Effect.promise(() =>
          gateway.client.chat.completions.create({ model, messages: [{ role: "user", content: "Hi" }] }).then(
            (answer) => answer.choices[0]?.finish_reason ?? "none",
            (error: { status?: number }) => String(error.status)
          )
        )
      expect(yield* ask("gpt-4o")).toBe("404")
      writeFileSync(path, yaml("gpt-4o-mini, gpt-4o"))
      const reloaded = yield* complete(["reload"], env)
      expect(failure(reloaded.exit)).toBe("")
      expect(reloaded.stdout).toBe("reloaded: generation 2 serves new requests")
      expect(yield* ask("gpt-4o")).toBe("stop")
      // An invalid file: every problem by path, and generation 2 keeps serving.
      writeFileSync(path, yaml("gpt-4o-mini", -3))
      const refusedReload = yield* complete(["reload"], env)
      expect(failure(refusedReload.exit)).toMatch(/^refused; the running config stays:\n {2}- .*upstreams\[0\]\.weight/)
      expect(yield* ask("gpt-4o")).toBe("stop")
      expect((yield* complete(["status"], env)).stdout).toMatch(/^generation 2\n/)
    }).pipe(Effect.scoped)
  )

  it.live("lists every problem of a command line at once, the token's variable included", () =>
    Effect.gen(function* () {
      const { exit } = yield* complete(["upstream", "pause", "--url", "--verbose"])
      expect(failure(exit)).toContain(
        [
          "sluice upstream: 4 problems:",
          "  - --url needs a value",
          "  - unknown flag --verbose; known: --url, --token-env",
          "  - expected: sluice upstream disable|enable ID",
          "  - set the admin token in SLUICE_ADMIN_TOKEN (the gateway's server.admin.tokenEnv)"
        ].join("\n")
      )
      const down = yield* complete(["status", "--url", "http://127.0.0.1:1"], { SLUICE_ADMIN_TOKEN: TOKEN })
      expect(failure(down.exit)).toContain("cannot reach the admin API at http://127.0.0.1:1")
    }).pipe(Effect.scoped)
  )
})
