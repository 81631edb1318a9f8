/**
 * OpenAI chat and embeddings requests → Gemini `generateContent` / `batchEmbedContents` requests.
 * What Gemini cannot take is an {@link Unsupported} naming the feature.
 */
import { Wire } from "@sluice/core"
import { Unsupported, parseArguments } from "./anthropicRequest.js"
import { signatureOf, SKIP_VALIDATION, validatesSignatures } from "./geminiSignature.js"

type Json = Record<string, unknown>

const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

const DATA_URL = /^data:([^;,]+);base64,(.*)$/s

const MIME_BY_EXTENSION: Readonly<Record<string, string>> = {
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  webp: "image/webp",
  gif: "image/gif",
  heic: "image/heic"
}

/** An OpenAI content part as a Gemini part. */
const partOf = (part: unknown): Json | Unsupported | undefined => {
  if (!isObject(part)) return undefined
  switch (part["type"]) {
    case "text":
      return typeof part["text"] === "string" ? { text: part["text"] } : undefined
    case "image_url": {
      const image = part["image_url"]
      const url = typeof image === "string" ? image : isObject(image) ? image["url"] : undefined
      if (typeof url !== "string") return new Unsupported("image", "an image_url part without a url")
      const data = DATA_URL.exec(url)
      if (data !== null) return { inlineData: { mimeType: data[1], data: data[2] } }
      const extension = /\.([a-z0-9]+)(?:[?#]|$)/i.exec(url)?.[1]?.toLowerCase() ?? ""
      return { fileData: { mimeType: MIME_BY_EXTENSION[extension] ?? "image/jpeg", fileUri: url } }
    }
    case "input_audio": {
      const audio = isObject(part["input_audio"]) ? part["input_audio"] : {}
      return { inlineData: { mimeType: `audio/${String(audio["format"] ?? "wav")}`, data: audio["data"] } }
    }
    default:
      return new Unsupported(String(part["type"]), `content parts of type '${String(part["type"])}'`)
  }
}

const partsOf = (content: unknown): Array<Json> | Unsupported => {
  if (typeof content === "string") return content === "" ? [] : [{ text: content }]
  if (!Array.isArray(content)) return []
  const out: Array<Json> = []
  for (const part of content) {
    const p = partOf(part)
    if (p instanceof Unsupported) return p
    if (p !== undefined) out.push(p)
  }
  return out
}

const textOf = (content: unknown): string => {
  if (typeof content === "string") return content
  if (!Array.isArray(content)) return ""
  return content.map((p) => (isObject(p) && typeof p["text"] === "string" ? p["text"] : "")).join("")
}

/** A tool result as the object Gemini's `functionResponse.response` must be. */
const responseOf = (content: unknown): Json => {
  const text = textOf(content)
  try {
    const value: unknown = JSON.parse(text)
    return isObject(value) ? value : { result: value }
  } catch {
    return { result: text }
  }
}

/** JSON Schema keywords Gemini's `responseSchema` and function `parameters` refuse. */
const UNSUPPORTED_KEYS = new Set(["$schema", "additionalProperties", "$id", "$defs", "definitions", "strict"])

/** A schema without the keywords Gemini refuses, to a bounded depth (deeper parts are kept as they are). */
export const cleanSchema = (schema: unknown, depth = 32): unknown => {
  if (depth === 0 || typeof schema !== "object" || schema === null) return schema
  if (Array.isArray(schema)) return schema.map((item) => cleanSchema(item, depth - 1))
  const out: Json = {}
  for (const [key, value] of Object.entries(schema)) {
    if (!UNSUPPORTED_KEYS.has(key)) out[key] = cleanSchema(value, depth - 1)
  }
  return out
}

const toolConfigOf = (choice: unknown): Json | undefined => {
  if (choice === "none") return { functionCallingConfig: { mode: "NONE" } }
  if (choice === "required") return { functionCallingConfig: { mode: "ANY" } }
  if (choice === "auto") return { functionCallingConfig: { mode: "AUTO" } }
  if (isObject(choice) && isObject(choice["function"])) {
    return { functionCallingConfig: { mode: "ANY", allowedFunctionNames: [choice["function"]["name"]] } }
  }
  return undefined
}

/**
 * The `generateContent` body for an OpenAI chat request: system and developer messages as
 * `systemInstruction`; turns as `contents` (`assistant` → `model`, consecutive turns of one role
 * merged); tool calls as `functionCall` parts (with the thought signature they came with, or for
 * `model` of Gemini 3 or later the documented stand-in on a turn's first unsigned call) and tool
 * results as `functionResponse` parts (named
 * after the call they answer); images as `inlineData` (base64) or `fileData` (URL); tools as
 * `functionDeclarations` and `tool_choice` as `toolConfig`; sampling, `max_tokens`, `stop` and `n`
 * in `generationConfig`, JSON output as `responseMimeType` + `responseSchema`.
 */
export const toGemini = (request: Wire.ChatCompletionRequest, model = ""): Json | Unsupported => {
  // The first call of a turn Gemini did not make (no signature) gets the documented stand-in, where
  // the model validates signatures: a tool loop begun on another upstream can fail over to Gemini 3.
  const standIn = validatesSignatures(model)
  const system: Array<Json> = []
  const contents: Array<{ role: "user" | "model"; parts: Array<Json> }> = []
  /** Tool call id → function name, to name each result after its call. */
  const names = new Map<unknown, unknown>()
  for (const message of request.messages as ReadonlyArray<Wire.ChatMessage>) {
    let role: "user" | "model"
    let parts: Array<Json> | Unsupported
    switch (message.role) {
      case "system":
      case "developer": {
        const text = textOf(message.content)
        if (text !== "") system.push({ text })
        continue
      }
      case "assistant": {
        role = "model"
        parts = partsOf(message.content)
        const calls = message["tool_calls"]
        if (!(parts instanceof Unsupported) && Array.isArray(calls)) {
          for (const [i, call] of calls.entries()) {
            if (!isObject(call) || !isObject(call["function"])) continue
            names.set(call["id"], call["function"]["name"])
            const signature = signatureOf(call) ?? (standIn && i === 0 ? SKIP_VALIDATION : undefined)
            parts.push({
              functionCall: { name: call["function"]["name"], args: parseArguments(call["function"]["arguments"]) },
              ...(signature === undefined ? {} : { thoughtSignature: signature })
            })
          }
        }
        break
      }
      case "tool":
      case "function": {
        role = "user"
        const name = message.role === "tool" ? (names.get(message["tool_call_id"]) ?? message.name) : message.name
        parts = [{ functionResponse: { name, response: responseOf(message.content) } }]
        break
      }
      default:
        role = "user"
        parts = partsOf(message.content)
    }
    if (parts instanceof Unsupported) return parts
    const last = contents[contents.length - 1]
    if (last !== undefined && last.role === role) last.parts.push(...parts)
    else contents.push({ role, parts })
  }
  const body: Json = { contents }
  if (system.length > 0) body["systemInstruction"] = { parts: system }
  const config: Json = {}
  if (typeof request["temperature"] === "number") config["temperature"] = request["temperature"]
  if (typeof request["top_p"] === "number") config["topP"] = request["top_p"]
  const max = Wire.requestedMaxTokens(request)
  if (max !== undefined) config["maxOutputTokens"] = max
  const stop = request["stop"]
  if (typeof stop === "string") config["stopSequences"] = [stop]
  else if (Array.isArray(stop) && stop.length > 0) config["stopSequences"] = stop
  if (typeof request["n"] === "number" && request["n"] > 1) config["candidateCount"] = request["n"]
  if (typeof request["seed"] === "number") config["seed"] = request["seed"]
  const format = request.response_format as Json | undefined
  if (format?.["type"] === "json_object" || format?.["type"] === "json_schema") {
    config["responseMimeType"] = "application/json"
    const spec = isObject(format["json_schema"]) ? format["json_schema"] : undefined
    if (spec !== undefined && isObject(spec["schema"])) config["responseSchema"] = cleanSchema(spec["schema"])
  }
  if (Object.keys(config).length > 0) body["generationConfig"] = config
  const declarations: Array<Json> = []
  for (const tool of request.tools ?? []) {
    const fn = (tool as Json)["function"]
    if (tool.type !== "function" || !isObject(fn)) {
      return new Unsupported(`${tool.type} tools`, `tools of type '${tool.type}' (only function tools translate)`)
    }
    declarations.push({
      name: fn["name"],
      ...(typeof fn["description"] === "string" ? { description: fn["description"] } : {}),
      ...(isObject(fn["parameters"]) ? { parameters: cleanSchema(fn["parameters"]) } : {})
    })
  }
  if (declarations.length > 0) {
    body["tools"] = [{ functionDeclarations: declarations }]
    const toolConfig = toolConfigOf(request["tool_choice"])
    if (toolConfig !== undefined) body["toolConfig"] = toolConfig
  }
  return body
}

/** The `batchEmbedContents` body for an OpenAI embeddings request (texts only; token arrays are unsupported). */
export const toGeminiEmbeddings = (request: Wire.EmbeddingsRequest, model: string): Json | Unsupported => {
  const input = typeof request.input === "string" ? [request.input] : request.input
  if (!input.every((item): item is string => typeof item === "string")) {
    return new Unsupported("token input", "Gemini embeds texts, not token arrays")
  }
  return {
    requests: input.map((text) => ({
      model: `models/${model}`,
      content: { parts: [{ text }] },
      ...(request.dimensions !== undefined ? { outputDimensionality: request.dimensions } : {})
    }))
  }
}
