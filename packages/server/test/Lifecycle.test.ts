/**
 * Health endpoints, drains and reloads. Drains and signals are the real `sluice` bin in a child
 * process: the exit code and the signals are the point.
 */
import { describe, expect, it } from "@effect/vitest"
import type { Scope } from "effect"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { connect } from "node:net"
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import OpenAI from "openai"
import { simulatedConfig, startGateway } from "./harness.js"

const repoRoot = fileURLToPath(new URL("../../../", import.meta.url))
const bin = fileURLToPath(new URL("../bin/sluice.js", import.meta.url))

/** A config file in a temporary directory (removed when the scope closes), and how to rewrite it. */
const configFile = (yaml: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const dir = mkdtempSync(join(tmpdir(), "sluice-life-"))
      const path = join(dir, "sluice.yaml")
      writeFileSync(path, yaml)
      return { path, write: (text: string) => writeFileSync(path, text) }
    }),
    ({ path }) => Effect.sync(() => rmSync(join(path, ".."), { recursive: true, force: true }))
  )

/** The real bin serving `path` on a free loopback port; killed if still running when the scope closes. */
const serve = (
  argv: ReadonlyArray<string>,
  extra: Readonly<Record<string, string>> = {},
  /** A file for the child's standard output (else a pipe the test reads, a socket to the child). */
  stdoutFile?: string
): Effect.Effect<Child, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() => {
      const env: NodeJS.ProcessEnv = { ...process.env, PORT: "0", HOST: "127.0.0.1", ...extra }
      delete env["OTEL_EXPORTER_OTLP_ENDPOINT"]
      const out = stdoutFile === undefined ? "pipe" : openSync(stdoutFile, "w")
      const child = spawn(process.execPath, [bin, "serve", ...argv], {
        cwd: repoRoot,
        env,
        stdio: ["ignore", out, "pipe"]
      })
      if (typeof out === "number") closeSync(out)
      let piped = ""
      child.stdout?.on("data", (chunk: Buffer) => (piped += chunk.toString("utf8")))
      child.stderr?.on("data", (chunk: Buffer) => (piped += chunk.toString("utf8")))
      const output = () => (stdoutFile === undefined ? piped : readFileSync(stdoutFile, "utf8") + piped)
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
      const waitFor = (pattern: RegExp, timeoutMs = 10_000) =>
        new Promise<RegExpExecArray>((resolve, reject) => {
          const started = Date.now()
          const poll = () => {
            const match = pattern.exec(output())
            if (match !== null) return resolve(match)
            if (child.exitCode !== null || Date.now() - started > timeoutMs)
              return reject(new Error(`no ${pattern} in: ${output()}`))
            setTimeout(poll, 10)
          }
          poll()
        })
      return waitFor(/listening on (http:\/\/127\.0\.0\.1:\d+)/).then((match) => ({
        child,
        exited,
        url: match[1]!,
        output,
        waitFor
      }))
    }),
    ({ child, exited }) =>
      Effect.promise(() => {
        if (child.exitCode !== null || child.signalCode !== null) return exited
        child.kill("SIGKILL")
        return exited
      })
  )

/** Resolves once the child's standard output has ended (all it wrote has been read). */
const ended = (child: ReturnType<typeof spawn>) =>
  new Promise<void>((resolve) => {
    if (child.stdout === null || child.stdout.readableEnded) resolve()
    else child.stdout.once("end", resolve)
  })

interface Child {
  readonly child: ReturnType<typeof spawn>
  readonly exited: Promise<number | null>
  readonly url: string
  readonly output: () => string
  readonly waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<RegExpExecArray>
}

/** A config of one simulated upstream streaming `words` words at `perSecond`. */
const streaming = (
  drainMs: number,
  words: number,
  perSecond: number,
  models: ReadonlyArray<string> = ["gpt-4o-mini"]
) =>
  [
    `server: { drainMs: ${drainMs} }`,
    "upstreams:",
    `  - { id: sim, provider: simulated, simulate: { completionTokens: ${words}, tokensPerSecond: ${perSecond} } }`,
    "pools:",
    `  - { id: chat, models: [${models.join(", ")}], upstreams: [sim], queue: { maxSize: 0 } }`
  ].join("\n")

/**
 * Opens a stream and reads it to its end in the background: `started` resolves at its first chunk,
 * `ended` with the chunks' text, the last finish reason and the error the SDK raised, if any.
 */
