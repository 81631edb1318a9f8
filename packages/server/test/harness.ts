/** Test harness: the real gateway on 127.0.0.1:0 against in-process simulated upstreams. */
import type { Config as SluiceConfig } from "@sluice/core"
import { Config } from "@sluice/core"
import type { Simulator } from "@sluice/providers"
import { Cause, ConfigProvider, Context, Effect, Either, Layer, Logger, LogLevel } from "effect"
import type { IncomingMessage, ServerResponse } from "node:http"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import OpenAI from "openai"
import { Listening } from "../src/Gateway.js"
import * as Server from "../src/Server.js"
import * as Sluice from "../src/Sluice.js"
import * as Telemetry from "../src/Telemetry.js"
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base"

/** A running gateway for a test. */
export interface Gateway {
  readonly url: string
  /** An `openai` client for the gateway (API key `sk-test`, no SDK retries). */
  readonly client: OpenAI
  /** Another `openai` client for the gateway, sending `apiKey` as its bearer token. */
  readonly clientWith: (apiKey: string) => OpenAI
  readonly simulator: (upstream: string) => Simulator.Simulator
  /** Attributes of every finished `sluice.route` span so far, oldest first (decisions as traced). */
  readonly routes: () => ReadonlyArray<Readonly<Record<string, unknown>>>
  /** Every finished span so far, oldest first. */
  readonly spans: () => ReadonlyArray<ReadableSpan>
  /**
   * A service of the running gateway's layer (e.g. `CircuitBreaker`, `StateStore`, `Topology`), as
   * the admin API would reach it. Throws when the layer does not provide it.
   */
  readonly service: <I, S>(tag: Context.Tag<I, S>) => S
}

/** Harness settings beyond the server's options. */
export interface HarnessOptions extends Server.Options {
  /**
   * Environment variables the gateway sees while it starts (e.g. the API keys of
   * `server.priorities`), on top of the real environment; `process.env` is left alone.
   */
  readonly env?: Readonly<Record<string, string>>
  /** Collects every log line the gateway writes (message and annotations), instead of printing it. */
  readonly logs?: Array<string>
  /**
   * The address the gateway binds, 127.0.0.1 unless a test is about a gateway other machines can
   * reach (`0.0.0.0`); the test still talks to it through 127.0.0.1.
   */
  readonly host?: string
}

/** A list attribute of a route span (exported as an array). */
export const listAttribute = (
  route: Readonly<Record<string, unknown>> | undefined,
  key: string
): ReadonlyArray<string> => {
  const value = route?.[key]
  if (value === undefined) return []
  if (!Array.isArray(value)) throw new Error(`${key} is not an array: ${String(value)}`)
  return value as ReadonlyArray<string>
}

/** Starts the gateway for `config` (port forced to 0) in the test's scope. */
export const startGateway = (config: SluiceConfig.ConfigFile, options: HarnessOptions = {}) =>
  Effect.gen(function* () {
    const { env, logs, host = "127.0.0.1", ...serverOptions } = options
    // Decisions are read back from the trace, as a user would in Jaeger.
    const exporter = new InMemorySpanExporter()
    const build = Layer.build(
      Server.layer(
        { ...config, server: { ...config.server, host, port: 0 } },
        {
          banner: false,
          telemetry: Telemetry.layerExporter(exporter),
          // Quiet unless the test reads the log lines (no access line per request on the console).
          logging:
            logs === undefined
              ? Logger.minimumLogLevel(LogLevel.Warning)
              : Logger.replace(
                  Logger.defaultLogger,
                  Logger.make(({ message, annotations, cause }) => {
                    logs.push(`${JSON.stringify(message)} ${JSON.stringify([...annotations])} ${Cause.pretty(cause)}`)
                  })
                ),
          drainMs: 0,
          ...serverOptions
        }
      )
    )
    const context = yield* env === undefined
      ? build
      : Effect.withConfigProvider(
          build,
          ConfigProvider.fromMap(new Map(Object.entries(env))).pipe(
            ConfigProvider.orElse(() => ConfigProvider.fromEnv())
          )
        )
    const { port } = Context.get(context, Listening)
    const simulators = Context.get(context, Sluice.Simulators)
    const url = `http://127.0.0.1:${port}`
    const clientWith = (apiKey: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0, timeout: 10_000 })
    const simulator = (upstream: string) => {
      const found = simulators.find((s) => s.upstream === upstream)
      if (found === undefined) throw new Error(`no simulator for ${upstream}`)
      return found.simulator
    }
    const spans = () => exporter.getFinishedSpans()
    const routes = () =>
      spans()
        .filter((span) => span.name === "sluice.route")
        .map((span) => span.attributes as Readonly<Record<string, unknown>>)
    const service = <I, S>(tag: Context.Tag<I, S>): S => Context.unsafeGet(context as Context.Context<I>, tag)
    return { url, client: clientWith("sk-test"), clientWith, simulator, routes, spans, service } satisfies Gateway
  })

