import { describe, expect, it } from "@effect/vitest"
import { Config } from "@sluice/core"
import { Effect, Schema } from "effect"
import * as Logging from "../src/Logging.js"
import * as Routing from "../src/Routing.js"
import * as Telemetry from "../src/Telemetry.js"
import type { HarnessOptions } from "./harness.js"
import { eventually, simulatedConfig, startGateway, startUpstream } from "./harness.js"

/** A gateway with `server.log` set as given, its logger the real one, and every line it printed. */
const logged = (log: Record<string, unknown>, env: Record<string, string> = {}, options: HarnessOptions = {}) =>
  Effect.gen(function* () {
    const lines: Array<string> = []
    const base = yield* Effect.console
    const capture = (...args: ReadonlyArray<unknown>) => void lines.push(args.map(String).join(" "))
    const console = { ...base, unsafe: { ...base.unsafe, log: capture, error: capture, info: capture } }
    const config = {
      ...simulatedConfig(
        [
          { id: "a", simulate: { completionTokens: 4 } },
          { id: "broken", simulate: { failureRate: 1 } },
          // Their breakers open (a warning) at their first failure.
          { id: "fragile1", simulate: { failureRate: 1 }, circuitBreaker: { failureThreshold: 1 } },
          { id: "fragile2", simulate: { failureRate: 1 }, circuitBreaker: { failureThreshold: 1 } }
        ],
        [
          { id: "chat", models: ["gpt-4o-mini"], upstreams: ["a"] },
          { id: "dead", models: ["dead-model"], upstreams: ["broken"] },
          { id: "f1", models: ["f1"], upstreams: ["fragile1"] },
          { id: "f2", models: ["f2"], upstreams: ["fragile2"] }
        ]
      ),
      server: Schema.decodeUnknownSync(Config.ServerConfig)({ log })
    }
    const gateway = yield* startGateway(config, { logging: Logging.layer, env, ...options }).pipe(
      Effect.withConsole(console)
    )
    return { gateway, lines }
  })

