import { describe, expect, it } from "@effect/vitest"
import * as Undici from "undici"
import { Agent } from "../src/internal/transport.js"

describe("the transport's undici Agent", () => {
  it("is the class undici's index exports, loaded from its own module", () => {
    // The transport requires undici's agent module directly to keep the rest of undici unloaded;
    // a release that moved the file would fail here rather than at a gateway's start.
    expect(Agent).toBe(Undici.Agent)
  })
})
