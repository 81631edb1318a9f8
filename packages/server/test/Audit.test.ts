import { describe, expect, it } from "@effect/vitest"
import { Config } from "@sluice/core"
import { Effect, Schema } from "effect"
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Audit from "../src/internal/audit.js"
import { eventually, simulatedConfig, startGateway } from "./harness.js"

const TOKEN = "adm-token-0123456789abcdef"
const TEAM = "sk-team-0123456789abcdef"
const env = { SLUICE_TEST_ADMIN_TOKEN: TOKEN, SLUICE_TEST_TEAM_KEY: TEAM }

type Gateway = Effect.Effect.Success<ReturnType<typeof startGateway>>

/** `a` serves; `broken` always fails and falls back to `chat`; the admin API and one client key on. */
const audited = (audit: Record<string, unknown>) => ({
  ...simulatedConfig(
    [
      { id: "a", simulate: { completionTokens: 10 } },
      { id: "broken", simulate: { failureRate: 1 } },
      { id: "slow", simulate: { latencyMs: 30_000 } }
    ],
    [
      { id: "chat", models: ["gpt-4o-mini"], upstreams: ["a"] },
      { id: "flaky", models: ["flaky-model"], upstreams: ["broken"], fallback: "chat" },
      { id: "dead", models: ["dead-model"], upstreams: ["broken"] },
      { id: "slow", models: ["slow-model"], upstreams: ["slow"] }
    ]
  ),
  server: Schema.decodeUnknownSync(Config.ServerConfig)({
    admin: { tokenEnv: "SLUICE_TEST_ADMIN_TOKEN" },
    auth: { keys: [{ name: "team", keyEnv: "SLUICE_TEST_TEAM_KEY" }] },
    audit
  })
})

const ask = (gateway: Gateway, model: string, content = "Hi") =>
  Effect.promise(() =>
    gateway
      .clientWith(TEAM)
      .chat.completions.create({ model, messages: [{ role: "user", content }] })
      .then(
        (answer) => answer.choices[0]?.message.content ?? "",
        () => "error"
      )
  )

// An audit entry as the assertions read it, field by field.
// oxlint-disable-next-line typescript/no-explicit-any
type Entry = any

const decisions = (gateway: Gateway, query = "") =>
  Effect.promise(async () => {
    const response = await fetch(`${gateway.url}/admin/decisions${query}`, {
      headers: { authorization: `Bearer ${TOKEN}` }
    })
    return { status: response.status, body: (await response.json()) as Entry }
  })

