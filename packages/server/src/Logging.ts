/**
 * Logging: the level (`server.log.level`, overridden by `LOG_LEVEL`) and format (`pretty` for
 * people, `json` for collectors) of everything the gateway logs, and the access log — one `info`
 * line per routed request, made from its decision.
 *
 * The access line is written on the request path, so it does not run an Effect: {@link accessLog}
 * takes the loggers and minimum level of the runtime it is built in and calls them directly.
 */
import type { Config as SluiceConfig, Decision } from "@sluice/core"
import { format } from "node:util"
import {
  Cause,
  Config,
  Console,
  Context,
  DefaultServices,
  Effect,
  FiberId,
  FiberRef,
  FiberRefs,
  HashMap,
  Layer,
  List,
  Logger,
  LogLevel,
  Option
} from "effect"
import { jsonAccessLine, lastAccessLineAscii } from "./internal/accessLine.js"
import { isoTime } from "./internal/isoTime.mjs"
import { writeStdout } from "./internal/stdout.js"

const LEVELS: Record<SluiceConfig.LogConfig["level"], LogLevel.LogLevel> = {
  trace: LogLevel.Trace,
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warning: LogLevel.Warning,
  error: LogLevel.Error,
  fatal: LogLevel.Fatal,
  none: LogLevel.None
}

/** The level `LOG_LEVEL` names (`warn` too), or undefined when it names none. */
const levelOf = (text: string): LogLevel.LogLevel | undefined => {
  const name = text.trim().toLowerCase()
  return name === "warn" ? LogLevel.Warning : (LEVELS as Record<string, LogLevel.LogLevel>)[name]
}

/**
 * The log settings in force: `server.log` of the running config, its level overridden by `LOG_LEVEL`
 * (read by {@link layer}). A reload sets the new config's ({@link Live.set}); the loggers of
 * {@link layer} and the {@link accessLog} read them at every line.
 */
export class Live {
  /** `LOG_LEVEL`'s level, when it names one: it holds over every config's. */
  override: LogLevel.LogLevel | undefined = undefined
  constructor(public settings: SluiceConfig.LogConfig) {}

  /** The lowest level written. */
  get level(): LogLevel.LogLevel {
    return this.override ?? LEVELS[this.settings.level]
  }

  /** Follows a new config's `server.log`. */
  set(settings: SluiceConfig.LogConfig): void {
    this.settings = settings
  }
}

/** A value JSON writes without visiting an object: a string, number, boolean, null or undefined. */
const flat = (value: unknown): boolean => value === null || typeof value !== "object"

/** A plain object (no class, no array) whose values are all {@link flat}. */
const flatRecord = (value: unknown): boolean => {
  if (typeof value !== "object" || value === null || Object.getPrototypeOf(value) !== Object.prototype) return false
  for (const key in value) if (!flat((value as Record<string, unknown>)[key])) return false
  return true
}

/**
 * Effect's JSON logger, minus its cost on the lines that need none of it. Effect writes every line
 * with `Inspectable.stringifyCircular`, whose replacer visits each value to drop repeated objects and
 * redact redactable ones, and searches every object seen so far as it goes: the bulk of an access
 * line's cost. A line whose message is text or a plain record of texts and numbers (the access line),
 * with flat annotations and spans and no cause, has nothing to drop or redact: plain `JSON.stringify`
 * writes the same text. Any other line goes Effect's way.
 */
export const jsonLogger = Logger.make<unknown, string>((options) => {
  const log = Logger.structuredLogger.log(options)
  return (flat(log.message) || flatRecord(log.message)) &&
    log.cause === undefined &&
    flatRecord(log.annotations) &&
    flatRecord(log.spans)
    ? JSON.stringify(log)
    : Logger.jsonLogger.log(options)
})

const JSON_LOGGER = Logger.withConsoleLog(jsonLogger)
const PRETTY_LOGGER = Logger.prettyLoggerDefault

/** The loggers {@link following} made: the access log writes their lines itself (see {@link accessLog}). */
const gatewayLoggers = new WeakSet<Logger.Logger<unknown, void>>()

/** A logger writing at `live`'s level in its format, as they are when each line is written. */
const following = (live: Live) => {
  const logger = Logger.make<unknown, void>((options) => {
    if (LogLevel.lessThan(options.logLevel, live.level)) return
    ;(live.settings.format === "json" ? JSON_LOGGER : PRETTY_LOGGER).log(options)
  })
  gatewayLoggers.add(logger)
  return logger
}

