/**
 * Child processes of the benchmark: started with their output kept (the last lines, shown when
 * something goes wrong), awaited until their health endpoint answers, and always stopped — SIGINT
 * first (so `--cpu-prof` can write its profile), SIGKILL when that does not end them. Every child
 * still alive when the bench process exits is SIGKILLed.
 */
import type { ChildProcess } from "node:child_process"
import { spawn } from "node:child_process"
import { closeSync, fstatSync, openSync, readFileSync, readSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { setTimeout as sleep } from "node:timers/promises"
import { request } from "undici"

export interface Child {
  readonly name: string
  readonly process: ChildProcess
  readonly pid: number
  /** The last lines the child printed (stdout and stderr). */
  readonly output: () => string
  /** True once the child has exited. */
  readonly exited: () => boolean
}

const running = new Set<Child>()
const KEEP_LINES = 60

/** Starts `command args` with its output captured. */
export const start = (
  name: string,
  command: string,
  args: ReadonlyArray<string>,
  options: {
    readonly cwd: string
    readonly env?: NodeJS.ProcessEnv
    /**
     * Standard output goes to this file instead of a pipe to this process, as a deployed gateway's
     * log would go to a file or a collector: a child that logs a line per request would otherwise
     * make the load generator read and split thousands of lines a second, on the same cores as the
     * process it measures. Its last lines are shown with the rest when something goes wrong.
     */
    readonly stdoutFile?: string
  }
): Child => {
  const stdoutFd = options.stdoutFile === undefined ? undefined : openSync(options.stdoutFile, "a")
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", stdoutFd ?? "pipe", "pipe"]
  })
  // The child has its own copy of the descriptor.
  if (stdoutFd !== undefined) closeSync(stdoutFd)
  const lines: Array<string> = []
  const keep = (chunk: Buffer): void => {
    for (const line of chunk.toString("utf8").split("\n")) {
      if (line.trim() === "") continue
      lines.push(line)
      if (lines.length > KEEP_LINES) lines.shift()
    }
  }
  child.stdout?.on("data", keep)
  child.stderr?.on("data", keep)
  let exited = false
  child.once("exit", () => {
    exited = true
  })
  child.once("error", (error) => {
    exited = true
    lines.push(`spawn error: ${error.message}`)
  })
  if (child.pid === undefined) throw new Error(`${name}: could not start ${command}`)
  const handle: Child = {
    name,
    process: child,
    pid: child.pid,
    output: () =>
      options.stdoutFile === undefined ? lines.join("\n") : [...tailOf(options.stdoutFile), ...lines].join("\n"),
    exited: () => exited || child.exitCode !== null || child.signalCode !== null
  }
  running.add(handle)
  child.once("exit", () => running.delete(handle))
  return handle
}

/** The last lines of a file (its last 8 KB), or none when it cannot be read. */
const tailOf = (path: string): Array<string> => {
  try {
    const fd = openSync(path, "r")
    const buffer = Buffer.alloc(8192)
    let read: number
    try {
      read = readSync(fd, buffer, 0, buffer.length, Math.max(0, fstatSync(fd).size - buffer.length))
    } finally {
      closeSync(fd)
    }
    return buffer
      .toString("utf8", 0, read)
      .split("\n")
      .filter((line) => line.trim() !== "")
      .slice(-KEEP_LINES)
  } catch {
    return []
  }
}

/** Polls `url` until it answers 200; fails when the child exits or the time is up. */
export const waitReady = async (child: Child, url: string, timeoutMs = 30_000): Promise<void> => {
  const deadline = performance.now() + timeoutMs
  let last = "no answer yet"
  while (performance.now() < deadline) {
    if (child.exited()) {
      throw new Error(`${child.name} exited before it was ready (code ${child.process.exitCode}):\n${child.output()}`)
    }
    try {
      const res = await request(url, { headersTimeout: 1_000, bodyTimeout: 1_000 })
      await res.body.text()
      if (res.statusCode === 200) return
      last = `status ${res.statusCode}`
    } catch (error) {
      last = error instanceof Error ? ((error as NodeJS.ErrnoException).code ?? error.message) : String(error)
    }
    await sleep(50)
  }
  throw new Error(`${child.name} not ready at ${url} after ${timeoutMs} ms (${last}):\n${child.output()}`)
}

/** Stops a child: SIGINT, then SIGKILL after `graceMs`. Resolves once it has exited. */
export const stop = async (child: Child, graceMs = 10_000): Promise<void> => {
  if (child.exited()) return
  const exited = new Promise<void>((resolve) => child.process.once("exit", () => resolve()))
  child.process.kill("SIGINT")
  const timer = setTimeout(() => {
    if (!child.exited()) child.process.kill("SIGKILL")
  }, graceMs)
  await exited
  clearTimeout(timer)
}

/** Stops every child still running (in parallel). */
export const stopAll = async (graceMs?: number): Promise<void> => {
  await Promise.all([...running].map((c) => stop(c, graceMs)))
}

/** Last resort (synchronous, for `process.on("exit")`): SIGKILL every child still running. */
export const killAllNow = (): void => {
  for (const child of running) {
    try {
      child.process.kill("SIGKILL")
    } catch {
      // already gone
    }
  }
}

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** CPU time (user + system, ms) a process has used so far, from /proc; undefined elsewhere. */
export const cpuMs = (pid: number): number | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime are 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    const ticks = Number(fields[11]) + Number(fields[12])
    return Number.isFinite(ticks) ? ticks * 10 : undefined // CLK_TCK is 100 on Linux
  } catch {
    return undefined
  }
}

/** A field of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`); undefined elsewhere or once the process is gone. */
const statusKb = (pid: number, field: string): number | undefined => {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8")
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)
    return match === null ? undefined : Number(match[1])
  } catch {
    return undefined
  }
}

/** Resident memory of a process now, in MB (10^6 bytes), from `/proc/<pid>/status`; undefined elsewhere. */
export const rssMb = (pid: number): number | undefined => {
  const kb = statusKb(pid, "VmRSS")
  return kb === undefined ? undefined : (kb * 1024) / 1e6
}

/**
 * Samples a process's resident memory every `everyMs` until stopped, and returns the peak in MB: the
 * larger of the samples and the kernel's own high-water mark (`VmHWM`), which is reset first where
 * the kernel allows it (`/proc/<pid>/clear_refs`), so a peak between two samples is not missed and
 * one from before (start-up) does not count.
 */
export const rssPeakMeter = (pid: number, everyMs = 20): { readonly stop: () => number | undefined } => {
  let hwmReset = false
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5")
    hwmReset = true
  } catch {
    // Not Linux, or not allowed: the samples alone.
  }
  let peak = statusKb(pid, "VmRSS")
  const timer = setInterval(() => {
    const kb = statusKb(pid, "VmRSS")
    if (kb !== undefined && (peak === undefined || kb > peak)) peak = kb
  }, everyMs)
  return {
    stop: () => {
      clearInterval(timer)
      const hwm = hwmReset ? statusKb(pid, "VmHWM") : undefined
      const kb = Math.max(peak ?? 0, hwm ?? 0)
      return kb === 0 ? undefined : (kb * 1024) / 1e6
    }
  }
}

/** The soft limit on open files of a process (`/proc/<pid>/limits`); undefined elsewhere or when unlimited. */
export const openFilesLimit = (pid: number | "self"): number | undefined => {
  try {
    const match = /^Max open files\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/limits`, "utf8"))
    return match === null ? undefined : Number(match[1])
  } catch {
    return undefined
  }
}
