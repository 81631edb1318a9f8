import { describe, expect, it } from "@effect/vitest"
import { Config } from "@sluice/core"
import { Effect, Schema } from "effect"
import { existsSync, mkdirSync } from "node:fs"
import type { IncomingMessage } from "node:http"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { chromium } from "playwright-core"
import { Sessions } from "../src/internal/dashboardSessions.js"
import { simulatedConfig, startGateway } from "./harness.js"

/** Debian's Chromium (`apt-get install chromium`); `CHROMIUM` names another executable. */
const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium"
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync"
]
const TOKEN = "adm-token-0123456789abcdef"
const results = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "bench", "results")
/** Screenshots for the README are saved under bench/results only when asked (`SLUICE_SCREENSHOTS=1`). */
const screenshot = (
  page: { screenshot: (options: { path: string; fullPage: boolean }) => Promise<unknown> },
  name: string
) =>
  Effect.promise(async () => {
    if (process.env["SLUICE_SCREENSHOTS"] !== "1") return
    mkdirSync(results, { recursive: true })
    await page.screenshot({ path: join(results, name), fullPage: true })
  })

/** `flaky` always fails and its breaker opens after 2 failures (for long); `steady` serves. */
const config = () => ({
  ...simulatedConfig(
    [
      {
        id: "flaky",
        simulate: { failureRate: 1 },
        circuitBreaker: { failureThreshold: 2, recoveryMs: 600_000, windowMs: 60_000 }
      },
      { id: "steady", simulate: { completionTokens: 12 }, pricing: { inputPerMillion: 1, outputPerMillion: 2 } }
    ],
    [{ id: "chat", models: ["gpt-4o-mini"], upstreams: ["flaky", "steady"], strategy: "round-robin" }]
  ),
  server: Schema.decodeUnknownSync(Config.ServerConfig)({ admin: { tokenEnv: "SLUICE_TEST_ADMIN_TOKEN" } })
})

/** Set by CI services (`CI=true`, `CI=1`): there the browser test must run, never skip. */
const CI = (process.env["CI"] ?? "") !== "" && process.env["CI"] !== "false"

