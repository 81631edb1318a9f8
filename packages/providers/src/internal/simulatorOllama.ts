/**
 * The simulated upstream's Ollama dialect: the native `POST /api/chat` (NDJSON streaming, streaming
 * unless `stream: false`) and `POST /api/embed`.
 */
import type { Answer, Body, Dialect, Frames } from "./simulatorDialect.js"
import { isObject } from "./simulatorDialect.js"

const errorBody = (_status: number, message: string): string => JSON.stringify({ error: message })

const ROLES = new Set(["system", "user", "assistant", "tool"])

const problem = (body: Body): string | undefined => {
  if (typeof body["model"] !== "string" || body["model"] === "") return "model is required"
  const messages = body["messages"]
  if (!Array.isArray(messages) || messages.length === 0) return "messages are required"
  for (const [i, message] of (messages as ReadonlyArray<unknown>).entries()) {
    if (!isObject(message) || !ROLES.has(message["role"] as string)) return `messages[${i}]: invalid role`
    const images = message["images"]
    if (images !== undefined) {
      if (!Array.isArray(images)) return `messages[${i}].images: expected an array of base64 strings`
      for (const image of images as ReadonlyArray<unknown>) {
        if (typeof image !== "string" || image.startsWith("data:") || image.startsWith("http")) {
          return `messages[${i}].images: illegal base64 data`
        }
      }
    }
    const calls = message["tool_calls"]
    if (Array.isArray(calls)) {
      for (const call of calls as ReadonlyArray<unknown>) {
        const fn = isObject(call) ? call["function"] : undefined
        if (!isObject(fn) || !isObject(fn["arguments"])) return `messages[${i}].tool_calls: arguments must be an object`
      }
    }
  }
  return undefined
}

const options = (body: Body): Body => (isObject(body["options"]) ? body["options"] : {})

const tool = (body: Body): string | undefined => {
  const tools = body["tools"]
  if (!Array.isArray(tools) || tools.length === 0) return undefined
  const messages = body["messages"] as ReadonlyArray<unknown>
  const last = messages[messages.length - 1]
  if (isObject(last) && last["role"] === "tool") return undefined
  const first: unknown = tools[0]
  const fn = isObject(first) ? first["function"] : undefined
  return isObject(fn) && typeof fn["name"] === "string" ? fn["name"] : "tool"
}

/** The `parameters` schema of the tool `name`: its call's `arguments` are built to match. */
const toolSchema = (body: Body, name: string): unknown => {
  const tools = Array.isArray(body["tools"]) ? (body["tools"] as ReadonlyArray<unknown>) : []
  const found = tools.find((t) => isObject(t) && isObject(t["function"]) && t["function"]["name"] === name)
  return isObject(found) && isObject(found["function"]) ? found["function"]["parameters"] : undefined
}

const createdAt = (a: Answer) => new Date(a.now).toISOString()

const final = (a: Answer, message: Record<string, unknown>) => ({
  model: a.model,
  created_at: createdAt(a),
  message,
  done: true,
  done_reason: a.finish === "length" ? "length" : "stop",
  total_duration: 1000,
  prompt_eval_count: a.inputTokens,
  eval_count: a.outputTokens
})

const assistant = (a: Answer): Record<string, unknown> =>
  a.tool !== undefined
    ? { role: "assistant", content: "", tool_calls: [{ function: { name: a.tool, arguments: a.toolInput } }] }
    : { role: "assistant", content: a.completion.content }

/** One line per word (`done: false`), then the final line with counts; a tool call whole in one line. */
const frames = (a: Answer): Frames => {
  const line = (value: unknown) => JSON.stringify(value) + "\n"
  const frames: Array<string> = []
  if (a.tool !== undefined) {
    frames.push(line({ model: a.model, created_at: createdAt(a), message: assistant(a), done: false }))
  } else {
    for (const content of a.completion.pieces) {
      frames.push(
        line({ model: a.model, created_at: createdAt(a), message: { role: "assistant", content }, done: false })
      )
    }
  }
  const content = frames.length
  frames.push(line(final(a, { role: "assistant", content: "" })))
  return { frames, steps: frames.map((_, i) => Math.min(i, content - 1 < 0 ? 0 : content - 1)), head: 0, content }
}

/** Ollama's native API: `/api/chat` and `/api/embed`. */
export const dialect: Dialect = {
  route: (path) =>
    path === "/api/chat" ? { _tag: "chat" } : path === "/api/embed" ? { _tag: "embeddings" } : undefined,
  problem,
  promptMessages: (body) => body["messages"] as ReadonlyArray<unknown>,
  maxTokens: (body) => options(body)["num_predict"],
  streams: (body) => body["stream"] !== false,
  tool,
  toolSchema,
  json: (body) => body["format"] !== undefined,
  schema: (body) => (isObject(body["format"]) ? body["format"] : undefined),
  message: (a) => JSON.stringify(final(a, assistant(a))),
  frames,
  malformed: `{"model":"m","message":{"role":"assistant","content":"lor\n`,
  streamType: "application/x-ndjson",
  errorBody,
  rateLimitHeaders: () => ({}),
  embeddingsRequest: (body) => {
    const input = body["input"]
    const texts = typeof input === "string" ? [input] : input
    if (!Array.isArray(texts) || texts.length === 0 || !texts.every((t) => typeof t === "string")) {
      return "input must be a string or an array of strings"
    }
    const d = body["dimensions"]
    return { texts, dimensions: typeof d === "number" && Number.isInteger(d) && d > 0 && d <= 4096 ? d : undefined }
  },
  embeddings: (model, vectors, tokens) => JSON.stringify({ model, embeddings: vectors, prompt_eval_count: tokens })
}