/** A config with simulated upstreams (started in-process) and pools, with schema defaults applied. */
export const simulatedConfig = (
  upstreams: ReadonlyArray<Record<string, unknown>>,
  pools: ReadonlyArray<Record<string, unknown>>,
  server: Record<string, unknown> = {}
): SluiceConfig.ConfigFile => {
  const result = Config.decode(
    { server, upstreams: upstreams.map((u) => ({ provider: "simulated", ...u })), pools },
    "test"
  )
  if (Either.isLeft(result)) throw new Error(result.left.message)
  return result.right
}

/** A whole chat completion answering "ok" as an OpenAI-compatible upstream writes it, with this usage. */
export const completionJson = (promptTokens: number, completionTokens: number): string =>
  JSON.stringify({
    id: "c",
    object: "chat.completion",
    created: 1,
    model: "m",
    choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
    usage: {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens
    }
  })

/** A stand-in upstream for a test: `handle` answers every request; its base URL ends in `/v1`. */
export const startUpstream = (handle: (request: IncomingMessage, body: string, response: ServerResponse) => void) =>
  Effect.gen(function* () {
    const server = createServer((request, response) => {
      let body = ""
      request.setEncoding("utf8")
      request.on("data", (chunk: string) => (body += chunk))
      request.on("end", () => handle(request, body, response))
    })
    yield* Effect.acquireRelease(
      Effect.async<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
      () =>
        Effect.async<void>((resume) => {
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
        })
    )
    return { baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1` }
  })

/**
 * One streaming chat request through the SDK, iterated to its end: the upstream the gateway named,
 * the content and last finish reason received, and the error the SDK raised while iterating, if any.
 */
export const streamed = (client: OpenAI) =>
  Effect.promise(async () => {
    const { data: stream, response } = await client.chat.completions
      .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }], stream: true })
      .withResponse()
    let content = ""
    let finishReason: string | null = null
    let error: unknown = undefined
    try {
      for await (const chunk of stream) {
        content += chunk.choices[0]?.delta.content ?? ""
        finishReason = chunk.choices[0]?.finish_reason ?? finishReason
      }
    } catch (e) {
      error = e
    }
    return { upstream: response.headers.get("x-sluice-upstream"), content, finishReason, error }
  })

/**
 * One streamed response through the SDK's Responses API (`gpt-4o-mini`, input "Hi"): the event types
 * in order, the text of its deltas, and the response the SDK accumulated.
 */
export const streamedResponse = (client: OpenAI) =>
  Effect.promise(async () => {
    const stream = client.responses.stream({ model: "gpt-4o-mini", input: "Hi" })
    const events: Array<string> = []
    let text = ""
    stream.on("event", (event) => events.push(event.type))
    stream.on("response.output_text.delta", (event) => (text += event.delta))
    const final = await stream.finalResponse()
    return { events, final, text }
  })

/** Waits, polling every 10 ms for up to 3 s, until `f` gives a value (for what happens in the background). */
export const eventually = <A>(f: () => A | undefined) =>
  Effect.promise(async () => {
    for (let i = 0; i < 300; i++) {
      const value = f()
      if (value !== undefined) return value
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    throw new Error("timed out waiting")
  })
