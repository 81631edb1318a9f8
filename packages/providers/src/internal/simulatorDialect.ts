/**
 * What the simulated upstream needs to know to speak a provider's own API: where its chat (and
 * embeddings) endpoints are, what a request must look like, and how answers, streams and errors are
 * written. The OpenAI dialect is the simulator's own code path; the others are one of these.
 */
import type { Completion } from "./simulatorContent.js"

/** A request body, parsed. */
export type Body = Readonly<Record<string, unknown>>

/** What the simulator decided to answer, for a dialect to write in its own shape. */
export interface Answer {
  readonly id: string
  readonly model: string
  /** The tool called, or undefined for a text answer. */
  readonly tool: string | undefined
  readonly toolId: string
  /** The tool call's input: a value valid against the tool's schema (see `toolSchema`), `{}` without one. */
  readonly toolInput: unknown
  readonly completion: Completion
  readonly finish: "stop" | "length" | "tool"
  readonly inputTokens: number
  readonly outputTokens: number
  /** Epoch milliseconds. */
  readonly now: number
}

/** A stream's frames, the step each is sent at, and how many opening frames precede the content. */
export interface Frames {
  readonly frames: Array<string>
  readonly steps: Array<number>
  readonly head: number
  readonly content: number
}

/** Which endpoint a request is for: chat (with the model named in its path, if any), or embeddings. */
export type Route =
  | { readonly _tag: "chat"; readonly model?: string | undefined; readonly stream?: boolean | undefined }
  | { readonly _tag: "embeddings"; readonly model?: string | undefined }

/** A provider's API as the simulator speaks it. */
export interface Dialect {
  /** The endpoint of a POST to `path` with `query`, or undefined for a 404. */
  readonly route: (path: string, query: URLSearchParams) => Route | undefined
  /** What is wrong with a chat request, in the provider's words; undefined when well-formed. */
  readonly problem: (body: Body) => string | undefined
  /** The messages (OpenAI-shaped enough for the token estimate: `content` strings or text parts). */
  readonly promptMessages: (body: Body) => ReadonlyArray<unknown>
  /** The completion token limit the request sets, if any. */
  readonly maxTokens: (body: Body) => unknown
  /** Whether the request streams (its route may say so too). */
  readonly streams: (body: Body) => boolean
  /** The tool to call, or undefined to answer with text. */
  readonly tool: (body: Body) => string | undefined
  /** Whether the answer must be JSON. */
  readonly json: (body: Body) => boolean
  /** The JSON schema the answer must match, when the request gives one. */
  readonly schema?: (body: Body) => unknown
  /**
   * The input schema of `tool`, which its call's input is built to match; `{}` without one.
   */
  readonly toolSchema?: (body: Body, tool: string) => unknown
  readonly message: (answer: Answer) => string
  readonly frames: (answer: Answer) => Frames
  /** One frame that is not valid JSON, as a proxy that mangles one would send it. */
  readonly malformed: string
  /** The content type of a stream. */
  readonly streamType: string
  readonly errorBody: (status: number, message: string) => string
  /** The rate-limit headers of an answer, from the simulator's OpenAI-style ones. */
  readonly rateLimitHeaders: (
    headers: Readonly<Record<string, string>>,
    now: number,
    resetMs: { readonly requests: number; readonly tokens: number }
  ) => Record<string, string>
  /** Embeddings: what is wrong with the request, else its texts and dimensions. */
  readonly embeddingsRequest?: (
    body: Body
  ) => string | { readonly texts: ReadonlyArray<string>; readonly dimensions: number | undefined }
  readonly embeddings?: (model: string, vectors: ReadonlyArray<ReadonlyArray<number>>, tokens: number) => string
}

export const isObject = (u: unknown): u is Body => typeof u === "object" && u !== null && !Array.isArray(u)
