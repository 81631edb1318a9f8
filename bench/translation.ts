/**
 * Translation cost per streamed chunk, in process (no servers): `npm run bench:translation`.
 *
 * Each provider's stream decoder (what turns one upstream event into the OpenAI chunks the router
 * relays) is run over a typical streamed answer in its provider's format — a role event, 64 text
 * deltas, the finish and usage — and timed per upstream event, against the OpenAI-compatible
 * pass-through (parse once to check, relay the bytes unchanged).
 *
 * Environment (optional): TRANSLATION_STREAMS=20000 streams per provider. Prints a table; writes nothing.
 */
import { Topology } from "../packages/core/src/index.js"
import type { StreamEvent } from "../packages/core/src/index.js"
import { Anthropic, Gemini, Ollama, OpenAICompatible } from "../packages/providers/src/index.js"

const STREAMS = Number(process.env["TRANSLATION_STREAMS"] ?? "20000")
const WORDS = Array.from({ length: 64 }, (_, i) => (i === 0 ? "Lorem" : ` ipsum${i}`))

const upstream = Topology.upstream({ id: "bench", provider: "bench", baseUrl: "http://127.0.0.1:1/v1" })

interface Decoder {
  readonly decode: (payload: string, out: Array<StreamEvent.StreamEvent>) => unknown
}

const openai = (): ReadonlyArray<string> => {
  const chunk = (delta: object, finish: string | null = null) =>
    JSON.stringify({
      id: "chatcmpl-1",
      object: "chat.completion.chunk",
      created: 1,
      model: "gpt-4o",
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }]
    })
  return [
    chunk({ role: "assistant", content: "" }),
    ...WORDS.map((content) => chunk({ content })),
    chunk({}, "stop"),
    JSON.stringify({
      id: "chatcmpl-1",
      object: "chat.completion.chunk",
      created: 1,
      model: "gpt-4o",
      choices: [],
      usage: { prompt_tokens: 9, completion_tokens: 64, total_tokens: 73 }
    }),
    "[DONE]"
  ]
}

const anthropic = (): ReadonlyArray<string> => [
  JSON.stringify({
    type: "message_start",
    message: {
      id: "msg_1",
      type: "message",
      role: "assistant",
      content: [],
      model: "claude",
      usage: { input_tokens: 9, output_tokens: 1 }
    }
  }),
  JSON.stringify({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }),
  ...WORDS.map((text) =>
    JSON.stringify({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text } })
  ),
  JSON.stringify({ type: "content_block_stop", index: 0 }),
  JSON.stringify({
    type: "message_delta",
    delta: { stop_reason: "end_turn", stop_sequence: null },
    usage: { output_tokens: 64 }
  }),
  JSON.stringify({ type: "message_stop" })
]

const gemini = (): ReadonlyArray<string> =>
  WORDS.map((text, i) =>
    JSON.stringify({
      candidates: [
        {
          content: { role: "model", parts: [{ text }] },
          index: 0,
          ...(i === WORDS.length - 1 ? { finishReason: "STOP" } : {})
        }
      ],
      usageMetadata: { promptTokenCount: 9, candidatesTokenCount: i + 1, totalTokenCount: 10 + i },
      modelVersion: "gemini-2.5-flash",
      responseId: "r1"
    })
  )

const ollama = (): ReadonlyArray<string> => [
  ...WORDS.map((content) =>
    JSON.stringify({
      model: "llama3.2",
      created_at: "2025-01-01T00:00:00Z",
      message: { role: "assistant", content },
      done: false
    })
  ),
  JSON.stringify({
    model: "llama3.2",
    created_at: "2025-01-01T00:00:00Z",
    message: { role: "assistant", content: "" },
    done: true,
    done_reason: "stop",
    prompt_eval_count: 9,
    eval_count: 64
  })
]

const cases: ReadonlyArray<{ name: string; payloads: ReadonlyArray<string>; decoder: () => Decoder }> = [
  {
    name: "openai-compatible (pass-through)",
    payloads: openai(),
    decoder: () => OpenAICompatible.streamDecoder(upstream)
  },
  { name: "anthropic", payloads: anthropic(), decoder: () => Anthropic.streamDecoder(upstream, 1) },
  { name: "gemini", payloads: gemini(), decoder: () => Gemini.streamDecoder(upstream, "gemini", 1) },
  { name: "ollama", payloads: ollama(), decoder: () => Ollama.streamDecoder(upstream, 1) }
]

/** Nanoseconds per upstream event over `streams` streams. */
const measure = (payloads: ReadonlyArray<string>, decoder: () => Decoder, streams: number): number => {
  const out: Array<StreamEvent.StreamEvent> = []
  const started = process.hrtime.bigint()
  for (let s = 0; s < streams; s++) {
    const d = decoder()
    for (const payload of payloads) d.decode(payload, out)
    out.length = 0
  }
  return Number(process.hrtime.bigint() - started) / (streams * payloads.length)
}

const rows = cases.map((c) => {
  measure(c.payloads, c.decoder, Math.max(1, STREAMS / 10)) // warm-up
  return { name: c.name, events: c.payloads.length, ns: measure(c.payloads, c.decoder, STREAMS) }
})
const base = rows[0]!.ns
console.log(`translation per upstream event, ${STREAMS} streams of ~${WORDS.length} text deltas each\n`)
console.log("provider                          events/stream   ns/event   vs pass-through")
for (const row of rows) {
  console.log(
    `${row.name.padEnd(34)}${String(row.events).padStart(13)}${row.ns.toFixed(0).padStart(11)}${`x${(row.ns / base).toFixed(2)}`.padStart(18)}`
  )
}
