/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof`): self time aggregated by function (name + file
 * + line) and by file/package, as percentages of the sampled (non-idle) time.
 *
 *   node --import tsx bench/profile-summary.ts <file.cpuprofile | directory (its biggest profile)> [options]
 *     --top N            rows per table (default 25)
 *     --skip-ms MS       ignore the first MS milliseconds of the profile (start-up, compilation, warm-up)
 *     --until-ms MS      ignore samples after MS milliseconds
 *     --include-idle     count "(idle)" samples in the total (default: excluded)
 *     --inclusive TEXT   also print inclusive (self + callees) time of functions whose file holds TEXT
 *                        (e.g. "packages/" for Sluice's own code)
 *     --callers TEXT     also print the heaviest call stacks (by self time) of functions whose name or
 *                        file holds TEXT
 *     --depth N          frames per stack for --callers (default 8)
 *     --timeline         also print busy / idle milliseconds per second (to choose --skip-ms)
 *
 * tsx runs the TypeScript sources as esbuild output minified to one line, so V8 reports every function
 * of a .ts file at line 1 with a large column. This script re-runs the same esbuild transform (tsx's
 * options) and maps those positions back to source lines through the source map.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs"
import { join, relative } from "node:path"
import { fileURLToPath } from "node:url"

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
  readonly columnNumber: number
}
interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: ReadonlyArray<number>
}
interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly startTime: number
  readonly endTime: number
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const ROOT = fileURLToPath(new URL("..", import.meta.url))

// ---------------------------------------------------------------------------------------------------
// Arguments

const argv = process.argv.slice(2)
const option = (name: string): string | undefined => {
  const i = argv.indexOf(`--${name}`)
  return i === -1 ? undefined : argv[i + 1]
}
const top = Number(option("top") ?? "25")
const skipMs = Number(option("skip-ms") ?? "0")
const untilMs = Number(option("until-ms") ?? "Infinity")
const includeIdle = argv.includes("--include-idle")
const timeline = argv.includes("--timeline")
const callers = option("callers")
const depth = Number(option("depth") ?? "8")
const inclusiveIn = option("inclusive")
const target = argv.find((a, i) => !a.startsWith("--") && !(i > 0 && argv[i - 1]?.startsWith("--") === true))
if (target === undefined) {
  console.error("usage: node --import tsx bench/profile-summary.ts <file.cpuprofile | dir> [--top N] [--skip-ms MS]")
  process.exit(1)
}
// `... | head` closes the pipe early: stop quietly.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0)
  throw error
})

const resolveFile = (path: string): string => {
  if (!statSync(path).isDirectory()) return path
  const profiles = readdirSync(path)
    .filter((f) => f.endsWith(".cpuprofile"))
    .map((f) => join(path, f))
    // The main thread's profile is the biggest (tsx adds a loader worker with its own small profile).
    .sort((a, b) => statSync(b).size - statSync(a).size)
  const newest = profiles[0]
  if (newest === undefined) throw new Error(`no .cpuprofile in ${path}`)
  return newest
}

// ---------------------------------------------------------------------------------------------------
// Source positions of tsx-compiled files

type Transform = (source: string, options: Record<string, unknown>) => { readonly code: string; readonly map: string }

const esbuildTransform: Transform | undefined = await import("esbuild").then(
  (m) => m.transformSync as unknown as Transform,
  () => undefined
)

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
const B64_VALUE = new Map([...B64].map((c, i) => [c, i]))

/** Decodes a source map's `mappings` into [generated line, generated column, source line] triples. */
const decodeMappings = (mappings: string): Array<readonly [number, number, number]> => {
  const out: Array<readonly [number, number, number]> = []
  let sourceLine = 0
  const fields = [0, 0, 0, 0, 0]
  mappings.split(";").forEach((line, genLine) => {
    let genCol = 0
    for (const segment of line.split(",")) {
      if (segment === "") continue
      let field = 0
      let value = 0
      let shift = 0
      for (const c of segment) {
        const digit = B64_VALUE.get(c) ?? 0
        value += (digit & 31) << shift
        if ((digit & 32) !== 0) {
          shift += 5
          continue
        }
        const signed = (value & 1) === 1 ? -(value >>> 1) : value >>> 1
        fields[field] = signed
        field++
        value = 0
        shift = 0
      }
      genCol += fields[0] ?? 0
      if (field >= 4) {
        sourceLine += fields[2] ?? 0
        out.push([genLine, genCol, sourceLine])
      }
    }
  })
  return out
}

interface SourceInfo {
  readonly mappings: ReadonlyArray<readonly [number, number, number]>
  readonly lines: ReadonlyArray<string>
}
const sources = new Map<string, SourceInfo | undefined>()

const sourceInfo = (path: string): SourceInfo | undefined => {
  if (sources.has(path)) return sources.get(path)
  let info: SourceInfo | undefined
  if (esbuildTransform !== undefined && /\.[cm]?tsx?$/.test(path) && existsSync(path)) {
    const text = readFileSync(path, "utf8")
    try {
      // The options tsx uses (tsx/dist: target, sourcemap, minifyWhitespace, keepNames, format esm).
      const result = esbuildTransform(text, {
        target: `node${process.versions.node}`,
        loader: path.endsWith("x") ? "tsx" : "ts",
        sourcemap: true,
        minifyWhitespace: true,
        keepNames: true,
        format: "esm",
        sourcefile: path
      })
      const map = JSON.parse(result.map) as { readonly mappings: string }
      info = { mappings: decodeMappings(map.mappings), lines: text.split("\n") }
    } catch {
      info = undefined
    }
  }
  sources.set(path, info)
  return info
}

/** The 1-based source line (and its text) of a 0-based generated position, when known. */
const sourceLine = (path: string, line: number, column: number): { line: number; text: string } | undefined => {
  const info = sourceInfo(path)
  if (info === undefined) return undefined
  let lo = 0
  let hi = info.mappings.length - 1
  let found: readonly [number, number, number] | undefined
  while (lo <= hi) {
    const mid = (lo + hi) >> 1
    const m = info.mappings[mid]!
    if (m[0] < line || (m[0] === line && m[1] <= column)) {
      found = m
      lo = mid + 1
    } else hi = mid - 1
  }
  if (found === undefined) return undefined
  return { line: found[2] + 1, text: (info.lines[found[2]] ?? "").trim() }
}

// ---------------------------------------------------------------------------------------------------
// Labels

/** A short location: a path relative to the repo, `pkg/file` inside node_modules, or node's own. */
const where = (url: string): string => {
  if (url === "") return "(native/vm)"
  const path = url.startsWith("file://") ? fileURLToPath(url.split("?")[0]!) : url
  const nm = path.lastIndexOf("node_modules/")
  if (nm !== -1) return path.slice(nm + "node_modules/".length)
  if (path.startsWith(ROOT)) return relative(ROOT, path)
  return path
}

/** The package (node_modules), workspace file, or node: builtin a location belongs to. */
const packageOf = (url: string): string => {
  const loc = where(url)
  if (loc.startsWith("node:")) return "node: (builtins)"
  if (loc === "(native/vm)") return loc
  if (url.includes("node_modules/")) {
    const parts = loc.split("/")
    return parts[0]?.startsWith("@") === true ? `${parts[0]}/${parts[1]}` : (parts[0] ?? loc)
  }
  return loc
}

const labels = new Map<string, string>()
/** `name  file:line` with, for anonymous functions in mapped sources, the start of that source line. */
const label = (f: CallFrame): string => {
  const cacheKey = `${f.functionName}|${f.url}|${f.lineNumber}|${f.columnNumber}`
  const cached = labels.get(cacheKey)
  if (cached !== undefined) return cached
  const name = f.functionName === "" ? "(anonymous)" : f.functionName
  let result: string
  if (f.url === "") result = name
  else {
    const path = f.url.startsWith("file://") ? fileURLToPath(f.url.split("?")[0]!) : f.url
    const mapped = f.url.includes("node_modules/") ? undefined : sourceLine(path, f.lineNumber, f.columnNumber)
    if (mapped === undefined) result = `${name}  ${where(f.url)}:${f.lineNumber + 1}`
    else {
      const snippet = f.functionName === "" ? `  «${mapped.text.slice(0, 70)}»` : ""
      result = `${name}  ${where(f.url)}:${mapped.line}${snippet}`
    }
  }
  labels.set(cacheKey, result)
  return result
}

// ---------------------------------------------------------------------------------------------------
// Aggregation

const file = resolveFile(target)
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const parentOf = new Map<number, number>()
for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id)

const selfByFunction = new Map<string, number>()
const selfByPackage = new Map<string, number>()
const stacks = new Map<string, number>()
const inclusive = new Map<string, number>()
const perSecond: Array<{ busy: number; idle: number }> = []
const add = (map: Map<string, number>, key: string, us: number): void => {
  map.set(key, (map.get(key) ?? 0) + us)
}
let total = 0
let idle = 0
let skipped = 0
let t = profile.startTime
for (let i = 0; i < profile.samples.length; i++) {
  const delta = profile.timeDeltas[i] ?? 0
  t += delta
  const node = byId.get(profile.samples[i] ?? -1)
  if (node === undefined) continue
  const frame = node.callFrame
  const isIdle = frame.functionName === "(idle)"
  if (timeline) {
    const bucket = (perSecond[Math.floor((t - profile.startTime) / 1e6)] ??= { busy: 0, idle: 0 })
    if (isIdle) bucket.idle += delta
    else bucket.busy += delta
  }
  const at = (t - profile.startTime) / 1000
  if (at < skipMs || at > untilMs) {
    skipped += delta
    continue
  }
  if (isIdle) {
    idle += delta
    if (!includeIdle) continue
  }
  total += delta
  add(selfByFunction, label(frame), delta)
  add(selfByPackage, frame.url === "" ? label(frame) : packageOf(frame.url), delta)
  if (inclusiveIn !== undefined) {
    const seen = new Set<string>()
    for (let id: number | undefined = node.id; id !== undefined; id = parentOf.get(id)) {
      const f = byId.get(id)?.callFrame
      if (f === undefined) break
      if (f.url !== "" && (f.url.includes(inclusiveIn) || where(f.url).includes(inclusiveIn))) {
        const key = label(f)
        if (!seen.has(key)) {
          seen.add(key)
          add(inclusive, key, delta)
        }
      }
    }
  }
  if (callers !== undefined && `${frame.functionName} ${frame.url}`.includes(callers)) {
    const frames: Array<string> = []
    for (let id: number | undefined = node.id; id !== undefined && frames.length < depth; id = parentOf.get(id)) {
      const f = byId.get(id)?.callFrame
      if (f === undefined || f.functionName === "(root)") break
      frames.push(label(f))
    }
    add(stacks, frames.join("\n        <- "), delta)
  }
}

// ---------------------------------------------------------------------------------------------------
// Output

const show = (title: string, map: Map<string, number>): void => {
  console.log(`\n${title}`)
  const rows = [...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)
  let cumulative = 0
  rows.forEach(([key, us], i) => {
    cumulative += us
    const share = ((us / total) * 100).toFixed(2).padStart(6)
    const cum = ((cumulative / total) * 100).toFixed(1).padStart(5)
    console.log(
      `${String(i + 1).padStart(3)}. ${share}%  (cum ${cum}%)  ${(us / 1000).toFixed(1).padStart(8)} ms  ${key}`
    )
  })
}

console.log(`profile: ${file}`)
console.log(
  `span ${((profile.endTime - profile.startTime) / 1e6).toFixed(2)} s; outside the window ${(skipped / 1e6).toFixed(2)} s; ` +
    `idle ${(idle / 1e6).toFixed(2)} s (${includeIdle ? "included" : "excluded"}); ` +
    `counted ${(total / 1e6).toFixed(2)} s of samples (percentages are of this)` +
    (esbuildTransform === undefined ? "; esbuild not found: .ts positions are not mapped" : "")
)
if (timeline) {
  console.log("\nTimeline (second: busy ms / idle ms)")
  perSecond.forEach((b, second) =>
    console.log(
      `${String(second).padStart(4)}s  ${(b.busy / 1000).toFixed(0).padStart(5)}  ${(b.idle / 1000).toFixed(0).padStart(5)}`
    )
  )
}
show(`Top ${top} functions by self time`, selfByFunction)
show(`Top ${top} files / packages by self time`, selfByPackage)
if (inclusiveIn !== undefined) show(`Top ${top} functions in '${inclusiveIn}' by inclusive time`, inclusive)
if (callers !== undefined) show(`Heaviest stacks of functions matching '${callers}' (self time)`, stacks)
