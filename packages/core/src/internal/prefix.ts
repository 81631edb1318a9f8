/**
 * The prompt prefix a chat request shares with others — its system and developer messages and its
 * tools, else its first message — as one 32-bit hash: what provider and vLLM prompt caches key on, so
 * a strategy hashing on it sends requests that share a prefix where that prefix is cached.
 */
import type { ChatCompletionRequest } from "../Wire.js"

/** FNV-1a over the characters of `text`, continuing from `hash`. */
const fnv = (hash: number, text: string): number => {
  let h = hash
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193)
  return h
}

/** Murmur3's finaliser: spreads FNV's weak low bits over the whole word. */
export const mix = (hash: number): number => {
  let h = hash ^ (hash >>> 16)
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  return (h ^ (h >>> 16)) >>> 0
}

/** A 32-bit hash of `text`. */
export const hashText = (text: string): number => mix(fnv(0x811c9dc5, text))

/** The text of a message's content: a string as is, text parts joined, anything else as JSON. */
const contentText = (content: unknown): string =>
  typeof content === "string" ? content : content === undefined || content === null ? "" : JSON.stringify(content)

/** The hash of a chat request's prompt prefix; undefined when it has no messages. */
export const prefixHashOf = (chat: ChatCompletionRequest): number | undefined => {
  const messages = chat.messages
  if (messages.length === 0) return undefined
  let hash = 0x811c9dc5
  let any = false
  for (const message of messages) {
    if (message.role !== "system" && message.role !== "developer") continue
    hash = fnv(fnv(hash, message.role), contentText(message.content))
    any = true
  }
  if (chat.tools !== undefined && chat.tools.length > 0) {
    hash = fnv(hash, JSON.stringify(chat.tools))
    any = true
  }
  if (!any) hash = fnv(fnv(hash, messages[0]!.role), contentText(messages[0]!.content))
  return mix(hash)
}
