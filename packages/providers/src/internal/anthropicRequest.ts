/**
 * OpenAI chat request → Anthropic Messages request. Plain functions over the decoded request; what
 * Anthropic cannot take is an {@link Unsupported} naming the feature, never silently dropped.
 */
import { Wire } from "@sluice/core"
import { Unsupported } from "./unsupported.js"

export { Unsupported } from "./unsupported.js"

/** The name of the forced tool that carries structured output (`response_format`). */
export const JSON_TOOL = "json_response"

type Json = Record<string, unknown>
type Block = Json

const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

const DATA_URL = /^data:([^;,]+);base64,(.*)$/s

/** An OpenAI content part as Anthropic content blocks (text, image by base64 or URL). */
const partToBlock = (part: unknown): Block | Unsupported | undefined => {
  if (!isObject(part)) return undefined
  switch (part["type"]) {
    case "text":
      return typeof part["text"] === "string" && part["text"] !== "" ? { type: "text", text: part["text"] } : undefined
    case "image_url": {
      const image = part["image_url"]
      const url = typeof image === "string" ? image : isObject(image) ? image["url"] : undefined
      if (typeof url !== "string") return new Unsupported("image", "an image_url part without a url")
      const data = DATA_URL.exec(url)
      return data !== null
        ? { type: "image", source: { type: "base64", media_type: data[1], data: data[2] } }
        : { type: "image", source: { type: "url", url } }
    }
    case "input_audio":
      return new Unsupported("audio", "Anthropic takes no audio input")
    case "file":
      return new Unsupported("file", "file parts are not translated to Anthropic documents")
    default:
      return new Unsupported(String(part["type"]), `content parts of type '${String(part["type"])}'`)
  }
}

/** A message's content as blocks (a string as one text block; an empty one as none). */
const contentBlocks = (content: unknown): Array<Block> | Unsupported => {
  if (typeof content === "string") return content === "" ? [] : [{ type: "text", text: content }]
  if (!Array.isArray(content)) return []
  const out: Array<Block> = []
  for (const part of content) {
    const block = partToBlock(part)
    if (block instanceof Unsupported) return block
    if (block !== undefined) out.push(block)
  }
  return out
}

/** A text of a message's content (system prompts, tool results): strings and text parts joined. */
const textOf = (content: unknown): string => {
  if (typeof content === "string") return content
  if (!Array.isArray(content)) return ""
  return content
    .map((part) => (isObject(part) && typeof part["text"] === "string" ? part["text"] : ""))
    .filter((text) => text !== "")
    .join("\n")
}

/** Parsed tool-call arguments: Anthropic wants an object; anything else is wrapped so nothing is lost. */
export const parseArguments = (text: unknown): Json => {
  if (typeof text !== "string" || text.trim() === "") return {}
  try {
    const value: unknown = JSON.parse(text)
    return isObject(value) ? value : { value }
  } catch {
    return { raw: text }
  }
}

/** One OpenAI message as an Anthropic turn (role and blocks), or undefined for a system message. */
const turnOf = (message: Wire.ChatMessage): { role: "user" | "assistant"; blocks: Array<Block> } | Unsupported => {
  switch (message.role) {
    case "assistant": {
      const blocks = contentBlocks(message.content)
      if (blocks instanceof Unsupported) return blocks
      const calls = message["tool_calls"]
      if (Array.isArray(calls)) {
        for (const call of calls) {
          if (!isObject(call) || !isObject(call["function"])) continue
          const fn = call["function"]
          blocks.push({ type: "tool_use", id: call["id"], name: fn["name"], input: parseArguments(fn["arguments"]) })
        }
      }
      return { role: "assistant", blocks }
    }
    case "tool":
    case "function": {
      const id = message.role === "tool" ? message["tool_call_id"] : message.name
      const text = textOf(message.content)
      return {
        role: "user",
        blocks: [{ type: "tool_result", tool_use_id: id, ...(text !== "" ? { content: text } : {}) }]
      }
    }
    default: {
      const blocks = contentBlocks(message.content)
      return blocks instanceof Unsupported ? blocks : { role: "user", blocks }
    }
  }
}

/** Anthropic's `tool_choice` for OpenAI's, with `parallel_tool_calls: false` as `disable_parallel_tool_use`. */
const toolChoiceOf = (choice: unknown, parallel: unknown): Json | undefined => {
  let out: Json | undefined
  if (choice === "auto") out = { type: "auto" }
  else if (choice === "none") out = { type: "none" }
  else if (choice === "required") out = { type: "any" }
  else if (isObject(choice) && isObject(choice["function"])) out = { type: "tool", name: choice["function"]["name"] }
  if (parallel === false) out = { ...(out ?? { type: "auto" }), disable_parallel_tool_use: true }
  return out
}