const openStream = (client: OpenAI) => {
  let first: () => void = () => {}
  const started = new Promise<void>((resolve) => (first = resolve))
  const ended = (async () => {
    let text = ""
    let finish: string | null = null
    try {
      const stream = await client.chat.completions.create({
        model: "gpt-4o-mini",
        messages: [{ role: "user", content: "Hi" }],
        stream: true
      })
      for await (const chunk of stream) {
        first()
        text += chunk.choices[0]?.delta.content ?? ""
        finish = chunk.choices[0]?.finish_reason ?? finish
      }
      return { text, finish, error: undefined as unknown }
    } catch (error) {
      first()
      return { text, finish, error }
    }
  })()
  return { started, ended }
}

/**
 * One TCP connection to the gateway, spoken to in raw HTTP/1.1 so the test knows which connection a
 * request goes over: what was received so far, and a wait for a pattern in it.
 */
const rawConnection = (url: string) =>
  Effect.acquireRelease(
    Effect.async<RawConnection>((resume) => {
      const { hostname, port } = new URL(url)
      let received = ""
      const socket = connect(Number(port), hostname, () =>
        resume(
          Effect.succeed({
            send: (text) => void socket.write(text),
            received: () => received,
            waitFor: (pattern, timeoutMs = 10_000) =>
              new Promise((resolve, reject) => {
                const started = Date.now()
                const poll = () => {
                  const match = pattern.exec(received)
                  if (match !== null) return resolve(match)
                  if (socket.destroyed || Date.now() - started > timeoutMs)
                    return reject(new Error(`no ${pattern} in: ${received}`))
                  setTimeout(poll, 10)
                }
                poll()
              }),
            destroy: () => socket.destroy()
          })
        )
      )
      socket.setEncoding("utf8")
      socket.on("data", (chunk: string) => (received += chunk))
      socket.on("error", () => {})
    }),
    (connection) => Effect.sync(connection.destroy)
  )

interface RawConnection {
  readonly send: (text: string) => void
  readonly received: () => string
  readonly waitFor: (pattern: RegExp, timeoutMs?: number) => Promise<RegExpExecArray>
  readonly destroy: () => void
}

/** A streamed chat request for `model` as raw HTTP/1.1 (the connection kept alive). */
const rawStreamRequest = (model: string) => {
  const body = JSON.stringify({ model, messages: [{ role: "user", content: "Hi" }], stream: true })
  return `POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
}

const clientOf = (url: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: "none", maxRetries: 0, timeout: 30_000 })

describe("health endpoints", () => {
  it.live("/health/live answers while the process runs; /health/ready names each pool's usable upstreams", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig(
          [{ id: "a" }, { id: "b", enabled: false }],
          [{ id: "chat", models: ["m"], upstreams: ["a", "b"] }]
        )
      )
      const live = yield* Effect.promise(() => fetch(`${gateway.url}/health/live`))
      expect(live.status).toBe(200)
      const ready = yield* Effect.promise(() => fetch(`${gateway.url}/health/ready`))
      expect(ready.status).toBe(200)
      expect(yield* Effect.promise(() => ready.json())).toEqual({ status: "ready", pools: { chat: ["a"] } })
    }).pipe(Effect.scoped)
  )

  it.live("/health/ready answers 503 when no pool has an upstream that can take requests", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(
        simulatedConfig([{ id: "a", enabled: false }], [{ id: "chat", models: ["m"], upstreams: ["a"] }])
      )
      const ready = yield* Effect.promise(() => fetch(`${gateway.url}/health/ready`))
      expect(ready.status).toBe(503)
      expect(yield* Effect.promise(() => ready.json())).toEqual({ status: "unavailable", pools: { chat: [] } })
      // The old endpoint keeps its meaning: the process is up.
      expect((yield* Effect.promise(() => fetch(`${gateway.url}/health`))).status).toBe(200)
    }).pipe(Effect.scoped)
  )
})

describe("standard output (the bin)", () => {
  const cases = [
    { what: "the access lines and the audit lines go to it", server: (_dir: string) => "audit: { sink: stdout }" },
    {
      what: "JSON access lines, the audit file's thread running",
      server: (dir: string) =>
        `log: { format: json }, audit: { sink: file, path: ${JSON.stringify(join(dir, "audit.jsonl"))} }`
    }
  ]
  for (const { what, server } of cases)
    it.live(
      `keeps serving when its standard output's reader is gone, dropping the lines it cannot write (${what})`,
      () =>
        Effect.gen(function* () {
          const config = streaming(1_000, 3, 1_000)
          const file = yield* configFile(config)
          file.write(config.replace("{ drainMs: 1000 }", `{ drainMs: 1000, ${server(join(file.path, ".."))} }`))
          expect(readFileSync(file.path, "utf8")).toContain("sink:")
          const gateway = yield* serve(["--config", file.path])
          // The reader of the pipe goes away: every later write to it fails with EPIPE.
          gateway.child.stdout?.destroy()
          const client = clientOf(gateway.url)
          for (let i = 0; i < 5; i++) {
            const answer = yield* Effect.promise(() =>
              client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
            )
            expect(answer.choices[0]?.finish_reason).toBe("stop")
            // Past the access lines' 10 ms (the audit file thread's 20): each request's line is written
            // (and fails) before the next.
            yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 30)))
          }
          expect((yield* Effect.promise(() => fetch(`${gateway.url}/health/live`))).status).toBe(200)
          expect(gateway.child.exitCode).toBeNull()
          // Nothing else failed for it: the audit file's thread, say, still writes.
          expect(gateway.output()).not.toMatch(/no longer written|cannot be written|failed/)
        }).pipe(Effect.scoped),
      30_000
    )
})

