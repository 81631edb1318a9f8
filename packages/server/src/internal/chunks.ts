/** Reading the OpenAI chunks a routed stream carries, for the endpoints that re-encode them. */

type Json = Record<string, unknown>

const isObject = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

/** What an endpoint translating a chunk needs of it: usage, finish reason and the first choice's delta. */
export interface Chunk {
  readonly usage: Json | undefined
  readonly finish: unknown
  readonly delta: Json
}

/** One chunk's JSON text read; undefined when it is not an object (the router checked it already). */
export const readChunk = (data: string): Chunk | undefined => {
  let chunk: unknown
  try {
    chunk = JSON.parse(data)
  } catch {
    return undefined
  }
  if (!isObject(chunk)) return undefined
  const choice = Array.isArray(chunk["choices"]) ? (chunk["choices"][0] as unknown) : undefined
  return {
    usage: isObject(chunk["usage"]) ? chunk["usage"] : undefined,
    finish: isObject(choice) ? (choice["finish_reason"] ?? undefined) : undefined,
    delta: isObject(choice) && isObject(choice["delta"]) ? choice["delta"] : {}
  }
}
