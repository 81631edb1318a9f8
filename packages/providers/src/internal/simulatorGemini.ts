/**
 * The simulated upstream's Gemini dialect: `POST /v1beta/models/{model}:generateContent`,
 * `:streamGenerateContent?alt=sse` and `:batchEmbedContents`, in the Gemini API's own shapes.
 */
import type { Answer, Body, Dialect, Frames } from "./simulatorDialect.js"
import { isObject } from "./simulatorDialect.js"
import { SKIP_VALIDATION } from "./geminiSignature.js"

const ROUTE = /^\/v1(?:beta)?\/models\/([^/:]+):(generateContent|streamGenerateContent|batchEmbedContents)$/

const STATUS: Readonly<Record<number, string>> = {
  400: "INVALID_ARGUMENT",
  401: "UNAUTHENTICATED",
  403: "PERMISSION_DENIED",
  404: "NOT_FOUND",
  429: "RESOURCE_EXHAUSTED",
  500: "INTERNAL",
  503: "UNAVAILABLE",
  504: "DEADLINE_EXCEEDED"
}

const errorBody = (code: number, message: string): string =>
  JSON.stringify({ error: { code, message, status: STATUS[code] ?? "UNKNOWN" } })

const contentsOf = (body: Body): ReadonlyArray<unknown> =>
  Array.isArray(body["contents"]) ? (body["contents"] as ReadonlyArray<unknown>) : []

const partsOf = (content: unknown): ReadonlyArray<unknown> =>
  isObject(content) && Array.isArray(content["parts"]) ? (content["parts"] as ReadonlyArray<unknown>) : []

const PART_KEYS = ["text", "inlineData", "fileData", "functionCall", "functionResponse"]

const problem = (body: Body): string | undefined => {
  const contents = contentsOf(body)
  if (contents.length === 0) return "* GenerateContentRequest.contents: contents is not specified"
  for (const [i, content] of contents.entries()) {
    if (!isObject(content)) return `* GenerateContentRequest.contents[${i}]: must be an object`
    const role = content["role"]
    if (role !== undefined && role !== "user" && role !== "model") {
      return `* GenerateContentRequest.contents[${i}].role: Please use a valid role: user, model.`
    }
    const parts = partsOf(content)
    if (parts.length === 0) return `* GenerateContentRequest.contents[${i}].parts: contents.parts must not be empty.`
    for (const [j, part] of parts.entries()) {
      if (!isObject(part) || !PART_KEYS.some((key) => part[key] !== undefined)) {
        return `* GenerateContentRequest.contents[${i}].parts[${j}].data: required oneof field 'data' must have one initialized field`
      }
      const response = part["functionResponse"]
      if (response !== undefined && (!isObject(response) || !isObject(response["response"]))) {
        return `* GenerateContentRequest.contents[${i}].parts[${j}].function_response.response: must be an object`
      }
    }
  }
  return missingSignature(contents)
}

/**
 * The thought signature the simulator gives a call of `name`: opaque base64, as Gemini's are, with
 * `+`, `/` and padding in it, so that whatever carries it must carry it exactly.
 */
export const signatureOf = (name: string): string =>
  Buffer.concat([Buffer.from(`sim-thought:${name}`), Buffer.from([0xfb, 0xff, 0xbf, 0x3e, 0x00])]).toString("base64")

/**
 * As Gemini 3 validates them: in the current turn (the contents after the last user text), the first
 * `functionCall` part of each model step must carry the `thoughtSignature` it came with — unchanged
 * (Gemini refuses a corrupted one as it refuses a missing one).
 */
const missingSignature = (contents: ReadonlyArray<unknown>): string | undefined => {
  let start = 0
  for (const [i, content] of contents.entries()) {
    const texts = partsOf(content).some((p) => isObject(p) && typeof p["text"] === "string")
    if (isObject(content) && content["role"] !== "model" && texts) start = i + 1
  }
  for (let i = start; i < contents.length; i++) {
    const content = contents[i]
    if (!isObject(content) || content["role"] !== "model") continue
    const first = partsOf(content).find((p) => isObject(p) && p["functionCall"] !== undefined)
    if (!isObject(first)) continue
    const name = String((first["functionCall"] as Body)["name"])
    if (typeof first["thoughtSignature"] !== "string") {
      return `Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call \`default_api:${name}\` , position ${i + 1}.`
    }
    // Google's documented stand-in for a call Gemini did not make is taken as a signature.
    if (first["thoughtSignature"] !== signatureOf(name) && first["thoughtSignature"] !== SKIP_VALIDATION) {
      return `Corrupted thought signature. Function call \`default_api:${name}\` , position ${i + 1}.`
    }
  }
  return undefined
}

/** The contents (and system instruction) as messages whose text the token estimate counts. */
const promptMessages = (body: Body): ReadonlyArray<unknown> => {
  const messages = contentsOf(body).map((content) => ({ content: partsOf(content) }))
  const system = body["systemInstruction"]
  return isObject(system) ? [{ content: partsOf(system) }, ...messages] : messages
}

const config = (body: Body): Body => (isObject(body["generationConfig"]) ? body["generationConfig"] : {})

const declarationsOf = (body: Body): ReadonlyArray<unknown> => {
  const tools = Array.isArray(body["tools"]) ? (body["tools"] as ReadonlyArray<unknown>) : []
  return tools.flatMap((t) =>
    isObject(t) && Array.isArray(t["functionDeclarations"]) ? (t["functionDeclarations"] as ReadonlyArray<unknown>) : []
  )
}

