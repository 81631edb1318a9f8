// Type-checked by test/pack.test.ts with a strict NodeNext `tsc --noEmit` in a fresh project where
// the packed @sluice/* tarballs are installed (and by the repository's own type check, on sources).
import type { Config, Provider, StateStore, Strategy } from "@sluice/core"
import { Errors, Topology } from "@sluice/core"
import * as TopologyModule from "@sluice/core/Topology"
import { Providers, Simulator } from "@sluice/providers"
import { Strategies } from "@sluice/strategies"
import { ConfigFile, Server, Telemetry } from "@sluice/server"
import type { Effect, Layer, Scope } from "effect"

export const pool: Topology.Pool = TopologyModule.pool({ id: "chat", models: ["gpt-4o-mini"], upstreams: [] })
export const status: number = Errors.toOpenAI(new Errors.ModelNotFound({ model: "gpt-5", known: [] })).status
export const strategies: Layer.Layer<Strategy.Strategy, Config.ConfigError, Topology.Topology | StateStore.StateStore> =
  Strategies.layer()
export const providers: Layer.Layer<Provider.Provider> = Providers.layer()
export const simulator: Effect.Effect<Simulator.Simulator, Simulator.SimulatorError, Scope.Scope> = Simulator.start()
export const load: Effect.Effect<Config.ConfigFile, Config.ConfigError> = ConfigFile.load("sluice.yaml")
export const gateway = (config: Config.ConfigFile) => Server.layer(config)

// The types are real, not `any`: each statement below must fail to compile.
// @ts-expect-error a pool needs an id
Topology.pool({ models: [], upstreams: [] })
// @ts-expect-error an error's HTTP status is a number
export const wrong: string = Errors.toOpenAI(new Errors.ModelNotFound({ model: "gpt-5", known: [] })).status
// @ts-expect-error internal modules are not exported
export const internal = import("@sluice/core/internal/now.js")
// @ts-expect-error a span exporter (a type from @opentelemetry/sdk-trace-base) is not a string
export const exporter = Telemetry.layerExporter("console")
