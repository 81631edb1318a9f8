/** Sluice providers: translation to each upstream's API, and the simulated upstream. */
export * as Anthropic from "./Anthropic.js"
export * as Gemini from "./Gemini.js"
export * as Lab from "./Lab.js"
export * as LabScenarios from "./LabScenarios.js"
export * as Ollama from "./Ollama.js"
export * as OpenAICompatible from "./OpenAICompatible.js"
export * as Providers from "./Providers.js"
export * as Simulator from "./Simulator.js"
