/**
 * The dashboard's page: plain HTML and a script, no build step. It holds no data itself: everything
 * it shows comes from the admin API, called with the admin token (taken from `#token=` in the URL,
 * then kept in the tab's session storage). Charts are uPlot, served by the gateway next to the page.
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
<table id="upstreams"><thead><tr><th>upstream</th><th>provider</th><th>enabled</th><th>health</th><th>breaker</th><th>in flight</th><th>budget left</th><th></th></tr></thead><tbody></tbody></table>
<h2>Live decisions</h2>
<div id="decisions"></div>
<h2>Config</h2>
<pre id="config"></pre>
<script src="/dashboard/uplot.js"></script>
<script>
"use strict";
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) { sessionStorage.setItem("sluice-token", hash.get("token")); history.replaceState(null, "", location.pathname); }
const token = sessionStorage.getItem("sluice-token") || prompt("Sluice admin token") || "";
sessionStorage.setItem("sluice-token", token);
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
    cell(row, u.inFlight);
    const left = [u.budget.requestsLeft !== undefined ? u.budget.requestsLeft + " req" : undefined,
      u.budget.tokensLeft !== undefined ? u.budget.tokensLeft + " tok" : undefined].filter(Boolean).join(", ");
    cell(row, left || "no limit");
    const actions = row.insertCell();
    actions.append(button("reset breaker", () => api("/upstreams/" + encodeURIComponent(u.id) + "/breaker/reset", { method: "POST" })));
    actions.append(button(u.enabled ? "disable" : "enable", () => api("/upstreams/" + encodeURIComponent(u.id) + (u.enabled ? "/disable" : "/enable"), { method: "POST" })));
  }
}

// ---- decisions: the audit log, then live; the charts are made from them.
const entries = [];
const MINUTE = 60000;
const charts = {};
const series = [
  ["requests", "requests / min"], ["errors", "error rate (%)"], ["p50", "p50 latency (ms)"],
  ["p99", "p99 latency (ms)"], ["ttft", "p50 time to first chunk (ms)"], ["tokens", "tokens / min"],
  ["spend", "spend (USD / min)"]
];
function buckets() {
  const now = Date.now(), start = Math.floor((now - 60 * MINUTE) / MINUTE) * MINUTE;
  const xs = [], per = [];
  for (let t = start; t <= now; t += MINUTE) { xs.push(t / 1000); per.push([]); }
  for (const e of entries) {
    const i = Math.floor((e.decision.startedAt - start) / MINUTE);
    if (i >= 0 && i < per.length) per[i].push(e);
  }
  const q = (list, p, field = "durationMs") => {
    const s = list.map((e) => e.decision[field]).filter((v) => typeof v === "number").sort((a, b) => a - b);
    return s.length === 0 ? null : s[Math.min(s.length - 1, Math.floor(p * s.length))];
  };
  return {
    xs,
    requests: per.map((l) => l.length),
    errors: per.map((l) => l.length === 0 ? null : 100 * l.filter((e) => e.decision.outcome === "error").length / l.length),
    p50: per.map((l) => q(l, 0.5)), p99: per.map((l) => q(l, 0.99)), ttft: per.map((l) => q(l, 0.5, "firstChunkMs")),
    tokens: per.map((l) => l.reduce((n, e) => n + (e.decision.inputTokens || 0) + (e.decision.outputTokens || 0), 0)),
    spend: per.map((l) => l.reduce((n, e) => n + e.costUsd, 0))
  };
}
function drawCharts() {
  const data = buckets();
  for (const [key, label] of series) {
    const values = [data.xs, data[key]];
    if (charts[key]) { charts[key].setData(values); continue; }
    const box = document.createElement("div"); box.dataset.chart = key;
    document.getElementById("charts").append(box);
    charts[key] = new uPlot({ title: label, width: 320, height: 160, series: [{}, { label, stroke: "#36c", spanGaps: true, points: { show: true, size: 5 } }] }, values, box);
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
  body.textContent = JSON.stringify({ candidates: d.candidates, excluded: d.excluded, strategy: d.strategy, attempts: d.attempts, pools: d.pools, queueWaitMs: d.queueWaitMs, error: d.error, hedge: d.hedge, costUsd: entry.costUsd }, null, 2);
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
      const entry = JSON.parse(event.slice(6));
      entries.push(entry); if (entries.length > 10000) entries.shift();
      showDecision(entry, true);
      document.getElementById("decisions").dataset.live = "true";
    }
  }
}

async function start() {
  try {
    await refresh();
    const recent = await api("/decisions?limit=1000");
    for (const e of recent) showDecision(e, false);
    entries.push(...recent.reverse());
    drawCharts();
    document.getElementById("config").textContent = JSON.stringify(await api("/config"), null, 2);
    follow().catch(problem);
    setInterval(() => refresh().catch(problem), 1000);
    setInterval(drawCharts, 5000);
    document.body.dataset.ready = "true";
  } catch (e) { problem(e); }
}
start();
</script>
</body>
</html>
`
