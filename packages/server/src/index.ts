/** Sluice server: the OpenAI-compatible HTTP gateway, its assembly from a config, tracing and the CLI. */
export * as Cli from "./Cli.js"
export * as ConfigFile from "./ConfigFile.js"
export * as Gateway from "./Gateway.js"
export * as Messages from "./Messages.js"
export * as Responses from "./Responses.js"
export * as Server from "./Server.js"
export * as Sluice from "./Sluice.js"
export * as Telemetry from "./Telemetry.js"