describe("audit log of decisions", () => {
  it.live("writes one JSON line per decision to a file, the same the admin API and the spans tell", () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(join(tmpdir(), "sluice-audit-"))
      const path = join(dir, "audit.jsonl")
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const gateway = yield* startGateway(audited({ sink: "file", path, keep: 100 }), { env })
      const answer = yield* ask(gateway, "gpt-4o-mini", "SECRET-PROMPT-TEXT")
      expect(yield* ask(gateway, "flaky-model")).not.toBe("error")
      expect(yield* ask(gateway, "dead-model")).toBe("error")
      const lines = yield* eventually(() => {
        const text = readFileSync(path, "utf8")
        const lines = text.split("\n").filter((l) => l !== "")
        return lines.length === 3 ? lines : undefined
      })
      const written: Array<Entry> = lines.map((l) => JSON.parse(l))
      // Neither the prompt nor the completion is in the log.
      expect(lines.join("\n")).not.toContain("SECRET-PROMPT-TEXT")
      expect(lines.join("\n")).not.toContain(answer)
      expect(written.map((e) => e.key)).toEqual(["team", "team", "team"])
      expect(written.map((e) => [e.decision.pool, e.decision.upstream ?? null, e.decision.outcome])).toEqual([
        ["chat", "a", "success"],
        ["chat", "a", "success"],
        ["dead", null, "error"]
      ])
      expect(written[1].decision.pools).toEqual(["flaky", "chat"])
      expect(written[1].decision.attempts.map((a: Entry) => [a.upstream, a.outcome])).toEqual([
        ["broken", "failure"],
        ["a", "success"]
      ])
      // The admin API has the same decisions, newest first; the spans describe the same requests.
      const listed = yield* decisions(gateway)
      expect(listed.status).toBe(200)
      expect(listed.body).toEqual([...written].reverse())
      const traced = gateway.routes().map((r) => [r["sluice.request_id"], r["sluice.pool"], r["sluice.outcome"]])
      expect(traced).toEqual(written.map((e) => [e.decision.requestId, e.decision.pool, e.decision.outcome]))
    }).pipe(Effect.scoped)
  )

  it.live("filters by pool, upstream, key, outcome, time and limit", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(audited({ keep: 10 }), { env })
      yield* ask(gateway, "gpt-4o-mini")
      yield* ask(gateway, "flaky-model")
      yield* ask(gateway, "dead-model")
      const ids = (query: string) =>
        Effect.map(decisions(gateway, query), ({ body }) => (body as Array<Entry>).map((e) => e.decision.pool))
      expect(yield* ids("?pool=flaky")).toEqual(["chat"])
      expect(yield* ids("?upstream=broken")).toEqual(["dead", "chat"])
      expect(yield* ids("?outcome=error")).toEqual(["dead"])
      expect(yield* ids("?key=team&limit=2")).toEqual(["dead", "chat"])
      expect(yield* ids("?key=someone-else")).toEqual([])
      expect(yield* ids(`?since=${new Date(Date.now() + 60_000).toISOString()}`)).toEqual([])
      expect(yield* ids(`?until=${Date.now() + 60_000}&outcome=success`)).toEqual(["chat", "chat"])
      expect((yield* decisions(gateway, "?since=yesterday")).status).toBe(400)
    }).pipe(Effect.scoped)
  )

  it.live("keeps the decision of a request its client abandoned, as interrupted", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(audited({}), { env })
      const controller = new AbortController()
      const sent = fetch(`${gateway.url}/v1/chat/completions`, {
        method: "POST",
        signal: controller.signal,
        headers: { authorization: `Bearer ${TEAM}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "slow-model", messages: [{ role: "user", content: "Hi" }] })
      }).catch(() => "abandoned")
      yield* eventually(() => (gateway.simulator("slow").requests().length === 1 ? true : undefined))
      controller.abort()
      expect(yield* Effect.promise(() => sent)).toBe("abandoned")
      let entries: Array<Entry> = []
      for (let i = 0; i < 100 && entries.length === 0; i++) {
        entries = (yield* decisions(gateway, "?outcome=interrupted")).body as Array<Entry>
        if (entries.length === 0) yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
      }
      expect(entries).toHaveLength(1)
      expect(entries[0]).toMatchObject({
        key: "team",
        decision: { pool: "slow", outcome: "interrupted", attempts: [{ upstream: "slow", outcome: "interrupted" }] }
      })
    }).pipe(Effect.scoped)
  )

  it.live("follows server.audit through a reload: a new sink, how many are kept, and content", () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(join(tmpdir(), "sluice-audit-"))
      const path = join(dir, "audit.jsonl")
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const gateway = yield* startGateway(audited({ keep: 10 }), { env })
      // Through the admin API, as an operator replaces the config.
      const reload = (audit: Record<string, unknown>) =>
        Effect.promise(async () => {
          const headers = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" }
          const running = (await (await fetch(`${gateway.url}/admin/config`, { headers })).json()) as Entry
          const body = JSON.stringify({ ...running, server: { ...running.server, audit } })
          const replaced = await fetch(`${gateway.url}/admin/config`, { method: "PUT", headers, body })
          expect(replaced.status).toBe(200)
        })
      yield* ask(gateway, "gpt-4o-mini", "before")
      yield* ask(gateway, "dead-model")
      yield* reload({ sink: "file", path, keep: 1, content: true })
      // The newest decision kept carries over; the file has what came after the reload, with content.
      expect(((yield* decisions(gateway)).body as Array<Entry>).map((e) => e.decision.pool)).toEqual(["dead"])
      yield* ask(gateway, "gpt-4o-mini", "after")
      const written = yield* eventually(() => {
        const lines = readFileSync(path, "utf8")
          .split("\n")
          .filter((l) => l !== "")
        return lines.length === 1 ? lines.map((l) => JSON.parse(l) as Entry) : undefined
      })
      expect(written[0].content.request.messages[0].content).toBe("after")
      // A file that cannot be opened is refused by the sink, which keeps writing where it did.
      yield* reload({ sink: "file", path: join(dir, "missing", "audit.jsonl"), keep: 1 })
      yield* ask(gateway, "gpt-4o-mini", "later")
      yield* eventually(() => (readFileSync(path, "utf8").includes('"pool":"chat"') ? true : undefined))
      yield* eventually(() => (readFileSync(path, "utf8").split("\n").length === 3 ? true : undefined))
      expect(readdirSync(dir)).toEqual(["audit.jsonl"])
    }).pipe(Effect.scoped)
  )

  it.live("streams new decisions live as server-sent events, filtered", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(audited({}), { env })
      const controller = new AbortController()
      yield* Effect.addFinalizer(() => Effect.sync(() => controller.abort()))
      const response = yield* Effect.promise(() =>
        fetch(`${gateway.url}/admin/decisions/stream?outcome=success`, {
          headers: { authorization: `Bearer ${TOKEN}` },
          signal: controller.signal
        })
      )
      expect(response.status).toBe(200)
      expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/)
      const reader = response.body!.getReader()
      const decoder = new TextDecoder()
      let text = ""
      // The stream has started (its first comment) before any request is sent.
      while (!text.includes("\n\n")) text += decoder.decode((yield* Effect.promise(() => reader.read())).value)
      yield* ask(gateway, "dead-model")
      yield* ask(gateway, "gpt-4o-mini")
      while (!text.includes("data: ")) text += decoder.decode((yield* Effect.promise(() => reader.read())).value)
      while (!text.endsWith("\n\n")) text += decoder.decode((yield* Effect.promise(() => reader.read())).value)
      const events = text
        .split("\n\n")
        .filter((e) => e.startsWith("data: "))
        .map((e) => JSON.parse(e.slice("data: ".length)))
      expect(events.map((e: Entry) => [e.decision.pool, e.decision.outcome, e.key])).toEqual([
        ["chat", "success", "team"]
      ])
    }).pipe(Effect.scoped)
  )

  it.live("keeps the request and the whole answer only with audit.content: true", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway(audited({ content: true }), { env })
      const answer = yield* ask(gateway, "gpt-4o-mini", "SECRET-PROMPT-TEXT")
      const [entry] = (yield* decisions(gateway)).body as Array<Entry>
      expect(entry.content.request.messages).toEqual([{ role: "user", content: "SECRET-PROMPT-TEXT" }])
      expect(entry.content.response.choices[0].message.content).toBe(answer)
    }).pipe(Effect.scoped)
  )

  it("writes every line whole and in order, short and long, in any script, through the sink's buffer", async () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-audit-"))
    try {
      const path = join(dir, "a.jsonl")
      const log = new Audit.Log({ sink: "file", path, maxBytes: 1e12, files: 1, keep: 0, content: false })
      const decision = (requestId: string) =>
        ({
          requestId,
          pool: "p",
          pools: ["p"],
          attempts: [],
          startedAt: 1_700_000_000_000,
          outcome: "success"
        }) as unknown as Parameters<Audit.Log["add"]>[0]
      // Lines that fill the 64 KB buffer unevenly, one longer than it, multi-byte characters across its edge.
      const ids = Array.from({ length: 400 }, (_, i) =>
        i === 150 ? "x".repeat(100_000) : `${"é😀".repeat(i % 97)}-${i}`
      )
      for (const id of ids) log.add(decision(id), "k", 0)
      log.close()
      const expected = ids.map((id) => Audit.lineOf(decision(id), "k", 0)).join("")
      const deadline = Date.now() + 10_000
      while (Date.now() < deadline && (!existsSync(path) || statSync(path).size < Buffer.byteLength(expected)))
        await new Promise((resolve) => setTimeout(resolve, 10))
      expect(readFileSync(path, "utf8")).toBe(expected)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it("rotates the file sink past maxBytes, keeping `files` older files", () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-audit-"))
    try {
      const log = new Audit.Log({
        sink: "file",
        path: join(dir, "a.jsonl"),
        maxBytes: 600,
        files: 2,
        keep: 0,
        content: false
      })
      const decision = {
        requestId: "r",
        pool: "p",
        pools: ["p"],
        attempts: [],
        startedAt: 0,
        outcome: "success"
      } as unknown as Parameters<Audit.Log["add"]>[0]
      for (let i = 0; i < 20; i++) log.add(decision, "k", 0)
      log.close()
      expect(readdirSync(dir).sort()).toEqual(["a.jsonl", "a.jsonl.1", "a.jsonl.2"])
      // Nothing kept in memory with keep: 0.
      expect(log.query({})).toEqual([])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
