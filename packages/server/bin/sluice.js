#!/usr/bin/env node
// The `sluice` command: the compiled CLI (`npm run build` writes dist/ in a clone of the repository).
// Start-up holds V8's young generation at its initial size while the modules load (see
// src/internal/nursery.ts); the CLI restores the default growth once the gateway listens.
import { setFlagsFromString } from "node:v8"

// Left alone when the command line or NODE_OPTIONS tunes the young generation itself.
// (V8 takes its flags with `-` or `_`.)
if (![...process.execArgv, process.env.NODE_OPTIONS ?? ""].some((a) => a.replaceAll("_", "-").includes("semi-space"))) {
  setFlagsFromString("--semi-space-growth-factor=1")
  globalThis.__sluiceNurseryHeld = true
}
// No allocation-site pretenuring: once most objects of a literal have outlived a young collection,
// V8 allocates that literal's objects straight in the old generation, and does not take it back. A
// request's records live for microseconds, but when some once outlive collections their sites get
// pretenured; each pretenured record then keeps the young objects it points to alive through every
// young collection until a full one, and their sites get pretenured in turn. Measured with the
// router in-process (bench/router.ts), where it had happened: 97-100% of a request's records born
// old, 1.2 MB promoted by every young collection, 4.6 µs of CPU a routed call against 2.4 µs.
if (
  ![...process.execArgv, process.env.NODE_OPTIONS ?? ""].some((a) => a.replaceAll("_", "-").includes("pretenuring"))
) {
  setFlagsFromString("--no-allocation-site-pretenuring")
}
const { main } = await import("../dist/Cli.js")
main()