// /dev/full, where every write fails, is Linux's.
describe.skipIf(process.platform !== "linux")("the audit file (the bin)", () => {
  it.live(
    "keeps serving when the file cannot be written, and says so once",
    () =>
      Effect.gen(function* () {
        // Every write to /dev/full fails (ENOSPC).
        const file = yield* configFile(
          streaming(1_000, 3, 1_000).replace(
            "{ drainMs: 1000 }",
            "{ drainMs: 1000, audit: { sink: file, path: /dev/full } }"
          )
        )
        const gateway = yield* serve(["--config", file.path])
        const client = clientOf(gateway.url)
        for (let i = 0; i < 3; i++) {
          const answer = yield* Effect.promise(() =>
            client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
          )
          expect(answer.choices[0]?.finish_reason).toBe("stop")
          // Past the writer thread's round (20 ms): each entry's write fails before the next request.
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 50)))
        }
        yield* Effect.promise(() => gateway.waitFor(/the audit file \/dev\/full cannot be written/))
        // More failed writes after the first: still said once.
        for (let i = 0; i < 3; i++) {
          yield* Effect.promise(() =>
            client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
          )
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 50)))
        }
        expect(gateway.output().match(/cannot be written/g)).toHaveLength(1)
        expect((yield* Effect.promise(() => fetch(`${gateway.url}/health/live`))).status).toBe(200)
      }).pipe(Effect.scoped),
    30_000
  )
})

