/** A small seeded generator (xorshift32) for benchmarks: the same seed sets up the same data on every run. */
export const seeded = (seed: number): (() => number) => {
  let state = seed >>> 0 || 1
  return () => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) / 4294967296
  }
}
