/**
 * The packages as a user gets them: `npm pack` each one (its `prepack` builds it), install the
 * tarballs into a fresh project (from the npm cache when it has them, as after `npm ci`), then
 *
 * - run `consumer/smoke.mjs` there with plain `node`: every package imported and used for real;
 * - run the installed `sluice` bin: `--help`, `validate`, and `serve` answering a chat request;
 * - type-check `consumer/check.ts` and the TypeScript snippet of each package's README with this
 *   repository's `tsc`, strict and NodeNext, against the installed `.d.ts`.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import type { SpawnOptions } from "node:child_process"
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { Strategies } from "../packages/strategies/src/index.js"

const root = fileURLToPath(new URL("..", import.meta.url))
const consumer = fileURLToPath(new URL("consumer/", import.meta.url))
const names = ["core", "strategies", "providers", "server"] as const

/**
 * This process's environment without npm's `npm_*` variables: under `npm test` they carry the
 * repository's own settings (its prefix, its command), which would leak into the nested npm runs.
 */
const environment = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {}
  for (const [name, value] of Object.entries(process.env)) if (!name.toLowerCase().startsWith("npm_")) env[name] = value
  for (const name of ["PORT", "HOST", "OTEL_EXPORTER_OTLP_ENDPOINT"]) delete env[name]
  return { ...env, ...extra }
}

interface Ran {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs a command to its end; never rejects on a non-zero exit, the caller asserts the code. */
const run = (command: string, args: ReadonlyArray<string>, options: SpawnOptions = {}): Promise<Ran> =>
  new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: environment(), ...options, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout?.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")))
    child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString("utf8")))
    child.once("error", reject)
    child.once("close", (code) => resolve({ code, stdout, stderr }))
  })

/** What `npm pack --json` reports of one tarball. */
interface Packed {
  readonly name: string
  readonly filename: string
  readonly files: ReadonlyArray<{ readonly path: string }>
}