describe("drain on SIGTERM (the bin)", () => {
  it.live(
    "lets 50 open streams finish, refuses new connections meanwhile, and exits 0",
    () =>
      Effect.gen(function* () {
        // Each stream takes about 1.5 s; the drain allows 10 s. The audit log goes to a file.
        const config = streaming(10_000, 30, 20)
        const file = yield* configFile(config)
        const auditPath = join(file.path, "..", "audit.jsonl")
        file.write(
          config.replace(
            "{ drainMs: 10000 }",
            `{ drainMs: 10000, audit: { sink: file, path: ${JSON.stringify(auditPath)} } }`
          )
        )
        expect(readFileSync(file.path, "utf8")).toContain("sink: file")
        const gateway = yield* serve(["--config", file.path])
        const client = clientOf(gateway.url)
        const streams = Array.from({ length: 50 }, () => openStream(client))
        yield* Effect.promise(() => Promise.all(streams.map((s) => s.started)))
        const signalled = Date.now()
        gateway.child.kill("SIGTERM")
        yield* Effect.promise(() => gateway.waitFor(/draining/))
        const refused = yield* Effect.promise(() =>
          fetch(`${gateway.url}/health/live`).then(
            () => "answered",
            () => "refused"
          )
        )
        expect(refused).toBe("refused")
        const results = yield* Effect.promise(() => Promise.all(streams.map((s) => s.ended)))
        for (const result of results) {
          expect(result.error).toBeUndefined()
          expect(result.finish).toBe("stop")
        }
        expect(yield* Effect.promise(() => gateway.exited)).toBe(0)
        expect(Date.now() - signalled).toBeLessThan(10_000)
        // Every stream's access line reached standard output, the last ones as the process exited.
        yield* Effect.promise(() => ended(gateway.child))
        expect(gateway.output().match(/INFO \(\): 200 chat stream req_\w+ pool=chat upstream=sim /g)).toHaveLength(50)
        // And every stream's audit entry reached the file (its writer thread wrote them before the exit).
        const audited = readFileSync(auditPath, "utf8")
          .split("\n")
          .filter((l) => l !== "")
        expect(audited.map((l) => (JSON.parse(l) as { decision: { outcome: string } }).decision.outcome)).toEqual(
          Array.from({ length: 50 }, () => "success")
        )
      }).pipe(Effect.scoped),
    30_000
  )

  it.live(
    "with the audit file on, writes each JSON access line whole, once and in order, the last as it exits",
    () =>
      Effect.gen(function* () {
        // Standard output a file: the audit file's thread writes the access lines (JSON, at info).
        // (A pipe the test reads would be a socket, where the event loop writes them.)
        const config = streaming(10_000, 3, 10_000)
        const file = yield* configFile(config)
        const auditPath = join(file.path, "..", "audit.jsonl")
        file.write(
          config.replace(
            "{ drainMs: 10000 }",
            `{ drainMs: 10000, log: { level: info, format: json }, audit: { sink: file, path: ${JSON.stringify(auditPath)} } }`
          )
        )
        const gateway = yield* serve(["--config", file.path], {}, join(file.path, "..", "stdout.log"))
        const client = clientOf(gateway.url)
        const ids: Array<string | null> = []
        // 400 requests, 40 at a time: the lines of many come in one round of the thread.
        for (let round = 0; round < 10; round++)
          ids.push(
            ...(yield* Effect.promise(() =>
              Promise.all(
                Array.from({ length: 40 }, () =>
                  client.chat.completions
                    .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
                    .withResponse()
                    .then(({ response }) => response.headers.get("x-request-id"))
                )
              )
            ))
          )
        gateway.child.kill("SIGTERM")
        expect(yield* Effect.promise(() => gateway.exited)).toBe(0)
        yield* Effect.promise(() => ended(gateway.child))
        // Every line on standard output is one whole JSON object (the event loop's log lines among them).
        const lines = gateway
          .output()
          .split("\n")
          .filter((l) => l.startsWith("{"))
        const records = lines.map(
          (l) => JSON.parse(l) as { message: { msg?: string; requestId?: string; status?: number } }
        )
        const access = records.filter((r) => r.message.msg === "request")
        expect(access).toHaveLength(400)
        expect(new Set(access.map((r) => r.message.requestId))).toEqual(new Set(ids))
        expect(access.every((r) => r.message.status === 200)).toBe(true)
        // In the audit file's order: both come from one ring.
        const audited = readFileSync(auditPath, "utf8")
          .split("\n")
          .filter((l) => l !== "")
          .map((l) => (JSON.parse(l) as { decision: { requestId: string } }).decision.requestId)
        expect(access.map((r) => r.message.requestId)).toEqual(audited)
      }).pipe(Effect.scoped),
    30_000
  )

  it.live(
    "past drainMs ends the streams left with the in-band error, then exits 0",
    () =>
      Effect.gen(function* () {
        // Each stream takes about 10 s; the drain allows 300 ms.
        const file = yield* configFile(streaming(300, 100, 10))
        const gateway = yield* serve(["--config", file.path])
        const client = clientOf(gateway.url)
        const streams = Array.from({ length: 5 }, () => openStream(client))
        yield* Effect.promise(() => Promise.all(streams.map((s) => s.started)))
        const signalled = Date.now()
        gateway.child.kill("SIGTERM")
        const results = yield* Effect.promise(() => Promise.all(streams.map((s) => s.ended)))
        for (const result of results) {
          expect(result.finish).toBeNull()
          expect(String(result.error)).toContain("the gateway shut down before this stream finished")
        }
        expect(yield* Effect.promise(() => gateway.exited)).toBe(0)
        expect(Date.now() - signalled).toBeLessThan(5_000)
      }).pipe(Effect.scoped),
    30_000
  )
})

