/**
 * Simulator: a simulated OpenAI-compatible upstream on loopback, for the gateway's default config,
 * tests and benchmarks. It speaks OpenAI's wire format (the official `openai` SDK can use it) and can
 * be told to be slow, rate limited or broken, at start or at run time with `setOptions`.
 *
 * With `dialect: "anthropic"` it speaks Anthropic's Messages API instead: `POST /v1/messages`
 * (non-streaming and streaming, with the same content, tool and fault behaviour as below; it checks
 * what the API checks — `model`, a positive integer `max_tokens`, roles `user` / `assistant` only,
 * non-empty text blocks, image blocks with a base64 source of a JPEG, PNG, GIF or WebP or an http(s)
 * URL source, each `tool_result` answering an earlier `tool_use` — and answers 400 in
 * Anthropic's error envelope otherwise), Anthropic's error envelope for every failure (a
 * `failureStatus` of 529 is an `overloaded_error`), `anthropic-ratelimit-*` headers, no embeddings.
 * With `dialect: "gemini"` it speaks the Gemini API (`/v1beta/models/{model}:generateContent`,
 * `:streamGenerateContent?alt=sse`, `:batchEmbedContents`, Google's error envelope), and with
 * `dialect: "ollama"` Ollama's native API (`/api/chat` streaming NDJSON unless `stream: false`,
 * `/api/embed`, `{"error": ...}` errors); each checks requests as its provider does (the Gemini
 * dialect, as Gemini 3 does, gives each function call a thought signature and refuses a history
 * whose calls lack theirs or changed them), and in each a
 * tool call's input (`input`, `args`, `arguments`) is built to match the tool's schema, as below.
 *
 * Endpoints (OpenAI dialect):
 * - `POST /v1/chat/completions`: non-streaming and SSE streaming (`stream_options.include_usage`),
 *   tool calls (the first tool, or the one `tool_choice` names, with arguments valid against the
 *   tool's `parameters` schema, `"{}"` when it has none; after a tool result it answers with text
 *   unless `tool_choice` requires a call) and JSON mode.
 *   Content is `[<name>] lorem ipsum ...`: one word is one token. Always one choice (`n` is ignored);
 *   `model` is echoed (the first configured model when absent). 400 with OpenAI's error envelope when
 *   the body is not a JSON object or `messages` is missing, not an array or empty.
 * - Prompt token estimate: `ceil(characters of all message text content / 4) + 3 per message + 85 per
 *   image part`; embeddings inputs: `ceil(characters / 4)` per string, the length of a token array.
 * - `POST /v1/embeddings`: a deterministic unit vector of 8 dimensions (or `dimensions`) per input,
 *   as floats or, with `encoding_format: "base64"`, little-endian float32 in base64.
 * - `POST /v1/completions` (the legacy endpoint): a `text_completion` of the same content for a
 *   string or string-array `prompt` (16 tokens unless `max_tokens` says fewer), or SSE chunks ending
 *   with a usage-only chunk and `[DONE]`.
 * - `POST /v1/responses`: a `response` object (text, a function call for the first tool, its
 *   arguments built as for chat, unless the input ends with a tool's output, JSON for a `text.format` schema), or Responses stream events;
 *   `previous_response_id` and `store` are accepted and ignored (it keeps nothing).
 * - `GET /v1/models`, `GET /v1/models/{id}`: the configured models.
 * - `GET /health`: always `200 {"status":"ok"}`; never recorded, counted, limited or failed.
 * - Anything else: 404 with OpenAI's error envelope.
 *
 * It is a fake of the outside world, so it uses real time (`Date.now`, `setTimeout`), not `Clock`.
 */
import * as Http from "node:http"
import type { AddressInfo, Socket } from "node:net"
import type { Scope } from "effect"
import { Effect, Either, Random, Schema } from "effect"
import type { Resolved } from "./internal/simulatorServer.js"
import { defaults, SimulatorState } from "./internal/simulatorServer.js"
import { signatureOf } from "./internal/simulatorGemini.js"

/**
 * How the simulated upstream behaves. Every field is optional.
 *
 * The order of decisions for a chat or embeddings request: connection reset (`resetRate`), stall
 * (`stallRate`), 400 for a malformed body, 429 over `rpm` / `tpm` (a request that passes counts
 * against the limits even if it then fails), `failureStatus` (`failureRate`), then the answer
 * (`midStreamCutRate`, then `malformedEventRate` for streams). Each die is rolled only when its rate
 * is above 0.
 */