/** The forced tool that carries structured output, for a `response_format` asking for JSON. */
const jsonTool = (format: unknown): Json | undefined => {
  if (!isObject(format)) return undefined
  if (format["type"] === "json_object") {
    return { name: JSON_TOOL, description: "Respond with a JSON object.", input_schema: { type: "object" } }
  }
  if (format["type"] !== "json_schema") return undefined
  const spec = isObject(format["json_schema"]) ? format["json_schema"] : {}
  const schema = isObject(spec["schema"]) ? spec["schema"] : { type: "object" }
  const description = typeof spec["description"] === "string" ? spec["description"] : undefined
  return {
    name: JSON_TOOL,
    description: `Respond with a JSON object matching the schema${description !== undefined ? `: ${description}` : "."}`,
    input_schema: schema
  }
}

/**
 * The Messages API body for an OpenAI chat request: system prompt hoisted; consecutive turns of one
 * role merged (Anthropic wants them alternating); tool calls and results as `tool_use` /
 * `tool_result` blocks; `max_tokens` the request's, else `defaultMaxTokens`; stop sequences; JSON
 * output through a forced tool named {@link JSON_TOOL}. Fields Anthropic has no counterpart for are
 * not sent; `n > 1` and audio input are {@link Unsupported}.
 */
export const toAnthropic = (
  request: Wire.ChatCompletionRequest,
  model: string,
  defaultMaxTokens: number,
  stream: boolean
): Json | Unsupported => {
  const n = request["n"]
  if (typeof n === "number" && n > 1) return new Unsupported("n", `Anthropic returns one choice per request (n = ${n})`)
  const system: Array<string> = []
  const messages: Array<{ role: "user" | "assistant"; content: Array<Block> }> = []
  for (const message of request.messages) {
    if (message.role === "system" || message.role === "developer") {
      const text = textOf(message.content)
      if (text !== "") system.push(text)
      continue
    }
    const turn = turnOf(message)
    if (turn instanceof Unsupported) return turn
    const last = messages[messages.length - 1]
    if (last !== undefined && last.role === turn.role) last.content.push(...turn.blocks)
    else messages.push({ role: turn.role, content: turn.blocks })
  }
  const body: Json = {
    model,
    max_tokens: Math.max(1, Wire.requestedMaxTokens(request) ?? defaultMaxTokens),
    messages: messages.map((m) =>
      // One text block is sent as the plain string, as most clients write it.
      m.content.length === 1 && m.content[0]!["type"] === "text" ? { role: m.role, content: m.content[0]!["text"] } : m
    )
  }
  if (system.length > 0) body["system"] = system.join("\n\n")
  if (stream) body["stream"] = true
  const temperature = request["temperature"]
  // OpenAI's range is 0..2, Anthropic's 0..1.
  if (typeof temperature === "number") body["temperature"] = Math.min(1, temperature)
  if (typeof request["top_p"] === "number") body["top_p"] = request["top_p"]
  const stop = request["stop"]
  if (typeof stop === "string") body["stop_sequences"] = [stop]
  else if (Array.isArray(stop) && stop.length > 0) body["stop_sequences"] = stop
  if (request.user !== undefined) body["metadata"] = { user_id: request.user }
  const tools: Array<Json> = []
  for (const tool of request.tools ?? []) {
    const fn = (tool as Json)["function"]
    if (tool.type !== "function" || !isObject(fn)) {
      return new Unsupported(`${tool.type} tools`, `tools of type '${tool.type}' (only function tools translate)`)
    }
    tools.push({
      name: fn["name"],
      ...(typeof fn["description"] === "string" ? { description: fn["description"] } : {}),
      input_schema: isObject(fn["parameters"]) ? fn["parameters"] : { type: "object", properties: {} }
    })
  }
  let choice = toolChoiceOf(request["tool_choice"], request["parallel_tool_calls"])
  const json = jsonTool(request.response_format)
  if (json !== undefined) {
    tools.push(json)
    // With tools of its own the model may still call them; without, it must answer through the JSON tool.
    choice = tools.length === 1 ? { type: "tool", name: JSON_TOOL } : { type: "any" }
  }
  if (tools.length > 0) body["tools"] = tools
  if (choice !== undefined && tools.length > 0) body["tool_choice"] = choice
  return body
}
