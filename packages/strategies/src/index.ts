/** Sluice selection strategies, each a Layer for core's `Strategy` service, plus the per-pool registry. */
export * as Priority from "./Priority.js"
export * as Random from "./Random.js"
export * as RoundRobin from "./RoundRobin.js"
export * as Strategies from "./Strategies.js"
export * as Weighted from "./Weighted.js"
