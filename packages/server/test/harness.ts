/** Test harness: the real gateway on 127.0.0.1:0 against in-process simulated upstreams. */
import type { Config as SluiceConfig } from "@sluice/core"
import { Config } from "@sluice/core"
import type { Simulator } from "@sluice/providers"
import { Context, Effect, Either, Layer } from "effect"
import OpenAI from "openai"
import { Listening } from "../src/Gateway.js"
import * as Server from "../src/Server.js"
import * as Sluice from "../src/Sluice.js"
import * as Telemetry from "../src/Telemetry.js"
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"

/** A running gateway for a test. */
export interface Gateway {
  readonly url: string
  readonly client: OpenAI
  readonly simulator: (upstream: string) => Simulator.Simulator
  /** Attributes of every finished `sluice.route` span so far, oldest first (decisions as traced). */
  readonly routes: () => ReadonlyArray<Readonly<Record<string, unknown>>>
}

/** Parses a JSON-text array attribute of a route span. */
export const listAttribute = (
  route: Readonly<Record<string, unknown>> | undefined,
  key: string
): ReadonlyArray<string> =>
  route === undefined || route[key] === undefined ? [] : (JSON.parse(String(route[key])) as ReadonlyArray<string>)

/** Starts the gateway for `config` (port forced to 0) in the test's scope. */
export const startGateway = (config: SluiceConfig.ConfigFile, options: Server.Options = {}) =>
  Effect.gen(function* () {
    // Decisions are read back from the trace, as a user would in Jaeger.
    const exporter = new InMemorySpanExporter()
    const context = yield* Layer.build(
      Server.layer(
        { ...config, server: { ...config.server, host: "127.0.0.1", port: 0 } },
        {
          banner: false,
          telemetry: Telemetry.layerExporter(exporter),
          ...options
        }
      )
    )
    const { port } = Context.get(context, Listening)
    const simulators = Context.get(context, Sluice.Simulators)
    const url = `http://127.0.0.1:${port}`
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "sk-test", maxRetries: 0, timeout: 10_000 })
    const simulator = (upstream: string) => {
      const found = simulators.find((s) => s.upstream === upstream)
      if (found === undefined) throw new Error(`no simulator for ${upstream}`)
      return found.simulator
    }
    const routes = () =>
      exporter
        .getFinishedSpans()
        .filter((span) => span.name === "sluice.route")
        .map((span) => span.attributes as Readonly<Record<string, unknown>>)
    return { url, client, simulator, routes } satisfies Gateway
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