describe("drain on SIGINT (the bin)", () => {
  it.live(
    "lets open streams finish, refuses new connections meanwhile, and exits 0, as on SIGTERM",
    () =>
      Effect.gen(function* () {
        const file = yield* configFile(streaming(10_000, 30, 20))
        const gateway = yield* serve(["--config", file.path])
        const client = clientOf(gateway.url)
        const streams = Array.from({ length: 10 }, () => openStream(client))
        yield* Effect.promise(() => Promise.all(streams.map((s) => s.started)))
        gateway.child.kill("SIGINT")
        yield* Effect.promise(() => gateway.waitFor(/draining: 10 requests in flight/))
        const refused = yield* Effect.promise(() =>
          fetch(`${gateway.url}/health/live`).then(
            () => "answered",
            () => "refused"
          )
        )
        expect(refused).toBe("refused")
        const results = yield* Effect.promise(() => Promise.all(streams.map((s) => s.ended)))
        for (const result of results) {
          expect(result.error).toBeUndefined()
          expect(result.finish).toBe("stop")
          expect(result.text).not.toBe("")
        }
        expect(yield* Effect.promise(() => gateway.exited)).toBe(0)
        expect(gateway.child.signalCode).toBeNull()
      }).pipe(Effect.scoped),
    30_000
  )
})

describe("readiness while draining (the bin)", () => {
  it.live(
    "answers /health/ready 503 draining on a kept-alive connection while streams in flight finish",
    () =>
      Effect.gen(function* () {
        // A stream of about 1 s on the connection the probe reuses, one of about 5 s that keeps the drain going.
        const file = yield* configFile(
          [
            "server: { drainMs: 20000 }",
            "upstreams:",
            "  - { id: quick, provider: simulated, simulate: { completionTokens: 20, tokensPerSecond: 20 } }",
            "  - { id: slow, provider: simulated, simulate: { completionTokens: 100, tokensPerSecond: 20 } }",
            "pools:",
            "  - { id: quick, models: [quick], upstreams: [quick] }",
            "  - { id: slow, models: [gpt-4o-mini], upstreams: [slow] }"
          ].join("\n")
        )
        const gateway = yield* serve(["--config", file.path])
        const probe = yield* rawConnection(gateway.url)
        probe.send("GET /health/ready HTTP/1.1\r\nhost: gateway\r\n\r\n")
        yield* Effect.promise(() => probe.waitFor(/^HTTP\/1\.1 200 [^]*"status":"ready"/))
        const long = openStream(clientOf(gateway.url))
        yield* Effect.promise(() => long.started)
        // The probe's connection is busy when the drain starts, so the drain does not close it as idle.
        probe.send(rawStreamRequest("quick"))
        yield* Effect.promise(() => probe.waitFor(/HTTP\/1\.1 200 [^]*HTTP\/1\.1 200 [^]*data: /))
        gateway.child.kill("SIGTERM")
        yield* Effect.promise(() => gateway.waitFor(/draining: 2 requests in flight/))
        // The short stream ends in full; the same connection then asks whether the gateway is ready.
        yield* Effect.promise(() => probe.waitFor(/data: \[DONE\]\n\n\r\n0\r\n\r\n$/))
        probe.send("GET /health/ready HTTP/1.1\r\nhost: gateway\r\n\r\n")
        const [, answer] = yield* Effect.promise(() =>
          probe.waitFor(/0\r\n\r\n(HTTP\/1\.1 503 [^]*\r\n\r\n\{"status":"draining"\})$/)
        )
        expect(answer).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\n/)
        const ended = yield* Effect.promise(() => long.ended)
        expect(ended.error).toBeUndefined()
        expect(ended.finish).toBe("stop")
        expect(yield* Effect.promise(() => gateway.exited)).toBe(0)
      }).pipe(Effect.scoped),
    40_000
  )
})