/** Whether Effect's default pretty logger colours its lines (it does when standard output is a terminal). */
const prettyColours = process.stdout.isTTY === true

/** Effect's pretty logger's time of day: local `HH:MM:SS.mmm`. */
const timeOfDay = (date: Date): string =>
  `${String(date.getHours()).padStart(2, "0")}:${String(date.getMinutes()).padStart(2, "0")}:` +
  `${String(date.getSeconds()).padStart(2, "0")}.${String(date.getMilliseconds()).padStart(3, "0")}`

/**
 * The text the gateway's own logger writes for an access line — made directly, without a logger's
 * options record, its annotation and span conversions and a console lookup in the fiber refs: the
 * same text as Effect's JSON logger (a line whose message is a plain record of flat values, no
 * cause, annotation or span) and its uncoloured pretty logger (a text message); `JsonLogger.test.ts`
 * checks both against Effect's. With another console than Effect's default (`Effect.withConsole`)
 * it goes to that console's `log`, as theirs would; with the default one, to standard output
 * ({@link accessLog}). Undefined for coloured pretty lines, which go Effect's way.
 */
export const accessLine = (
  format: SluiceConfig.LogConfig["format"],
  message: unknown,
  date: Date
): string | undefined =>
  format === "json"
    ? jsonLine(message, date)
    : prettyColours
      ? undefined
      : `[${timeOfDay(date)}] INFO (): ${String(message)}`

/**
 * Effect's JSON line of an `info` message with no annotation or span: its record written around the
 * message's JSON (the same text `JSON.stringify` makes of the record, without making the record).
 */
const jsonLine = (message: unknown, date: Date): string => {
  const text: string | undefined = JSON.stringify(message)
  return `{${text === undefined ? "" : `"message":${text},`}"logLevel":"INFO","timestamp":"${isoTime(date.getTime())}","annotations":{},"spans":{},"fiberId":""}`
}

/**
 * The gateway's loggers: `format` in place of Effect's default logger, at `LOG_LEVEL` when it is
 * set (an unknown value is logged and ignored), else at `level` — both as `live` has them when a line
 * is written, so a reload changes them (Effect's own minimum level lets everything through to them).
 */
export const layer = (settings: SluiceConfig.LogConfig | Live): Layer.Layer<never> =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const live = settings instanceof Live ? settings : new Live(settings)
      const env = yield* Config.option(Config.string("LOG_LEVEL")).pipe(Effect.orElseSucceed(() => Option.none()))
      const fromEnv = Option.isSome(env) ? levelOf(env.value) : undefined
      live.override = fromEnv
      const logging = Layer.merge(
        Logger.replace(Logger.defaultLogger, following(live)),
        Logger.minimumLogLevel(LogLevel.All)
      )
      return Option.isSome(env) && fromEnv === undefined
        ? Layer.merge(
            logging,
            Layer.effectDiscard(
              Effect.logWarning(
                `LOG_LEVEL=${env.value} is not a level (trace, debug, info, warning, error, fatal, none); using ${live.settings.level}`
              )
            ).pipe(Layer.provide(logging))
          )
        : logging
    })
  )

/** What the access line says of a request, as a JSON logger writes it. */
export const accessFields = (d: Decision.Decision, key: string | undefined, status: number) => ({
  msg: "request",
  requestId: d.requestId,
  operation: d.operation,
  stream: d.stream,
  pool: d.pool,
  upstream: d.upstream ?? d.attempts[d.attempts.length - 1]?.upstream ?? null,
  key: key ?? null,
  status,
  outcome: d.outcome,
  attempts: d.attempts.length,
  durationMs: d.durationMs,
  queueWaitMs: d.queueWaitMs,
  inputTokens: d.inputTokens ?? null,
  outputTokens: d.outputTokens ?? null,
  ...(d.firstChunkMs === undefined ? {} : { firstChunkMs: d.firstChunkMs }),
  ...(d.error === undefined ? {} : { error: d.error })
})

export { jsonAccessLine, lastAccessLineAscii }

/** The access line for people. */
const line = (d: Decision.Decision, key: string | undefined, status: number): string =>
  `${status} ${d.operation}${d.stream ? " stream" : ""} ${d.requestId} pool=${d.pool} upstream=${d.upstream ?? d.attempts[d.attempts.length - 1]?.upstream ?? "-"}` +
  ` key=${key ?? "-"} ${d.durationMs}ms attempts=${d.attempts.length} tokens=${d.inputTokens ?? "-"}+${d.outputTokens ?? "-"}` +
  (d.error === undefined ? "" : ` error=${d.error}`)

