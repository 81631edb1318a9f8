/**
 * The dashboard's page: plain HTML and a script, no build step. It holds no data itself: everything
 * it shows comes from the admin API, called with the admin token (kept in the tab's session storage
 * by the sign-in form, or taken from `#token=` in the URL). Charts are uPlot, served by the gateway next to the page,
 * drawn from the server's per-minute totals (`/admin/stats`) so they cover the whole hour however
 * few decisions the audit log keeps.
 */
export const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Sluice dashboard</title>
<link rel="stylesheet" href="/dashboard/uplot.css">
<style>
  body { font: 14px system-ui, sans-serif; margin: 1rem 2rem; color: #222; }
  h1 { font-size: 1.3rem; } h2 { font-size: 1.1rem; margin-top: 1.5rem; }
  table { border-collapse: collapse; } td, th { padding: .25rem .6rem; border-bottom: 1px solid #ddd; text-align: left; }
  .open { color: #b00; font-weight: bold; } .half-open { color: #b60; } .closed { color: #070; }
  .unhealthy { color: #b00; } .charts { display: flex; flex-wrap: wrap; gap: 1rem; }
  .error { color: #b00; } summary { cursor: pointer; font-family: monospace; }
  pre { background: #f6f6f6; padding: .5rem; overflow: auto; max-height: 24rem; }
  #decisions { max-height: 30rem; overflow: auto; }
</style>
</head>
<body>
<h1>Sluice <span id="generation"></span></h1>
<div id="problem" class="error"></div>
<h2>Last hour</h2>
<div class="charts" id="charts"></div>
<h2>Pools</h2>
<table id="pools"><thead><tr><th>pool</th><th>strategy</th><th>upstreams</th><th>queue depth</th></tr></thead><tbody></tbody></table>
<h2>Upstreams</h2>
<table id="upstreams"><thead><tr><th>upstream</th><th>provider</th><th>enabled</th><th>health</th><th>breaker</th><th>in flight</th><th>reserved tokens</th><th>latency</th><th>error rate</th><th>budget left</th><th></th></tr></thead><tbody></tbody></table>
<h2>Live decisions</h2>
<div id="decisions"></div>
<h2>Config</h2>
<pre id="config"></pre>
<script src="/dashboard/uplot.js"></script>
<script>
"use strict";
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) { sessionStorage.setItem("sluice-token", hash.get("token")); history.replaceState(null, "", location.pathname); }
const token = sessionStorage.getItem("sluice-token") || "";
// Signed in (the page was served) in another tab: this one asks for the token again.
if (token === "") location.replace("/dashboard/sign-in");
const headers = { authorization: "Bearer " + token };
const api = async (path, init) => {
  const response = await fetch("/admin" + path, { ...init, headers });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
};
const text = (value) => document.createTextNode(value === undefined || value === null ? "-" : String(value));
const cell = (row, value, className) => { const td = row.insertCell(); td.append(text(value)); if (className) td.className = className; return td; };
const problem = (error) => { document.getElementById("problem").textContent = String(error && error.message || error); };

const button = (label, action) => {
  const b = document.createElement("button");
  b.textContent = label;
  b.onclick = async () => { b.disabled = true; try { await action(); await refresh(); } catch (e) { problem(e); } b.disabled = false; };
  return b;
};

async function refresh() {
  const status = await api("/upstreams");
  document.getElementById("generation").textContent = "(config generation " + status.generation + ")";
  const pools = document.querySelector("#pools tbody"); pools.replaceChildren();
  for (const p of status.pools) {
    const row = pools.insertRow(); row.dataset.pool = p.id;
    cell(row, p.id); cell(row, p.strategy); cell(row, p.upstreams.join(", ")); cell(row, p.queueDepth);
  }
  const upstreams = document.querySelector("#upstreams tbody"); upstreams.replaceChildren();
  for (const u of status.upstreams) {
    const row = upstreams.insertRow(); row.dataset.upstream = u.id;
    cell(row, u.id); cell(row, u.provider + (u.simulated ? " (simulated)" : ""));
    cell(row, u.enabled ? "yes" : "no");
    cell(row, u.health.healthy ? "healthy" : "unhealthy", u.health.healthy ? "" : "unhealthy");
    cell(row, u.breaker.state, "breaker " + u.breaker.state);
    // The live view's counts where the strategy reads the load, else the rate limiter's in flight.
    const live = u.live && u.live.counted ? u.live : undefined;
    cell(row, live ? live.inFlight : u.inFlight, "in-flight");
    cell(row, live ? live.reservedTokens : undefined, "reserved");
    const ms = (d) => d === undefined ? undefined : d.ms + " ms";
    cell(row, [ms(u.latency.answer), u.latency.firstContent && "first chunk " + ms(u.latency.firstContent),
      u.latency.perOutputToken && ms(u.latency.perOutputToken) + "/token"].filter(Boolean).join(", ") || undefined, "latency");
    cell(row, u.live ? (100 * u.live.errorRate).toFixed(1) + "%" : undefined, "error-rate");
    const left = [u.budget.requestsLeft !== undefined ? u.budget.requestsLeft + " req" : undefined,
      u.budget.tokensLeft !== undefined ? u.budget.tokensLeft + " tok" : undefined].filter(Boolean).join(", ");
    cell(row, left || "no limit");
    const actions = row.insertCell();
    actions.append(button("reset breaker", () => api("/upstreams/" + encodeURIComponent(u.id) + "/breaker/reset", { method: "POST" })));
    actions.append(button(u.enabled ? "disable" : "enable", () => api("/upstreams/" + encodeURIComponent(u.id) + (u.enabled ? "/disable" : "/enable"), { method: "POST" })));
  }
}

// ---- charts: the last hour, minute by minute, as the server counts it (GET /admin/stats).
const charts = {};
const quantile = (field, q) => (m) => m[field] === null ? null : m[field][q];
const series = [
  ["requests", "requests / min", [(m) => m.requests]],
  ["errors", "error rate (%)", [(m) => m.requests === 0 ? null : 100 * m.errors / m.requests]],
  ["p50", "p50 latency (ms)", [quantile("latencyMs", "p50")]],
  ["p99", "p99 latency (ms)", [quantile("latencyMs", "p99")]],
  ["ttft", "time to first chunk, p50 / p99 (ms)", [quantile("firstChunkMs", "p50"), quantile("firstChunkMs", "p99")]],
  ["tokens", "tokens / min", [(m) => m.inputTokens + m.outputTokens]],
  ["spend", "spend (USD / min)", [(m) => m.spendUsd]]
];
const COLORS = ["#36c", "#c63"];
async function drawCharts() {
  const { minutes } = await api("/stats");
  const xs = minutes.map((m) => m.start / 1000);
  for (const [key, label, reads] of series) {
    const values = [xs, ...reads.map((read) => minutes.map(read))];
    const points = values[1].filter((v) => v !== null).length;
    const total = values[1].reduce((n, v) => n + (v || 0), 0);
    let box = document.querySelector('[data-chart="' + key + '"]');
    if (charts[key]) charts[key].setData(values);
    else {
      box = document.createElement("div"); box.dataset.chart = key;
      document.getElementById("charts").append(box);
      const lines = reads.map((_, i) => ({ label: reads.length === 1 ? label : ["p50", "p99"][i], stroke: COLORS[i], spanGaps: true, points: { show: true, size: 5 } }));
      // Spend per minute is often fractions of a cent: its axis shows significant digits, not "0".
      const axes = key === "spend" ? [{}, { size: 72, values: (_, ticks) => ticks.map((v) => v === 0 ? "0" : v.toPrecision(2)) }] : undefined;
      charts[key] = new uPlot({ title: label, width: 320, height: 160, series: [{}, ...lines], ...(axes ? { axes } : {}) }, values, box);
    }
    box.dataset.points = String(points); box.dataset.total = String(total);
  }
}
function showDecision(entry, live) {
  const d = entry.decision;
  const details = document.createElement("details");
  details.dataset.requestId = d.requestId;
  const summary = document.createElement("summary");
  summary.textContent = [entry.time, d.requestId, d.pool, d.upstream || "-", d.outcome, d.durationMs + " ms",
    (d.inputTokens ?? "-") + "+" + (d.outputTokens ?? "-") + " tok", entry.key || ""].join("  ");
  if (d.outcome !== "success") summary.className = "error";
  const body = document.createElement("pre");
  body.textContent = JSON.stringify({ candidates: d.candidates, excluded: d.excluded, strategy: d.strategy, attempts: d.attempts, pools: d.pools, queueWaitMs: d.queueWaitMs, error: d.error, hedge: d.hedge, hedges: d.hedges, costUsd: entry.costUsd }, null, 2);
  details.append(summary, body);
  const list = document.getElementById("decisions");
  if (live) list.prepend(details); else list.append(details);
  while (list.childElementCount > 200) list.lastElementChild.remove();
}
async function follow() {
  const response = await fetch("/admin/decisions/stream", { headers });
  if (!response.ok || !response.body) throw new Error("live decisions: HTTP " + response.status);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value;
    let end;
    while ((end = buffered.indexOf("\\n\\n")) !== -1) {
      const event = buffered.slice(0, end); buffered = buffered.slice(end + 2);
      if (!event.startsWith("data: ")) continue;
      showDecision(JSON.parse(event.slice(6)), true);
      document.getElementById("decisions").dataset.live = "true";
    }
  }
}

async function start() {
  try {
    await refresh();
    const recent = await api("/decisions?limit=1000");
    for (const e of recent) showDecision(e, false);
    await drawCharts();
    document.getElementById("config").textContent = JSON.stringify(await api("/config"), null, 2);
    follow().catch(problem);
    setInterval(() => refresh().catch(problem), 1000);
    setInterval(() => drawCharts().catch(problem), 5000);
    document.body.dataset.ready = "true";
  } catch (e) { problem(e); }
}
start();
</script>
</body>
</html>
`

/**
 * The sign-in form served instead of the dashboard to a browser without a session: it sends the
 * token to `POST /dashboard/session` for the session cookie, keeps it in the tab's session storage
 * for the admin API calls, and opens the dashboard. `#token=` in the URL signs in without typing.
 */
export const signIn = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Sluice dashboard: sign in</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 1rem 2rem; color: #222; }
  h1 { font-size: 1.3rem; } .error { color: #b00; } input { width: 24rem; }
</style>
</head>
<body>
<h1>Sluice dashboard</h1>
<form id="sign-in">
<label>Admin token <input type="password" name="token" autocomplete="current-password" required autofocus></label>
<button type="submit">Sign in</button>
</form>
<p id="problem" class="error"></p>
<script>
"use strict";
const signIn = async (token) => {
  const response = await fetch("/dashboard/session", { method: "POST", headers: { authorization: "Bearer " + token } });
  if (!response.ok) {
    document.getElementById("problem").textContent =
      response.status === 403 ? "That is not the admin token." : "Signing in failed: HTTP " + response.status;
    return;
  }
  sessionStorage.setItem("sluice-token", token);
  location.replace("/dashboard");
};
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) {
  const token = hash.get("token");
  history.replaceState(null, "", location.pathname);
  signIn(token).catch((e) => { document.getElementById("problem").textContent = String(e); });
}
document.getElementById("sign-in").onsubmit = (event) => {
  event.preventDefault();
  signIn(String(new FormData(event.target).get("token"))).catch((e) => { document.getElementById("problem").textContent = String(e); });
};
</script>
</body>
</html>
`
