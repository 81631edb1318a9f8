import { defineProject } from "vitest/config"
import { ssr } from "../../vitest.shared.js"

export default defineProject({
  ssr,
  test: {
    name: "providers",
    include: ["test/**/*.test.ts"]
  }
})