/** {@link logged} with traces exported over OTLP to a collector that refuses every batch (counted). */
const tracingLogged = (log: Record<string, unknown>, env: Record<string, string> = {}) =>
  Effect.gen(function* () {
    let batches = 0
    const collector = yield* startUpstream((_request, _body, response) => {
      batches++
      response.writeHead(500, { "content-type": "application/json" })
      response.end("{}")
    })
    const otel = {
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${collector.baseUrl}/traces`,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_BSP_SCHEDULE_DELAY: "10",
      ...env
    }
    const started = yield* logged(log, otel, { telemetry: Telemetry.layerConfig() })
    return { ...started, batches: () => batches }
  })

const ask = (gateway: Effect.Effect.Success<ReturnType<typeof startGateway>>, model: string) =>
  Effect.promise(() =>
    gateway.client.chat.completions
      .create({ model, messages: [{ role: "user", content: "Hi" }] })
      .withResponse()
      .then(
        ({ response }) => response.headers.get("x-request-id"),
        (error: { headers?: Headers }) => error.headers?.get("x-request-id") ?? null
      )
  )

describe("logs", () => {
  it.live("writes one JSON access line per request at info, from its decision", () =>
    Effect.gen(function* () {
      const { gateway, lines } = yield* logged({ format: "json" })
      const ok = yield* ask(gateway, "gpt-4o-mini")
      const failed = yield* ask(gateway, "dead-model")
      // Every line is one JSON object (access lines gathered for a few milliseconds come in one
      // write); the access lines are those whose message is a request.
      const accessLines = () =>
        lines
          .flatMap((l) => l.split("\n"))
          .map((l) => JSON.parse(l) as { logLevel: string; message: Record<string, unknown> })
          .filter((p) => p.message?.["msg"] === "request")
      const access = yield* eventually(() => {
        const found = accessLines()
        return found.length >= 2 ? found : undefined
      })
      expect(access.map((a) => a.logLevel)).toEqual(["INFO", "INFO"])
      expect(access[0]!.message).toMatchObject({
        requestId: ok,
        operation: "chat",
        pool: "chat",
        upstream: "a",
        key: "anonymous",
        status: 200,
        outcome: "success",
        attempts: 1,
        outputTokens: 4
      })
      expect(access[1]!.message).toMatchObject({
        requestId: failed,
        pool: "dead",
        upstream: "broken",
        status: 502,
        outcome: "error"
      })
      expect(String(access[1]!.message["error"])).toMatch(/^UpstreamError: /)
    }).pipe(Effect.scoped)
  )

  it.live("writes a pretty access line by default, and none when LOG_LEVEL is above info", () =>
    Effect.gen(function* () {
      const pretty = yield* logged({})
      const lineOf = (id: string | null) => () => {
        const found = pretty.lines.filter((l) => l.includes(`200 chat ${id} pool=chat upstream=a`))
        return found.length > 0 ? found : undefined
      }
      const id = yield* ask(pretty.gateway, "gpt-4o-mini")
      expect(yield* eventually(lineOf(id))).toHaveLength(1)
      const quiet = yield* logged({}, { LOG_LEVEL: "warn" })
      yield* ask(quiet.gateway, "gpt-4o-mini")
      const off = yield* logged({ access: false })
      yield* ask(off.gateway, "gpt-4o-mini")
      // A line gathered after theirs, written: had they gathered one, it would have been written first.
      expect(yield* eventually(lineOf(yield* ask(pretty.gateway, "gpt-4o-mini")))).toHaveLength(1)
      expect(quiet.lines.filter((l) => l.includes("pool=chat"))).toEqual([])
      expect(off.lines.filter((l) => l.includes("pool=chat"))).toEqual([])
    }).pipe(Effect.scoped)
  )

  it.live("follows server.log through a reload: format, access line and level", () =>
    Effect.gen(function* () {
      const { gateway, lines } = yield* logged({})
      const routing = gateway.service(Routing.Routing)
      const reload = (log: Record<string, unknown>) => {
        const running = routing.current().config
        return routing.replace({ ...running, server: { ...running.server, log: Config.LogConfig.make(log) } })
      }
      const pretty = yield* ask(gateway, "gpt-4o-mini")
      yield* reload({ format: "json" })
      const json = yield* ask(gateway, "gpt-4o-mini")
      yield* reload({ format: "json", access: false })
      const unlogged = yield* ask(gateway, "gpt-4o-mini")
      // The gateway's own lines follow too: an open breaker's warning, then none above the new level.
      yield* ask(gateway, "f1")
      yield* reload({ level: "error" })
      yield* ask(gateway, "f2")
      const text = lines.join("\n")
      expect(text).toContain(`200 chat ${pretty} pool=chat upstream=a`)
      const access = lines
        .flatMap((l) => l.split("\n"))
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { message: Record<string, unknown> })
        .filter((p) => p.message?.["msg"] === "request")
      expect(access.map((a) => a.message["requestId"])).toEqual([json])
      expect(text).not.toContain(String(unlogged))
      expect(text).toContain("circuit for upstream fragile1 opened")
      expect(text).not.toContain("fragile2")
    }).pipe(Effect.scoped)
  )

  // Plain runs (not vitest's Effect runtime, whose loggers are its own), as the gateway's are.
  it("hands the access line to another writer only when it is JSON bound for standard output", async () => {
    const settings = Schema.decodeUnknownSync(Config.ServerConfig)({}).log
    const quiet = Effect.runSync(
      Effect.map(Effect.console, (base) => ({ ...base, unsafe: { ...base.unsafe, log: () => {}, error: () => {} } }))
    )
    /** The access log built as the gateway builds it, at `live`'s settings (with a console of its own). */
    const built = (live: Logging.Live, custom = false) => {
      const access = Logging.accessLog(live).pipe(Effect.provide(Logging.layer(live)))
      return Effect.runPromise(custom ? access.pipe(Effect.withConsole(quiet)) : access)
    }
    const handsOver = async (log: Partial<Config.LogConfig>, custom = false) =>
      (await built(new Logging.Live({ ...settings, ...log }), custom)).jsonToStdout()
    expect(await handsOver({ format: "json" })).toBe(true)
    // Pretty lines, no access line, a level above info, another console: written where they are.
    expect(await handsOver({ format: "pretty" })).toBe(false)
    expect(await handsOver({ format: "json", access: false })).toBe(false)
    expect(await handsOver({ format: "json", level: "warning" })).toBe(false)
    expect(await handsOver({ format: "json" }, true)).toBe(false)
    // The settings as they are when asked: a reload to pretty takes it back.
    const live = new Logging.Live({ ...settings, format: "json" })
    const access = await built(live)
    expect(access.jsonToStdout()).toBe(true)
    live.set({ ...settings, format: "pretty" })
    expect(access.jsonToStdout()).toBe(false)
  })

  it.live("logs an opened breaker and a drain at WARN", () =>
    Effect.gen(function* () {
      // The gateway's scope closes inside the test, so its drain is logged before the assertions.
      const lines = yield* Effect.gen(function* () {
        const started = yield* logged({ format: "json" }, {}, { drainMs: 5_000 })
        yield* ask(started.gateway, "f1")
        return started.lines
      }).pipe(Effect.scoped)
      const parsed = lines
        .flatMap((l) => l.split("\n"))
        .map((l) => JSON.parse(l) as { logLevel: string; message: unknown })
        .filter((p) => typeof p.message === "string")
        .map((p) => [p.logLevel, p.message as string] as const)
      const opened = parsed.filter(([, message]) => message.startsWith("circuit for upstream fragile1 opened"))
      expect(opened.map(([level]) => level)).toEqual(["WARN"])
      const draining = parsed.filter(([, message]) => message.startsWith("draining: "))
      expect(draining).toEqual([["WARN", "draining: 0 requests in flight may take up to 5000 ms to finish"]])
    })
  )

  it.live("writes tracing's own lines through the configured logger, as JSON when asked", () =>
    Effect.gen(function* () {
      const { gateway, lines } = yield* tracingLogged({ format: "json" })
      yield* ask(gateway, "gpt-4o-mini")
      const tracing = () => lines.flatMap((l) => l.split("\n")).filter((l) => l.includes("traces"))
      yield* eventually(() => (tracing().some((l) => l.includes("cannot be exported")) ? true : undefined))
      const parsed = tracing().map((l) => JSON.parse(l) as { logLevel: string; message: string })
      expect(parsed.map((p) => [p.logLevel, p.message.split(" ").slice(0, 3).join(" ")])).toEqual([
        ["INFO", "exporting traces over"],
        ["WARN", "traces cannot be"]
      ])
    }).pipe(Effect.scoped)
  )

  it.live("writes none of tracing's own lines when LOG_LEVEL is above them", () =>
    Effect.gen(function* () {
      const { gateway, lines, batches } = yield* tracingLogged({ format: "json" }, { LOG_LEVEL: "error" })
      yield* ask(gateway, "gpt-4o-mini")
      yield* eventually(() => (batches() > 0 ? true : undefined))
      // A second refused batch: the first one's refusal was reported (or not) by then.
      yield* ask(gateway, "gpt-4o-mini")
      yield* eventually(() => (batches() > 1 ? true : undefined))
      expect(lines.filter((l) => l.includes("traces"))).toEqual([])
    }).pipe(Effect.scoped)
  )
})
