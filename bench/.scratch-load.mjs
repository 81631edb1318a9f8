import { Pool } from "undici"
const [port, n, c, stream] = [process.argv[2], Number(process.argv[3] ?? 2000), Number(process.argv[4] ?? 10), process.argv[5] !== "0"]
const pool = new Pool(`http://127.0.0.1:${port}`, { connections: c })
const body = JSON.stringify({ model: "bench-model", messages: [{ role: "user", content: "Hello there, how are you today?" }], ...(stream ? { stream: true } : {}) })
let left = n; const t0 = performance.now(); const ttfb = []
const worker = async () => { while (left-- > 0) { const s = performance.now(); const res = await pool.request({ path: "/v1/chat/completions", method: "POST", headers: { "content-type": "application/json" }, body }); let first = true; for await (const ch of res.body) { if (first) { ttfb.push(performance.now() - s); first = false } } if (res.statusCode !== 200) throw new Error(String(res.statusCode)) } }
await Promise.all(Array.from({ length: c }, worker))
ttfb.sort((a, b) => a - b)
console.log(`${n} in ${(performance.now() - t0).toFixed(0)} ms, ${(n / (performance.now() - t0) * 1000).toFixed(0)}/s, ttfb p50 ${ttfb[ttfb.length >> 1].toFixed(3)}`)
await pool.close()