/** The schema of the function `tool` (`parameters`, or `parametersJsonSchema`): its call's `args` are built to match. */
const toolSchema = (body: Body, tool: string): unknown => {
  const found = declarationsOf(body).find((d) => isObject(d) && d["name"] === tool)
  return isObject(found) ? (found["parameters"] ?? found["parametersJsonSchema"]) : undefined
}

const tool = (body: Body): string | undefined => {
  const declarations = declarationsOf(body)
  if (declarations.length === 0) return undefined
  const toolConfig = isObject(body["toolConfig"]) ? body["toolConfig"] : {}
  const calling = isObject(toolConfig["functionCallingConfig"]) ? toolConfig["functionCallingConfig"] : {}
  if (calling["mode"] === "NONE") return undefined
  const allowed = calling["allowedFunctionNames"]
  if (calling["mode"] === "ANY" && Array.isArray(allowed) && typeof allowed[0] === "string") return allowed[0]
  const contents = contentsOf(body)
  const answersResults = partsOf(contents[contents.length - 1]).some(
    (p) => isObject(p) && p["functionResponse"] !== undefined
  )
  if (calling["mode"] !== "ANY" && answersResults) return undefined
  const first = declarations[0]
  return isObject(first) && typeof first["name"] === "string" ? first["name"] : "tool"
}

const FINISH = { stop: "STOP", length: "MAX_TOKENS", tool: "STOP" } as const

const usage = (a: Answer) => ({
  promptTokenCount: a.inputTokens,
  candidatesTokenCount: a.outputTokens,
  totalTokenCount: a.inputTokens + a.outputTokens
})

const response = (a: Answer, parts: ReadonlyArray<unknown>, finish: boolean): Record<string, unknown> => ({
  candidates: [{ content: { role: "model", parts }, ...(finish ? { finishReason: FINISH[a.finish] } : {}), index: 0 }],
  ...(finish ? { usageMetadata: usage(a) } : {}),
  modelVersion: a.model,
  responseId: a.id
})

/**
 * A function call as Gemini 3 sends it: `args` matching the function's schema, and its thought
 * signature, to be sent back with the history.
 */
const callPart = (a: Answer, name: string) => ({
  functionCall: { name, args: a.toolInput },
  thoughtSignature: signatureOf(name)
})

const message = (a: Answer): string =>
  JSON.stringify(response(a, a.tool !== undefined ? [callPart(a, a.tool)] : [{ text: a.completion.content }], true))

const frame = (value: unknown) => `data: ${JSON.stringify(value)}\r\n\r\n`

/**
 * The stream as Gemini sends it: one `GenerateContentResponse` per word (the first carries none, as
 * Gemini's first event often does not), the last with `finishReason` and `usageMetadata`; a function
 * call whole in one event. No end marker: the answer just ends.
 */
const frames = (a: Answer): Frames => {
  if (a.tool !== undefined) {
    return {
      frames: [frame(response(a, [callPart(a, a.tool)], true))],
      steps: [0],
      head: 0,
      content: 1
    }
  }
  const pieces = a.completion.pieces
  const frames = pieces.map((text, i) => frame(response(a, [{ text }], i === pieces.length - 1)))
  if (frames.length === 0) frames.push(frame(response(a, [{ text: "" }], true)))
  return { frames, steps: frames.map((_, i) => i), head: 0, content: frames.length }
}

/** Gemini's generateContent family and batchEmbedContents under `/v1beta/models/{model}:`. */
export const dialect: Dialect = {
  route: (path, query) => {
    const match = ROUTE.exec(path)
    if (match === null) return undefined
    const model = decodeURIComponent(match[1]!)
    if (match[2] === "batchEmbedContents") return { _tag: "embeddings", model }
    if (match[2] === "streamGenerateContent" && query.get("alt") !== "sse") return undefined
    return { _tag: "chat", model, stream: match[2] === "streamGenerateContent" }
  },
  problem,
  promptMessages,
  maxTokens: (body) => config(body)["maxOutputTokens"],
  streams: () => false,
  tool,
  toolSchema,
  json: (body) => config(body)["responseMimeType"] === "application/json",
  schema: (body) => config(body)["responseSchema"] ?? config(body)["responseJsonSchema"],
  message,
  frames,
  malformed: `data: {"candidates":[{"content":{"role":"model","parts":[{"text":"lor\r\n\r\n`,
  streamType: "text/event-stream",
  errorBody,
  // Gemini sends no rate-limit headers; a 429 says when to retry.
  rateLimitHeaders: (headers) =>
    headers["retry-after"] !== undefined ? { "retry-after": headers["retry-after"] } : {},
  embeddingsRequest: (body) => {
    const requests = body["requests"]
    if (!Array.isArray(requests) || requests.length === 0)
      return "* BatchEmbedContentsRequest.requests: must not be empty"
    const texts: Array<string> = []
    let dimensions: number | undefined
    for (const request of requests as ReadonlyArray<unknown>) {
      const parts = isObject(request) ? partsOf(request["content"]) : []
      texts.push(parts.map((p) => (isObject(p) && typeof p["text"] === "string" ? p["text"] : "")).join(""))
      const d = isObject(request) ? request["outputDimensionality"] : undefined
      if (typeof d === "number" && Number.isInteger(d) && d > 0 && d <= 4096) dimensions = d
    }
    return { texts, dimensions }
  },
  embeddings: (_model, vectors) => JSON.stringify({ embeddings: vectors.map((values) => ({ values })) })
}
