/**
 * Token counting cost, in process (no servers): `node --import tsx bench/tokens.ts`.
 *
 * (a) What counting a 20-turn conversation (a system prompt and 20 messages of 200-800 characters)
 *     costs per request: the first time (every text encoded), resent with one more message (the memo
 *     answers for the history, only the new message is encoded), that resent unchanged, and the
 *     calibrated estimate, against the ~60 µs a bare Node proxy spends on a whole request.
 * (b) Event-loop delay (`perf_hooks.monitorEventLoopDelay`, 1 ms resolution) while a 1 MB prompt is
 *     counted on the event loop, and while a worker thread counts it.
 *
 * Environment (optional): TOKENS_ITERATIONS=300 conversations per measurement of (a).
 * Prints a table; writes nothing. Takes ~10-20 s, most of it loading tiktoken and counting 1 MB.
 */
import { Effect } from "effect"
import type { IntervalHistogram } from "node:perf_hooks"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { setTimeout as sleep } from "node:timers/promises"
import { TokenCounter } from "../packages/core/src/index.js"
import type { Wire } from "../packages/core/src/index.js"
import { seeded } from "./lib/random.js"

const BARE_PROXY_US = 60
const MODEL = "gpt-4o"
const MEGABYTE = 1024 * 1024
const ITERATIONS = (() => {
  const raw = process.env["TOKENS_ITERATIONS"]
  const value = raw === undefined || raw === "" ? 300 : Number(raw)
  if (!Number.isInteger(value) || value <= 0)
    throw new Error(`TOKENS_ITERATIONS: expected a positive integer, got '${raw}'`)
  return value
})()

// ---------------------------------------------------------------------------------------------------
// Realistic text: prose with numbers and punctuation, now and then a list or a code snippet.

const WORDS = (
  "the of and to in is that for it with as was on be by this are from at or an which have not has but " +
  "they you we can will would should could about more when there their what so if into than then them " +
  "request response upstream latency budget token model deploy service customer invoice report quarter " +
  "revenue growth migration database index query schema cache memory thread worker queue retry timeout " +
  "however therefore although because during between without against within across several important " +
  "summarize explain compare describe implement refactor optimize review analyze translate document"
).split(" ")

const CODE = [
  "```ts\nconst total = items.reduce((sum, item) => sum + item.price * item.quantity, 0)\n```",
  "```python\nfor row in rows:\n    if row['status'] == 'failed':\n        retry(row['id'])\n```",
  "`SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days' ORDER BY id LIMIT 50;`"
]

const text = (seed: number, chars: number): string => {
  const next = seeded(seed)
  const parts: Array<string> = []
  let length = 0
  let inSentence = 0
  while (length < chars) {
    let piece: string
    const roll = next()
    if (inSentence === 0 && roll < 0.03) piece = "\n\n" + CODE[Math.floor(next() * CODE.length)]! + "\n\n"
    else if (inSentence === 0 && roll < 0.08) piece = "\n- "
    else {
      const word = WORDS[Math.floor(next() * WORDS.length)]!
      const shown = inSentence === 0 ? word[0]!.toUpperCase() + word.slice(1) : word
      const number = next() < 0.04 ? ` ${Math.floor(next() * 100_000) / 100}` : ""
      inSentence = next() < 0.09 ? 0 : inSentence + 1
      piece = shown + number + (inSentence === 0 ? (next() < 0.8 ? ". " : "? ") : next() < 0.06 ? ", " : " ")
    }
    parts.push(piece)
    length += piece.length
  }
  return parts.join("").slice(0, chars)
}

/**
 * System prompt + 21 messages, user and assistant in turn, 200-800 characters each: the 20-turn
 * conversation (the first 20 messages) and the next message.
 */
const conversation = (seed: number): Array<Wire.ChatMessage> => {
  const next = seeded(seed * 7919)
  const messages: Array<Wire.ChatMessage> = [{ role: "system", content: text(seed * 100, 600) }]
  for (let i = 0; i < 21; i++) {
    messages.push({
      role: i % 2 === 0 ? "user" : "assistant",
      content: text(seed * 100 + i + 1, 200 + Math.floor(next() * 600))
    })
  }
  return messages
}

const chat = (messages: ReadonlyArray<Wire.ChatMessage>): Wire.ChatCompletionRequest => ({ model: MODEL, messages })

// ---------------------------------------------------------------------------------------------------
// Figures

const percentile = (samples: ReadonlyArray<number>, q: number): number => {
  const sorted = [...samples].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? Number.NaN
}

const fixed = (x: number, digits = 1): string => (Number.isFinite(x) ? x.toFixed(digits) : "-")

const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n")
}

const ms = (histogramNs: number): string => fixed(histogramNs / 1e6)

// ---------------------------------------------------------------------------------------------------
// (a) per-request counting cost

