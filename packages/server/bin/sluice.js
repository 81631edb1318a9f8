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
// request's records live for microseconds, but when some once outlive collections their literals
// get pretenured; each record born old then keeps the young objects it points to alive through every
// young collection until a full one, and their literals get pretenured in turn. Whether it happens
// depends on how the first collections fall: with the router in-process (bench/router.ts), four runs
// with V8's default cost 2.9, 5.3, 7.3 and 3.3 µs of CPU a call, every run without it 3.3-3.4 µs.
// (The flag cannot be given in NODE_OPTIONS; on the command line it is left as given.)
if (!process.execArgv.some((a) => a.replaceAll("_", "-").includes("allocation-site-pretenuring"))) {
  setFlagsFromString("--no-allocation-site-pretenuring")
}
const { main } = await import("../dist/Cli.js")
main()