/** The access log of {@link accessLog}. */
export interface AccessLog {
  /** Writes one request's access line (nothing when the access log is off, or below the level). */
  readonly write: (decision: Decision.Decision, key: string | undefined, status: number) => void
  /**
   * Whether a request's access line is now {@link jsonAccessLine}'s text bound for the process's
   * standard output (the access log on, at `info`, in JSON, through the gateway's own loggers and
   * Effect's default console): then another writer of standard output, the audit file's thread, may
   * write it in {@link AccessLog.write}'s place (see `Server.gatewayOptions`).
   */
  readonly jsonToStdout: () => boolean
}

/**
 * The access log: a synchronous `write` of one `info` line per request through the loggers of the
 * runtime it is built in — nothing when `server.log.access` is off or the level is above `info`, as
 * `live` has them at each request (a reload changes them) — and whether another writer may write
 * the line in its place ({@link AccessLog.jsonToStdout}).
 *
 * When those loggers are the gateway's own, the line's text is made here. With Effect's default
 * console it goes to `process.stdout` (where Node's `console.log` writes; a `console.log` the
 * application replaced is not called) as bytes gathered for up to 10 ms ({@link stdoutLines}), its
 * errors dropped as the console drops them; with another console (`Effect.withConsole`), to a
 * console that gathers lines as long and hands them to it as one `log`. A line per request costs a
 * `write` to a pipe or file each otherwise (standard output is synchronous on a pipe), some 13% of
 * the gateway's throughput when measured. What is gathered is written before the process exits.
 */
export const accessLog = (live: Live): Effect.Effect<AccessLog> =>
  Effect.map(Effect.runtime<never>(), (runtime) => {
    const minimum = FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentMinimumLogLevel)
    const services = FiberRefs.getOrDefault(runtime.fiberRefs, DefaultServices.currentServices)
    const console = Context.get(services, Console.Console)
    const gathered = gathering(console)
    const refs = FiberRefs.updateManyAs(runtime.fiberRefs, {
      forkAs: FiberId.none,
      entries: [[DefaultServices.currentServices, [[FiberId.none, Context.add(services, Console.Console, gathered)]]]]
    })
    const loggers = [...FiberRefs.getOrDefault(refs, FiberRef.currentLoggers)]
    const spans = List.empty()
    const annotations = HashMap.empty<string, unknown>()
    // The runtime's loggers are the gateway's own (and Effect's tracer logger, which writes nothing
    // outside a span): the access line's text is made here and written by `write`.
    const direct =
      loggers.filter((l) => gatewayLoggers.has(l)).length === 1 &&
      loggers.every((l) => gatewayLoggers.has(l) || l === Logger.tracerLogger)
    const toStdout = console === Context.get(DefaultServices.liveServices, Console.Console)
    const write: (text: string, ascii: boolean) => void = toStdout ? stdoutLines : (text) => gathered.unsafe.log(text)
    /** Whether the access line is written now (the settings and the level as they are). */
    const on = () =>
      live.settings.access &&
      !LogLevel.lessThan(LogLevel.Info, live.level) &&
      !LogLevel.lessThan(LogLevel.Info, minimum)
    return {
      write: (decision, key, status) => {
        if (!on()) return
        const json = live.settings.format === "json"
        if (direct) {
          if (json) return write(jsonAccessLine(decision, key, status, Date.now()), lastAccessLineAscii())
          const text = accessLine("pretty", line(decision, key, status), new Date())
          if (text !== undefined) return write(text, false)
        }
        const message = json ? accessFields(decision, key, status) : line(decision, key, status)
        const date = new Date()
        for (const logger of loggers)
          logger.log({
            fiberId: FiberId.none,
            logLevel: LogLevel.Info,
            message,
            cause: Cause.empty,
            context: refs,
            spans,
            annotations,
            date
          })
      },
      jsonToStdout: () => direct && toStdout && live.settings.format === "json" && on()
    }
  })

/** The flushes of gathering consoles holding lines; run when the process exits, so none is lost. */
const unwritten = new Set<() => void>()
let flushesOnExit = false

/** Makes sure the {@link unwritten} lines are written when the process exits. */
const exitFlushes = () => {
  if (flushesOnExit) return
  flushesOnExit = true
  process.once("exit", () => {
    for (const flush of unwritten) flush()
  })
}

