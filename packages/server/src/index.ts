/**
 * Sluice server: the OpenAI-compatible HTTP gateway, client access rules, config reloads, its
 * assembly from a config, tracing and the CLI. The admin API is `@sluice/server/Admin` (its
 * description `@sluice/server/AdminApi`), loaded by the server only when `server.admin` is set.
 */
export * as Access from "./Access.js"
export * as Cli from "./Cli.js"
export * as ConfigFile from "./ConfigFile.js"
export * as Gateway from "./Gateway.js"
export * as Messages from "./Messages.js"
export * as Responses from "./Responses.js"
export * as Reload from "./Reload.js"
export * as Routing from "./Routing.js"
export * as Server from "./Server.js"
export * as Sluice from "./Sluice.js"
export * as Telemetry from "./Telemetry.js"
