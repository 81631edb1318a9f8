#!/usr/bin/env node
// The `sluice` command: the compiled CLI (`npm run build` writes dist/ in a clone of the repository).
import { main } from "../dist/Cli.js"

main()