export interface Options {
  /**
   * The wire format it speaks: `openai` (`POST /v1/chat/completions`, `/v1/embeddings`),
   * `anthropic` (`POST /v1/messages` with Anthropic's bodies, events, error envelope and
   * `anthropic-ratelimit-*` headers; no embeddings), `gemini` (`POST /v1beta/models/{model}:
   * generateContent`, `:streamGenerateContent?alt=sse`, `:batchEmbedContents`) or `ollama` (the
   * native `POST /api/chat` with NDJSON streams, `POST /api/embed`). Default `"openai"`.
   */
  readonly dialect?: Dialect
  /** Label used in content (`[<name>] ...`), ids and `owned_by`. Default `"sim"`. */
  readonly name?: string
  /** Models listed by `GET /v1/models`; requests for any model are served anyway. Default `["sim-model"]`. */
  readonly models?: ReadonlyArray<string>
  /** Milliseconds before a non-streaming answer (chat and embeddings; errors are immediate). Default 0. */
  readonly latencyMs?: number
  /** Milliseconds before the first streamed chunk (headers are sent at once). Default 0. */
  readonly ttftMs?: number
  /** Pace of streamed tokens after the first; 0 streams as fast as possible. Default 0. Not used without streaming. */
  readonly tokensPerSecond?: number
  /** Completion tokens (words) per answer, capped by `max_completion_tokens` / `max_tokens` ("length"). Default 16. */
  readonly completionTokens?: number
  /** Requests per minute over a sliding 60 s window (chat and embeddings); over it: 429. 0 = no limit (default). */
  readonly rpm?: number
  /**
   * Tokens per minute over a sliding 60 s window: the prompt estimate plus the completion tokens (for
   * embeddings, the input estimate); over it: 429. 0 = no limit (default).
   */
  readonly tpm?: number
  /** Probability (0..1) of answering `failureStatus` with OpenAI's error envelope. Default 0. */
  readonly failureRate?: number
  /** HTTP status used for `failureRate`. Default 500. */
  readonly failureStatus?: number
  /** Probability (0..1) of destroying the socket without answering (a connection reset). Default 0. */
  readonly resetRate?: number
  /** Probability (0..1) of never answering; the socket stays open until the client gives up or the scope closes. Default 0. */
  readonly stallRate?: number
  /** Probability (0..1), for `stream: true`, of destroying the socket after 2 or 3 content chunks (no `[DONE]`). Default 0. */
  readonly midStreamCutRate?: number
  /**
   * Probability (0..1), for `stream: true`, of sending one event whose data is truncated JSON after
   * `malformedEventAfter` content chunks; the rest of the stream and `[DONE]` follow as usual, as when
   * a proxy on the way mangles one event. Default 0.
   */
  readonly malformedEventRate?: number
  /** Content chunks sent before the malformed event of `malformedEventRate`; 0 sends it before any content. Default 2. */
  readonly malformedEventAfter?: number
  /** Seed of the failure dice: the same seed and requests give the same faults. Default random (see `options().seed`). */
  readonly seed?: number
}

/** The wire formats the simulator speaks. */
export const dialects = ["openai", "anthropic", "gemini", "ollama"] as const

/** A wire format the simulator speaks. */
export type Dialect = (typeof dialects)[number]

const NonNegative = Schema.Number.pipe(Schema.nonNegative())
const PositiveInt = Schema.Number.pipe(Schema.int(), Schema.positive())
const Probability = Schema.Number.pipe(Schema.between(0, 1))

/**
 * The `simulate:` block of a `simulated` upstream in a config file: the {@link Options} a config may
 * set (the name is the upstream's id). Registered as the `simulated` kind's settings
 * (`Providers.simulated`), so a config is checked against it when it loads.
 */