const perRequest = Effect.gen(function* () {
  const counter = yield* TokenCounter.make({ workers: 0 })
  // Load the encoder and let the JIT settle before measuring anything.
  for (let seed = 1; seed <= 20; seed++) yield* counter.count(chat(conversation(1_000_000 + seed)), MODEL)

  const conversations = Array.from({ length: ITERATIONS }, (_, i) => conversation(i + 1))
  const chars = conversations.reduce(
    (sum, c) => sum + c.slice(0, -1).reduce((s, m) => s + (typeof m.content === "string" ? m.content.length : 0), 0),
    0
  )

  const first: Array<number> = []
  const oneMore: Array<number> = []
  const unchanged: Array<number> = []
  for (const messages of conversations) {
    const history = chat(messages.slice(0, -1))
    const full = chat(messages)
    let t = performance.now()
    yield* counter.count(history, MODEL) // every text new: the first request of this chat
    first.push((performance.now() - t) * 1000)
    t = performance.now()
    yield* counter.count(full, MODEL) // the history again, plus one new message
    oneMore.push((performance.now() - t) * 1000)
    t = performance.now()
    yield* counter.count(full, MODEL) // resent unchanged (a retry, another pool)
    unchanged.push((performance.now() - t) * 1000)
  }

  // The estimate is far below the timer's resolution per call: time batches.
  const BATCH = 100
  const estimate: Array<number> = []
  let sink = 0
  for (const messages of conversations) {
    const request = chat(messages)
    const t = performance.now()
    for (let i = 0; i < BATCH; i++) sink += counter.estimate(request, MODEL).tokens
    estimate.push(((performance.now() - t) * 1000) / BATCH)
  }

  // Estimate against exact over the same conversations (all memoized by now: no encoding).
  const errors: Array<number> = []
  for (const messages of conversations) {
    const exact = yield* counter.count(chat(messages), MODEL)
    errors.push((counter.estimate(chat(messages), MODEL).tokens - exact.tokens) / exact.tokens)
  }
  const meanError = errors.reduce((a, b) => a + b, 0) / errors.length
  const worstError = errors.reduce((a, b) => (Math.abs(b) > Math.abs(a) ? b : a), 0)
  const stats = counter.stats?.()
  const row = (name: string, samples: ReadonlyArray<number>) => [
    name,
    fixed(percentile(samples, 0.5)),
    fixed(percentile(samples, 0.99)),
    fixed(percentile(samples, 0.5) / BARE_PROXY_US, 2) + "x"
  ]
  console.log(
    `\n(a) Counting a 20-turn conversation (system + 20 messages, ${Math.round(chars / ITERATIONS)} chars on average), ` +
      `${ITERATIONS} conversations, gpt-4o (o200k_base), on the event loop\n`
  )
  console.log(
    table(
      ["per request", "p50 µs", "p99 µs", "vs bare proxy"],
      [
        row("first request (21 texts encoded)", first),
        row("resent + 1 new message (memo)", oneMore),
        row("resent unchanged (memo only)", unchanged),
        row("estimate (calibrated)", estimate),
        ["bare proxy, whole request (reference)", String(BARE_PROXY_US), "", "1.00x"]
      ]
    )
  )
  console.log(
    `\n  estimate vs exact over these conversations: mean ${fixed(meanError * 100)}%, ` +
      `worst ${fixed(worstError * 100)}%; calibrated chars/token ` +
      `${fixed(stats?.charsPerToken.o200k_base ?? Number.NaN, 3)} (default ${TokenCounter.DEFAULT_CHARS_PER_TOKEN})`
  )
  if (sink < 0) console.log(sink) // keeps the estimate loop from being optimized away
})

// ---------------------------------------------------------------------------------------------------
// (b) event-loop delay while a 1 MB prompt is counted

interface Delay {
  readonly countMs: number
  readonly histogram: IntervalHistogram
}

const delayWhile = (count: Effect.Effect<unknown>): Effect.Effect<Delay> =>
  Effect.promise(async () => {
    const histogram = monitorEventLoopDelay({ resolution: 1 })
    histogram.enable()
    await sleep(20)
    const t = performance.now()
    await Effect.runPromise(count)
    const countMs = performance.now() - t
    // A delayed sample is recorded when the timer finally fires: give it that turn.
    await sleep(20)
    histogram.disable()
    return { countMs, histogram }
  })

const eventLoop = Effect.gen(function* () {
  const megabyte = (seed: number) => chat([{ role: "user", content: text(seed, MEGABYTE) }])
  const inline = yield* TokenCounter.make({ workers: 0 })
  const offThread = yield* TokenCounter.make()
  // Warm both: the inline encoder loaded, the worker started with its encoder loaded (both ~0.3 s).
  yield* inline.count(chat([{ role: "user", content: text(1, 1000) }]), MODEL)
  const cold = yield* delayWhile(offThread.count(megabyte(2), MODEL))

  const onLoop = yield* delayWhile(inline.count(megabyte(3), MODEL))
  const inWorker = yield* delayWhile(offThread.count(megabyte(4), MODEL))
  const row = (name: string, { countMs, histogram }: Delay) => [
    name,
    fixed(countMs),
    ms(histogram.percentile(50)),
    ms(histogram.percentile(99)),
    ms(histogram.max)
  ]
  console.log(`\n(b) Event-loop delay while a 1 MB prompt is counted (monitorEventLoopDelay, 1 ms resolution)\n`)
  console.log(
    table(
      ["1 MB prompt", "count ms", "delay p50 ms", "p99 ms", "max ms"],
      [
        row("inline, on the event loop", onLoop),
        row("worker thread (warm)", inWorker),
        row("worker thread (cold: starts it)", cold)
      ]
    )
  )
  console.log(
    `\n  off-thread counts: ${offThread.stats?.().offThreadCounts ?? 0}; workers: ${offThread.stats?.().workers}`
  )
})

const started = performance.now()
await Effect.runPromise(Effect.scoped(Effect.zipRight(perRequest, eventLoop)))
console.log(`\ndone in ${fixed((performance.now() - started) / 1000)} s`)
