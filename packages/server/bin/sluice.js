#!/usr/bin/env node
// The `sluice` command. Sources are TypeScript; tsx compiles them on load.
import { register } from "tsx/esm/api"

register()
const { main } = await import("../src/Cli.ts")
main()