export const SimulateOptions = Schema.Struct({
  /** The API it speaks (default `openai`); the gateway calls it as that provider. */
  dialect: Schema.optionalWith(Schema.Literal(...dialects), { exact: true }),
  latencyMs: Schema.optionalWith(NonNegative, { exact: true }),
  ttftMs: Schema.optionalWith(NonNegative, { exact: true }),
  tokensPerSecond: Schema.optionalWith(NonNegative, { exact: true }),
  completionTokens: Schema.optionalWith(PositiveInt, { exact: true }),
  rpm: Schema.optionalWith(PositiveInt, { exact: true }),
  tpm: Schema.optionalWith(PositiveInt, { exact: true }),
  failureRate: Schema.optionalWith(Probability, { exact: true }),
  resetRate: Schema.optionalWith(Probability, { exact: true }),
  stallRate: Schema.optionalWith(Probability, { exact: true }),
  midStreamCutRate: Schema.optionalWith(Probability, { exact: true }),
  malformedEventRate: Schema.optionalWith(Probability, { exact: true }),
  malformedEventAfter: Schema.optionalWith(Schema.Number.pipe(Schema.int(), Schema.nonNegative()), { exact: true }),
  seed: Schema.optionalWith(Schema.Number, { exact: true })
})
/** The `simulate:` block of a `simulated` upstream, decoded. */
export type SimulateOptions = typeof SimulateOptions.Type

/** Where to listen. Defaults: host `127.0.0.1`, port 0 (a free port). */
export interface Listen {
  readonly host?: string
  readonly port?: number
}

/** What {@link parseArgs} reads from a command line: the options and where to listen. */
export interface Args extends Options, Listen {}

/** A request the simulator received (every path but `/health`). */
export interface RecordedRequest {
  readonly method: string
  /** The path without the query string, e.g. `/v1/chat/completions`. */
  readonly path: string
  /** Request headers, lower-case names; repeated headers joined with `", "`. */
  readonly headers: Readonly<Record<string, string>>
  /** The parsed JSON body; the raw text when it is not JSON; undefined when empty. */
  readonly body: unknown
  /** When it was received, epoch milliseconds. */
  readonly receivedAt: number
}

/** Counters since start or the last `reset()`. */
export interface Stats {
  /** Requests received (every path but `/health`). */
  readonly requests: number
  /** Requests answered 429 for `rpm` / `tpm`. */
  readonly rateLimited: number
  /** Injected faults: failure statuses, resets, stalls, mid-stream cuts and malformed events. */
  readonly failures: number
}

/** A running simulated upstream. */
export interface Simulator {
  /** Base URL without a trailing slash or `/v1`, e.g. `"http://127.0.0.1:40123"`. */
  readonly url: string
  readonly port: number
  /** The current options with every default filled in (including the seed in use). */
  readonly options: () => Options
  /** Changes behaviour from the next request on; a new `seed` restarts the dice. Not validated. */
  readonly setOptions: (patch: Partial<Options>) => void
  /** The last 100 requests, newest last. */
  readonly requests: () => ReadonlyArray<RecordedRequest>
  readonly stats: () => Stats
  /** Clears recorded requests, stats and rate-limit windows (not the dice). */
  readonly reset: () => void
}

/** The simulator could not start: invalid options or the address could not be bound. */
export class SimulatorError extends Schema.TaggedError<SimulatorError>()("SimulatorError", {
  message: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {}

interface Field {
  readonly key: keyof Args
  readonly flag: string
  readonly expected: string
  readonly parse: (raw: string) => unknown
  readonly valid: (value: unknown) => boolean
}

const toNumber = (raw: string): number => (raw.trim() === "" ? Number.NaN : Number(raw))
const isNonEmptyString = (u: unknown): boolean => typeof u === "string" && u.trim() !== ""
const isNonNegative = (u: unknown): u is number => typeof u === "number" && Number.isFinite(u) && u >= 0
const isNonNegativeInt = (u: unknown): boolean => isNonNegative(u) && Number.isInteger(u)
const isProbability = (u: unknown): boolean => isNonNegative(u) && u <= 1

const field = (
  key: keyof Args,
  expected: string,
  valid: (value: unknown) => boolean,
  parse: (raw: string) => unknown = toNumber
): Field => ({ key, flag: "--" + key.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()), expected, parse, valid })

const fields: ReadonlyArray<Field> = [
  field("host", "a host name or IP address", isNonEmptyString, (raw) => raw),
  field("port", "an integer port between 0 and 65535", (u) => isNonNegativeInt(u) && (u as number) <= 65535),
  field("name", "a non-empty name", isNonEmptyString, (raw) => raw),
  field(
    "dialect",
    `one of ${dialects.join(", ")}`,
    (u) => dialects.includes(u as Dialect),
    (raw) => raw
  ),
  field(
    "models",
    "a comma-separated list of model names",
    (u) => Array.isArray(u) && u.length > 0 && u.every(isNonEmptyString),
    (raw) =>
      raw
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s !== "")
  ),
  field("latencyMs", "a number of milliseconds >= 0", isNonNegative),
  field("ttftMs", "a number of milliseconds >= 0", isNonNegative),
  field("tokensPerSecond", "a number of tokens per second >= 0 (0 = as fast as possible)", isNonNegative),
  field("completionTokens", "an integer >= 0", isNonNegativeInt),
  field("rpm", "a number of requests per minute >= 0 (0 = no limit)", isNonNegative),
  field("tpm", "a number of tokens per minute >= 0 (0 = no limit)", isNonNegative),
  field("failureRate", "a probability between 0 and 1", isProbability),
  field(
    "failureStatus",
    "an HTTP status between 400 and 599",
    (u) => isNonNegativeInt(u) && (u as number) >= 400 && (u as number) <= 599
  ),
  field("resetRate", "a probability between 0 and 1", isProbability),
  field("stallRate", "a probability between 0 and 1", isProbability),
  field("midStreamCutRate", "a probability between 0 and 1", isProbability),
  field("malformedEventRate", "a probability between 0 and 1", isProbability),
  field("malformedEventAfter", "an integer >= 0", isNonNegativeInt),
  field("seed", "an integer", (u) => typeof u === "number" && Number.isSafeInteger(u))
]