/** How long gathered lines wait before they are written, at most, and how many characters at most. */
const GATHER_MS = 10
const GATHER_CHARS = 16 * 1024

/**
 * A console whose `log`, `info` and `error` lines are gathered and written to `to` together, at most
 * {@link GATHER_MS} after the first of them, or sooner once they hold {@link GATHER_CHARS} characters
 * (`log` and `info` lines as one `log`, `error` lines as one `error`). A write per turn of the event
 * loop still came to one per handful of requests on a busy gateway, each a system call (standard
 * output is synchronous on a file or a pipe): some 2.6 µs of CPU a request, measured.
 */
const gathering = (to: Console.Console): Console.Console => {
  exitFlushes()
  let out: Array<string> = []
  let err: Array<string> = []
  let chars = 0
  let timer: ReturnType<typeof setTimeout> | undefined
  const flush = () => {
    if (timer === undefined) return
    clearTimeout(timer)
    timer = undefined
    unwritten.delete(flush)
    const lines = out
    const errors = err
    out = []
    err = []
    chars = 0
    if (lines.length > 0) to.unsafe.log(lines.join("\n"))
    if (errors.length > 0) to.unsafe.error(errors.join("\n"))
  }
  const gather = (line: string) => {
    chars += line.length
    if (timer === undefined) {
      unwritten.add(flush)
      // Unref'd: waiting lines never keep the process alive; they are written when it exits.
      timer = setTimeout(flush, GATHER_MS).unref()
    }
    if (chars >= GATHER_CHARS) flush()
  }
  const log = (...args: ReadonlyArray<unknown>) => {
    const line = format(...args)
    out.push(line)
    gather(line)
  }
  return {
    ...to,
    unsafe: {
      ...to.unsafe,
      log,
      info: log,
      error: (...args: ReadonlyArray<unknown>) => {
        const line = format(...args)
        err.push(line)
        gather(line)
      }
    }
  }
}

/** How many bytes {@link stdoutLines} gathers at most before it writes them. */
const GATHER_BYTES = 64 * 1024

/**
 * Lines gathered as UTF-8 bytes (each with its newline) and written to `write` together, at most
 * {@link GATHER_MS} after the first of them, or sooner once the next might not fit in
 * {@link GATHER_BYTES}; `write` may keep the chunk (the next lines get a new buffer). Each line is
 * copied into the buffer as it comes, so no line's text outlives the request that wrote it, and a
 * write is one system call on bytes ready to go. Gathered as text, joined and handed to
 * `console.log` (which encodes it again), the access log alone cost ×0.93 of the gateway's
 * throughput in `bench/observability.ts`; this way, ×0.95–0.98. Flushed when the process exits.
 */
export const byteLines = (
  write: (chunk: Uint8Array) => void
): {
  /** Gathers a line; `ascii` says its characters are all ASCII (they are written as Latin-1, more quickly). */
  readonly line: (text: string, ascii?: boolean) => void
  readonly flush: () => void
} => {
  let pending = Buffer.allocUnsafe(GATHER_BYTES)
  let used = 0
  let timer: ReturnType<typeof setTimeout> | undefined
  const flush = () => {
    if (timer !== undefined) {
      clearTimeout(timer)
      timer = undefined
      unwritten.delete(flush)
    }
    if (used === 0) return
    const chunk = pending.subarray(0, used)
    pending = Buffer.allocUnsafe(GATHER_BYTES)
    used = 0
    write(chunk)
  }
  const line = (text: string, ascii = false) => {
    // At most 3 bytes of UTF-8 for each UTF-16 unit, and the newline.
    const most = (ascii ? text.length : text.length * 3) + 1
    if (most > pending.length - used) {
      flush()
      // A line longer than the buffer goes out on its own.
      if (most > pending.length) return write(Buffer.from(`${text}\n`))
    }
    used += pending.write(text, used, ascii ? "latin1" : "utf8")
    pending[used++] = 0x0a
    if (timer === undefined) {
      exitFlushes()
      unwritten.add(flush)
      // Unref'd: waiting lines never keep the process alive; they are written when it exits.
      timer = setTimeout(flush, GATHER_MS).unref()
    }
  }
  return { line, flush }
}

/** The access lines bound for standard output (one gatherer for the process, as there is one standard output). */
const stdoutLines = byteLines(writeStdout).line
