/** The test projects, one per workspace and `test/` (the packages as published); the root `vitest.config.ts` imports this list. */
export const projects = [
  "packages/core",
  "packages/strategies",
  "packages/providers",
  "packages/server",
  "examples",
  "test"
]