const byFlag = new Map(fields.map((f) => [f.flag, f]))

/** Usage text for `sluice simulate`: every flag {@link parseArgs} accepts, with defaults. */
export const usage = `Usage: sluice simulate [flags]

Runs a simulated OpenAI-compatible upstream: POST /v1/chat/completions, POST /v1/embeddings,
POST /v1/completions, POST /v1/responses, GET /v1/models and GET /health (with --dialect, Anthropic's, Gemini's or Ollama's API instead). Flags take a value as "--flag value" or "--flag=value".

  --host <host>                  address to bind (default 127.0.0.1)
  --port <port>                  port to bind; 0 picks a free one (default 0)
  --name <name>                  label used in content, ids and owned_by (default sim)
  --dialect <name>               wire format: openai, anthropic (POST /v1/messages), gemini
                                 (/v1beta/models/...:generateContent) or ollama (/api/chat) (default openai)
  --models <a,b,...>             models listed by GET /v1/models (default sim-model); any model is served
  --latency-ms <ms>              delay before a non-streaming answer (default 0)
  --ttft-ms <ms>                 delay before the first streamed chunk (default 0)
  --tokens-per-second <n>        streaming pace; 0 = as fast as possible (default 0)
  --completion-tokens <n>        words (tokens) per answer, capped by max_tokens (default 16)
  --rpm <n>                      requests per minute, sliding 60s window; 0 = no limit (default 0)
  --tpm <n>                      tokens per minute (prompt estimate + completion); 0 = no limit (default 0)
  --failure-rate <0..1>          probability of answering --failure-status (default 0)
  --failure-status <status>      HTTP status of injected failures, 400..599 (default 500)
  --reset-rate <0..1>            probability of resetting the connection without answering (default 0)
  --stall-rate <0..1>            probability of never answering (default 0)
  --mid-stream-cut-rate <0..1>   probability of cutting a stream after 2-3 content chunks (default 0)
  --malformed-event-rate <0..1>  probability of one stream event that is not valid JSON (default 0)
  --malformed-event-after <n>    content chunks before that malformed event; 0 = before any (default 2)
  --seed <int>                   seed of the failure dice (default random)
`

/**
 * Parses `sluice simulate` flags (without the command itself), e.g. `["--port", "9001", "--rpm=60"]`.
 * Fails with a {@link SimulatorError} naming the flag of every unknown flag, missing value or bad
 * value, all at once (`--failure-rate: expected a probability between 0 and 1, got '2'`). A repeated
 * flag: the last wins.
 */