describe("reload (the bin)", () => {
  it.live(
    "without --watch a changed file waits for SIGHUP, which swaps it in; an invalid file on SIGHUP is refused and the running config stays",
    () =>
      Effect.gen(function* () {
        const file = yield* configFile(streaming(0, 3, 0))
        const gateway = yield* serve(["--config", file.path])
        const client = clientOf(gateway.url)
        const ask = (model: string) =>
          client.chat.completions.create({ model, messages: [{ role: "user", content: "Hi" }] }).then(
            () => "ok",
            (error: unknown) => String((error as { status?: number }).status)
          )
        expect(yield* Effect.promise(() => ask("gpt-4o"))).toBe("404")
        // Nothing watches the file: the change alone is not served.
        file.write(streaming(0, 3, 0, ["gpt-4o-mini", "gpt-4o"]))
        expect(yield* Effect.promise(() => ask("gpt-4o"))).toBe("404")
        gateway.child.kill("SIGHUP")
        yield* Effect.promise(() => gateway.waitFor(/generation 2 serves new requests/))
        expect(yield* Effect.promise(() => ask("gpt-4o"))).toBe("ok")
        expect(yield* Effect.promise(() => ask("gpt-4o-mini"))).toBe("ok")
        // An invalid file is refused with its problems by path; generation 2 keeps serving.
        file.write(streaming(0, 3, 0).replace("id: sim,", "id: sim, weight: -3,"))
        gateway.child.kill("SIGHUP")
        yield* Effect.promise(() => gateway.waitFor(/reload refused, the running config stays/))
        expect(gateway.output()).toContain("upstreams[0].weight")
        expect(gateway.output()).not.toContain("generation 3")
        expect(yield* Effect.promise(() => ask("gpt-4o"))).toBe("ok")
        // The refused file is not half-applied either: once fixed, the next SIGHUP swaps it in.
        file.write(streaming(0, 3, 0, ["gpt-4o-mini", "gpt-4.1"]))
        gateway.child.kill("SIGHUP")
        yield* Effect.promise(() => gateway.waitFor(/generation 3 serves new requests/))
        expect(yield* Effect.promise(() => ask("gpt-4.1"))).toBe("ok")
        expect(yield* Effect.promise(() => ask("gpt-4o"))).toBe("404")
        expect(gateway.child.exitCode).toBeNull()
        expect(gateway.child.signalCode).toBeNull()
      }).pipe(Effect.scoped),
    30_000
  )

  it.live(
    "--watch reloads a changed file without a signal; an invalid one is refused with its problems and the running config stays",
    () =>
      Effect.gen(function* () {
        const file = yield* configFile(streaming(0, 3, 0))
        const gateway = yield* serve(["--config", file.path, "--watch"])
        const client = clientOf(gateway.url)
        const ask = (model: string) =>
          client.chat.completions.create({ model, messages: [{ role: "user", content: "Hi" }] }).then(
            () => "ok",
            (error: unknown) => String((error as { status?: number }).status)
          )
        expect(yield* Effect.promise(() => ask("gpt-4o"))).toBe("404")
        // --watch: the change alone reloads.
        file.write(streaming(0, 3, 0, ["gpt-4o-mini", "gpt-4o"]))
        yield* Effect.promise(() => gateway.waitFor(/generation 2 serves new requests/))
        expect(yield* Effect.promise(() => ask("gpt-4o"))).toBe("ok")
        // An invalid file is refused, with its problems, and the running config stays.
        file.write(streaming(0, 3, 0).replace("id: sim,", "id: sim, weight: -3,"))
        yield* Effect.promise(() => gateway.waitFor(/reload refused, the running config stays/))
        expect(gateway.output()).toContain("upstreams[0].weight")
        expect(yield* Effect.promise(() => ask("gpt-4o"))).toBe("ok")
        expect(gateway.child.exitCode).toBeNull()
      }).pipe(Effect.scoped),
    30_000
  )

  it.live(
    "POST /admin/config/reload reads the file the gateway was started with again",
    () =>
      Effect.gen(function* () {
        const withAdmin = (models: ReadonlyArray<string>) =>
          streaming(0, 3, 0, models).replace("server: {", "server: { admin: { tokenEnv: SLUICE_LIFE_ADMIN }, ")
        const file = yield* configFile(withAdmin(["gpt-4o-mini"]))
        const gateway = yield* serve(["--config", file.path], { SLUICE_LIFE_ADMIN: "adm-life-0123456789" })
        file.write(withAdmin(["gpt-4o-mini", "gpt-4o"]))
        const reload = yield* Effect.promise(() =>
          fetch(`${gateway.url}/admin/config/reload`, {
            method: "POST",
            headers: { authorization: "Bearer adm-life-0123456789" }
          }).then(async (r) => [r.status, await r.json()] as const)
        )
        expect(reload).toEqual([200, { generation: 2 }])
        const served = yield* Effect.promise(() =>
          clientOf(gateway.url).chat.completions.create({
            model: "gpt-4o",
            messages: [{ role: "user", content: "Hi" }]
          })
        )
        expect(served.choices[0]?.finish_reason).toBe("stop")
      }).pipe(Effect.scoped),
    30_000
  )
})
