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
const { main } = await import("../dist/Cli.js")
main()