export const parseArgs = (argv: ReadonlyArray<string>): Either.Either<Args, SimulatorError> => {
  const problems: Array<string> = []
  const out: Record<string, unknown> = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (!arg.startsWith("--")) {
      problems.push(`unexpected argument '${arg}'; flags look like --port 9001`)
      continue
    }
    const eq = arg.indexOf("=")
    const flag = eq === -1 ? arg : arg.slice(0, eq)
    const f = byFlag.get(flag)
    if (f === undefined) {
      problems.push(`unknown flag ${flag}; known flags: ${fields.map((x) => x.flag).join(", ")}`)
      continue
    }
    let raw: string
    if (eq !== -1) raw = arg.slice(eq + 1)
    else {
      const next = argv[i + 1]
      if (next === undefined || next.startsWith("--")) {
        problems.push(`${flag}: missing value; expected ${f.expected}`)
        continue
      }
      raw = next
      i++
    }
    const value = f.parse(raw)
    if (!f.valid(value)) problems.push(`${flag}: expected ${f.expected}, got '${raw}'`)
    else out[f.key] = value
  }
  if (problems.length === 0) return Either.right(out as Args)
  // Every problem at once, so a command line is fixed in one round.
  const message =
    problems.length === 1 ? problems[0]! : `${problems.length} problems:\n${problems.map((p) => `  - ${p}`).join("\n")}`
  return Either.left(new SimulatorError({ message }))
}

const invalidOption = (options: Options, listen: Listen): string | undefined => {
  const given = { ...options, ...listen } as Record<string, unknown>
  for (const f of fields) {
    const value = given[f.key]
    if (value !== undefined && !f.valid(value)) {
      return `invalid option ${f.key}: expected ${f.expected}, got ${JSON.stringify(value)}`
    }
  }
  return undefined
}

const resolve = (options: Options, seed: number): Resolved => {
  const resolved: Record<string, unknown> = { ...defaults, seed }
  for (const key in options) {
    const value = (options as Record<string, unknown>)[key]
    if (value !== undefined) resolved[key] = value
  }
  return resolved as Resolved
}

const urlHost = (address: AddressInfo): string => {
  if (address.address === "0.0.0.0") return "127.0.0.1"
  if (address.address === "::") return "[::1]"
  return address.family === "IPv6" ? `[${address.address}]` : address.address
}

/**
 * The thought signature the Gemini dialect gives a call of the function `name` (base64 with `+`,
 * `/` and padding in it), and requires back unchanged in the replayed `functionCall` part.
 */
export const thoughtSignature = (name: string): string => signatureOf(name)

/**
 * Starts a simulated upstream, listening on `127.0.0.1` and a free port unless told otherwise. When
 * the scope closes, the server closes and every open socket (streaming or stalled ones too) is
 * destroyed. Fails with {@link SimulatorError} on invalid options or when the address cannot be bound.
 */
export const start: (options?: Options, listen?: Listen) => Effect.Effect<Simulator, SimulatorError, Scope.Scope> =
  Effect.fn("Simulator.start")(function* (options: Options = {}, listen: Listen = {}) {
    const problem = invalidOption(options, listen)
    if (problem !== undefined) return yield* new SimulatorError({ message: problem })
    const seed = options.seed ?? (yield* Random.nextIntBetween(0, 2 ** 31))
    const state = new SimulatorState(resolve(options, seed))
    const host = listen.host ?? "127.0.0.1"
    const port = listen.port ?? 0
    const server = Http.createServer({ keepAlive: true, noDelay: true }, state.handle)
    const sockets = new Set<Socket>()
    server.on("connection", (socket: Socket) => {
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
    })
    yield* Effect.acquireRelease(
      Effect.async<void, SimulatorError>((resume) => {
        const onError = (error: NodeJS.ErrnoException): void => {
          server.off("listening", onListening)
          const hint = error.code === "EADDRINUSE" ? "; choose another port or stop the process using it" : ""
          resume(
            Effect.fail(
              new SimulatorError({
                message: `could not listen on ${host}:${port}: ${error.code ?? error.message}${hint}`,
                cause: error
              })
            )
          )
        }
        const onListening = (): void => {
          server.off("error", onError)
          // Errors after listening (a failed accept) must not crash the host process.
          server.on("error", () => {})
          resume(Effect.void)
        }
        server.once("error", onError)
        server.once("listening", onListening)
        try {
          server.listen(port, host)
        } catch (error) {
          onError(error as NodeJS.ErrnoException)
        }
      }),
      () =>
        Effect.async<void>((resume) => {
          state.close()
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
          for (const socket of sockets) socket.destroy()
        })
    )
    const address = server.address() as AddressInfo
    const simulator: Simulator = {
      url: `http://${urlHost(address)}:${address.port}`,
      port: address.port,
      options: () => state.options,
      setOptions: (patch) => state.setOptions(patch),
      requests: () => state.requests(),
      stats: () => state.stats(),
      reset: () => state.reset()
    }
    return simulator
  })