/** The ```ts blocks of a markdown file. */
const typescriptBlocks = (markdown: string): Array<string> =>
  [...markdown.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((match) => match[1] ?? "")

describe("the packages as published", () => {
  let dir: string
  let app: string
  let packed: ReadonlyArray<Packed>
  let installed: Ran

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "sluice-pack-"))
    app = join(dir, "app")
    const packs = join(dir, "packs")
    mkdirSync(app)
    mkdirSync(packs)
    const pack = await run(
      "npm",
      ["pack", "--json", "--pack-destination", packs, ...names.flatMap((name) => ["-w", `packages/${name}`])],
      { cwd: root }
    )
    if (pack.code !== 0) throw new Error(`npm pack exited ${pack.code}:\n${pack.stderr}`)
    packed = JSON.parse(pack.stdout.slice(pack.stdout.indexOf("["))) as ReadonlyArray<Packed>

    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }))
    const typesNode = JSON.parse(readFileSync(join(root, "node_modules/@types/node/package.json"), "utf8")) as {
      readonly version: string
    }
    installed = await run(
      "npm",
      [
        "install",
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
        ...packed.map((p) => join(packs, p.filename)),
        `@types/node@${typesNode.version}`
      ],
      { cwd: app }
    )
    if (installed.code !== 0) throw new Error(`npm install exited ${installed.code}:\n${installed.stderr}`)
  }, 240_000)

  afterAll(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  }, 120_000)

  it("packs every package with its build, README and LICENSE, and no tests or configs", () => {
    expect(packed.map((p) => p.name)).toEqual(names.map((name) => `@sluice/${name}`))
    for (const p of packed) {
      const paths = p.files.map((f) => f.path)
      expect(paths).toEqual(expect.arrayContaining(["package.json", "README.md", "LICENSE", "dist/index.js"]))
      expect(paths).toContain("dist/index.d.ts")
      expect(paths.filter((path) => /(^|\/)test\/|\.test\.|tsconfig|tsbuildinfo|vitest/.test(path))).toEqual([])
      expect(
        paths.filter((path) => !/^(dist|src|bin|config)\/|^(package\.json|README\.md|LICENSE)$/.test(path))
      ).toEqual([])
    }
    const core = packed.find((p) => p.name === "@sluice/core")!.files.map((f) => f.path)
    // TokenCounter's compiled code starts its worker from ./internal/tokenWorker.mjs beside it.
    expect(core).toContain("dist/internal/tokenWorker.mjs")
    const server = packed.find((p) => p.name === "@sluice/server")!.files.map((f) => f.path)
    expect(server).toEqual(expect.arrayContaining(["bin/sluice.js", "config/default.yaml", "dist/Cli.js"]))
  })

  it("installs without deprecation warnings", () => {
    expect(installed.stderr).not.toMatch(/deprecat/i)
  })

  it("runs from plain Node ESM: every package imported and used", async () => {
    copyFileSync(join(consumer, "smoke.mjs"), join(app, "smoke.mjs"))
    const result = await run(process.execPath, ["smoke.mjs"], { cwd: app })
    expect(result.stderr).toBe("")
    expect(result.code).toBe(0)
    const seen = JSON.parse(result.stdout.trim().split("\n").at(-1) ?? "") as Record<string, unknown>
    expect(seen).toEqual({
      pool: { strategy: "round-robin", maxAttempts: 1, sameModule: true },
      matched: "chat",
      error: {
        status: 404,
        code: "model_not_found",
        message: "no pool serves model 'gpt-5'; known models: gpt-4o-mini"
      },
      internal: "ERR_PACKAGE_PATH_NOT_EXPORTED",
      tokens: { tokens: expect.any(Number), exact: true, offThread: 1 },
      strategies: {
        // The packed build registers what the sources do.
        names: [...Strategies.names],
        weighted: "built",
        unknown: [expect.stringContaining("pools.chat.strategy")]
      },
      routed: { upstream: "sim", outcome: "success", content: expect.stringContaining("[sim]") },
      server: { usage: "Sluice — an OpenAI-compatible LLM load balancer", defaultConfig: true }
    })
  }, 60_000)

  it("runs the sluice bin: help, and validate naming each problem by path", async () => {
    const bin = join(app, "node_modules/.bin/sluice")
    const help = await run(bin, ["--help"], { cwd: app })
    expect(help.code).toBe(0)
    expect(help.stdout).toContain("sluice serve [--config FILE]")

    writeFileSync(
      join(app, "good.yaml"),
      "upstreams:\n  - { id: sim, provider: simulated }\npools:\n  - { id: chat, models: [gpt-4o-mini], upstreams: [sim] }\n"
    )
    const good = await run(bin, ["validate", "--config", "good.yaml"], { cwd: app })
    expect(good.stderr).toBe("")
    expect(good.stdout).toBe("good.yaml: valid (1 pools, 1 upstreams)\n")
    expect(good.code).toBe(0)

    writeFileSync(
      join(app, "bad.yaml"),
      "upstreams:\n  - { id: sim, provider: simulated, weight: -3 }\npools:\n  - { id: chat, models: [gpt-4o-mini], upstreams: [sim], strategy: fastest }\n"
    )
    const bad = await run(bin, ["validate", "--config", "bad.yaml"], { cwd: app })
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain("upstreams[0].weight")
    expect(bad.stderr).toContain("pools[0].strategy: unknown strategy 'fastest'")
  }, 60_000)

  it("serves the embedded default config with the installed bin and answers a chat request", async () => {
    const child = spawn(join(app, "node_modules/.bin/sluice"), ["serve"], {
      cwd: app,
      env: environment({ PORT: "0" }),
      stdio: ["ignore", "pipe", "pipe"]
    })
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
    try {
      let stdout = ""
      child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString("utf8")))
      const base = await new Promise<string>((resolve, reject) => {
        child.stdout.on("data", () => {
          const match = /Sluice gateway listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stdout)
          if (match !== null) resolve(match[1]!)
        })
        void exited.then((code) => reject(new Error(`sluice serve exited ${code} before listening:\n${stdout}`)))
      })
      const response = await fetch(`${base}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello!" }] })
      })
      expect(response.status).toBe(200)
      const body = (await response.json()) as { choices: Array<{ message: { content: string } }> }
      expect(body.choices[0]?.message.content).toMatch(/^\[sim-(fast|slow)\] /)
    } finally {
      child.kill("SIGTERM")
    }
    expect(await exited).toBe(0)
  }, 60_000)

  it("type-checks a strict NodeNext TypeScript consumer and every README snippet against the .d.ts", async () => {
    copyFileSync(join(consumer, "check.ts"), join(app, "check.ts"))
    for (const name of names) {
      const readme = readFileSync(join(app, "node_modules/@sluice", name, "README.md"), "utf8")
      const blocks = typescriptBlocks(readme)
      expect(blocks.length, `@sluice/${name} README has a TypeScript snippet`).toBeGreaterThan(0)
      blocks.forEach((block, i) => writeFileSync(join(app, `readme-${name}-${i}.ts`), block))
    }
    writeFileSync(
      join(app, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          lib: ["ES2022"],
          module: "NodeNext",
          moduleResolution: "NodeNext",
          types: ["node"],
          strict: true,
          exactOptionalPropertyTypes: true,
          noUncheckedIndexedAccess: true,
          verbatimModuleSyntax: true,
          // Effect's own .d.ts need the DOM library and @types/ws; what is ours is checked through
          // the code above, where a type that failed to resolve would be `any` and fail the
          // `@ts-expect-error` lines of check.ts.
          skipLibCheck: true,
          noEmit: true
        },
        include: ["*.ts"]
      })
    )
    const tsc = await run(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json"], {
      cwd: app
    })
    expect(tsc.stdout + tsc.stderr).toBe("")
    expect(tsc.code).toBe(0)
  }, 120_000)
})