// Skipped on a machine without Chromium, but failed in CI: a missing browser there is a broken run.
describe.skipIf(!existsSync(CHROMIUM) && !CI)("dashboard in a real browser", () => {
  it("has Chromium to drive", () => {
    expect(
      existsSync(CHROMIUM),
      `CI is set and there is no Chromium at ${CHROMIUM}: install it (apt-get install chromium) or name it in CHROMIUM`
    ).toBe(true)
  })

  it.live(
    "shows the open breaker, closes it with the reset button, and shows new decisions live",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(config(), { env: { SLUICE_TEST_ADMIN_TOKEN: TOKEN } })
        const ask = () =>
          Effect.promise(() =>
            gateway.client.chat.completions
              .create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] })
              .withResponse()
              .then(({ response }) => response.headers.get("x-request-id")!)
          )
        for (let i = 0; i < 6; i++) yield* ask()
        const browser = yield* Effect.acquireRelease(
          Effect.promise(() => chromium.launch({ executablePath: CHROMIUM, args: FLAGS })),
          (b) => Effect.promise(() => b.close())
        )
        const page = yield* Effect.promise(() => browser.newPage({ viewport: { width: 1280, height: 1100 } }))
        const errors: Array<string> = []
        page.on("pageerror", (error) => errors.push(error.message))
        const asked: Array<string> = []
        page.on("request", (request) => asked.push(new URL(request.url()).pathname))
        yield* Effect.promise(() => page.goto(`${gateway.url}/dashboard#token=${TOKEN}`))
        yield* Effect.promise(() => page.waitForSelector("body[data-ready=true]", { timeout: 10_000 }))
        const breaker = page.locator('tr[data-upstream="flaky"] td.breaker')
        yield* Effect.promise(() => breaker.filter({ hasText: /^open$/ }).waitFor({ timeout: 5_000 }))
        yield* Effect.promise(() => page.locator("#decisions details").first().locator("summary").click())
        yield* screenshot(page, "dashboard-open-breaker.png")
        // The decisions already made are listed, each with its exclusions.
        expect(yield* Effect.promise(() => page.locator("#decisions details").count())).toBe(6)
        expect(yield* Effect.promise(() => page.locator("[data-chart]").count())).toBe(7)
        // The charts are drawn from the server's per-minute totals: all six requests, with latency points.
        expect(asked).toContain("/admin/stats")
        yield* Effect.promise(() =>
          page.locator('[data-chart="requests"][data-total="6"]').waitFor({ timeout: 10_000 })
        )
        for (const chart of ["p50", "p99", "tokens"])
          expect(
            Number(yield* Effect.promise(() => page.locator(`[data-chart="${chart}"]`).getAttribute("data-points")))
          ).toBeGreaterThan(0)
        // steady served every request, so its row shows its decayed latency.
        expect(
          yield* Effect.promise(() => page.locator('tr[data-upstream="steady"] td.latency').textContent())
        ).toMatch(/^\d+ ms/)
        // Its live view: no failures; no reserved tokens shown where the strategy counts none.
        expect(
          yield* Effect.promise(() => page.locator('tr[data-upstream="steady"] td.error-rate').textContent())
        ).toBe("0.0%")
        expect(yield* Effect.promise(() => page.locator('tr[data-upstream="steady"] td.reserved').textContent())).toBe(
          "-"
        )

        yield* Effect.promise(() =>
          page.locator('tr[data-upstream="flaky"] button', { hasText: "reset breaker" }).click()
        )
        yield* Effect.promise(() => breaker.filter({ hasText: /^closed$/ }).waitFor({ timeout: 5_000 }))
        const status = yield* Effect.promise(() =>
          fetch(`${gateway.url}/admin/upstreams`, { headers: { authorization: `Bearer ${TOKEN}` } }).then(
            (r) => r.json() as Promise<{ upstreams: Array<{ id: string; breaker: { state: string } }> }>
          )
        )
        expect(status.upstreams.find((u) => u.id === "flaky")?.breaker.state).toBe("closed")

        const id = yield* ask()
        yield* Effect.promise(() =>
          page.locator(`#decisions details[data-request-id="${id}"]`).waitFor({ timeout: 5_000 })
        )
        expect(
          yield* Effect.promise(() => page.locator("#decisions details").first().getAttribute("data-request-id"))
        ).toBe(id)
        yield* screenshot(page, "dashboard.png")
        expect(errors).toEqual([])
      }).pipe(Effect.scoped),
    60_000
  )

  it.live(
    "asks a browser without a session for the token: a wrong one is refused, the right one opens the dashboard",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(config(), { env: { SLUICE_TEST_ADMIN_TOKEN: TOKEN } })
        const browser = yield* Effect.acquireRelease(
          Effect.promise(() => chromium.launch({ executablePath: CHROMIUM, args: FLAGS })),
          (b) => Effect.promise(() => b.close())
        )
        const context = yield* Effect.promise(() => browser.newContext())
        const page = yield* Effect.promise(() => context.newPage())
        const errors: Array<string> = []
        page.on("pageerror", (error) => errors.push(error.message))
        const first = yield* Effect.promise(() => page.goto(`${gateway.url}/dashboard`))
        expect(first?.status()).toBe(401)
        expect(yield* Effect.promise(() => page.locator("#upstreams").count())).toBe(0)
        const field = page.locator('#sign-in input[name="token"]')
        yield* Effect.promise(() => field.fill("adm-not-the-token-0123456789"))
        yield* Effect.promise(() => page.locator("#sign-in button").click())
        yield* Effect.promise(() =>
          page.locator("#problem", { hasText: "not the admin token" }).waitFor({ timeout: 5_000 })
        )
        expect(yield* Effect.promise(() => context.cookies())).toEqual([])
        yield* Effect.promise(() => field.fill(TOKEN))
        yield* Effect.promise(() => page.locator("#sign-in button").click())
        yield* Effect.promise(() => page.waitForSelector("body[data-ready=true]", { timeout: 10_000 }))
        yield* Effect.promise(() => page.locator('tr[data-upstream="steady"]').waitFor({ timeout: 5_000 }))
        // The session is a cookie script cannot read, for the dashboard only, and not the token.
        const [cookie, ...others] = yield* Effect.promise(() => context.cookies())
        expect(others).toEqual([])
        expect(cookie).toMatchObject({
          name: "sluice-dashboard",
          path: "/dashboard",
          httpOnly: true,
          sameSite: "Strict"
        })
        expect(cookie!.value).not.toContain(TOKEN)
        // Reloaded, the page is served by the session.
        const again = yield* Effect.promise(() => page.reload())
        expect(again?.status()).toBe(200)
        expect(errors).toEqual([])
      }).pipe(Effect.scoped),
    60_000
  )

  it.live(
    "serves the page and uPlot only to a session opened with the admin token, a sign-in form otherwise; the session does not open the admin API",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway(config(), { env: { SLUICE_TEST_ADMIN_TOKEN: TOKEN } })
        const get = (path: string, cookie?: string) =>
          Effect.promise(async () => {
            const response = await fetch(`${gateway.url}${path}`, cookie === undefined ? {} : { headers: { cookie } })
            return { status: response.status, type: response.headers.get("content-type"), body: await response.text() }
          })
        const signIn = (authorization?: string, headers: Record<string, string> = {}) =>
          Effect.promise(() =>
            fetch(`${gateway.url}/dashboard/session`, {
              method: "POST",
              headers: authorization === undefined ? headers : { ...headers, authorization }
            }).then((r) => ({ status: r.status, cookie: r.headers.get("set-cookie") }))
          )
        // Without a session: the sign-in form, not the dashboard, and not uPlot either.
        const form = yield* get("/dashboard")
        expect(form.status).toBe(401)
        expect(form.type).toMatch(/^text\/html/)
        expect(form.body).toContain('id="sign-in"')
        expect(form.body).not.toContain('id="upstreams"')
        expect((yield* get("/dashboard/uplot.js")).status).toBe(401)
        expect((yield* get("/dashboard/sign-in")).status).toBe(200)
        // A session only for the admin token.
        expect(yield* signIn()).toEqual({ status: 401, cookie: null })
        expect(yield* signIn("Bearer adm-not-the-token-0123456789")).toEqual({ status: 403, cookie: null })
        const opened = yield* signIn(`Bearer ${TOKEN}`)
        expect(opened.status).toBe(204)
        expect(opened.cookie).toMatch(
          /^sluice-dashboard=[A-Za-z0-9_-]{43}; Path=\/dashboard; HttpOnly; SameSite=Strict; Max-Age=43200$/
        )
        // Behind a proxy that terminates TLS (or from an HTTPS page), the cookie is for HTTPS only.
        for (const headers of [
          { "x-forwarded-proto": "https" },
          { "x-forwarded-proto": "https, http" },
          { forwarded: "for=10.0.0.1;proto=https" },
          { origin: "https://gateway.example" }
        ]) {
          expect((yield* signIn(`Bearer ${TOKEN}`, headers)).cookie).toMatch(/; Max-Age=43200; Secure$/)
        }
        for (const headers of [{ "x-forwarded-proto": "http" }, { origin: "http://localhost:8080" }]) {
          expect((yield* signIn(`Bearer ${TOKEN}`, headers)).cookie).toMatch(/; Max-Age=43200$/)
        }
        const cookie = opened.cookie!.split(";")[0]!
        const page = yield* get("/dashboard", cookie)
        expect(page.status).toBe(200)
        expect(page.body).toContain('id="upstreams"')
        expect((yield* get("/dashboard/uplot.js", cookie)).status).toBe(200)
        expect((yield* get("/dashboard", "sluice-dashboard=made-up")).status).toBe(401)
        // The data still wants the token itself.
        expect((yield* get("/admin/decisions", cookie)).status).toBe(401)
      }).pipe(Effect.scoped)
  )
})

describe("dashboard sessions", () => {
  it("end 12 hours after sign-in", () => {
    let now = 0
    const sessions = new Sessions(() => now)
    const id = sessions.open()
    const request = (cookie: string) => ({ headers: { cookie } }) as unknown as IncomingMessage
    expect(sessions.admits(request(`other=1; sluice-dashboard=${id}`))).toBe(true)
    now = 12 * 60 * 60_000 - 1
    expect(sessions.admits(request(`sluice-dashboard=${id}`))).toBe(true)
    now += 1
    expect(sessions.admits(request(`sluice-dashboard=${id}`))).toBe(false)
  })

  it("keep the newest 1,000: the oldest is signed out first", () => {
    const sessions = new Sessions(() => 0)
    const request = (id: string) => ({ headers: { cookie: `sluice-dashboard=${id}` } }) as unknown as IncomingMessage
    const ids = Array.from({ length: 1_001 }, () => sessions.open())
    expect(sessions.admits(request(ids[0]!))).toBe(false)
    expect(sessions.admits(request(ids[1]!))).toBe(true)
    expect(sessions.admits(request(ids[1_000]!))).toBe(true)
  })
})
