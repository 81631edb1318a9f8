/**
 * JSON values from outside (request bodies, configs) may nest arbitrarily deep; `JSON.stringify` and
 * every other recursive walk overflow the stack on them. These helpers look only as deep as they are
 * told to, or walk without recursion.
 */

/**
 * True when `value` nests arrays and objects more than `levels` deep (a scalar is 0 levels, `[]` one).
 * Looks no deeper than `levels`, so its own recursion is bounded by it.
 */
export const deeperThan = (value: unknown, levels: number): boolean => {
  if (typeof value !== "object" || value === null) return false
  if (levels <= 0) return true
  if (Array.isArray(value)) {
    for (const item of value) if (typeof item === "object" && item !== null && deeperThan(item, levels - 1)) return true
    return false
  }
  for (const key in value) {
    const item = (value as Record<string, unknown>)[key]
    if (typeof item === "object" && item !== null && deeperThan(item, levels - 1)) return true
  }
  return false
}

/** Nesting that `JSON.stringify` is trusted with; anything deeper is written by {@link writeDeep}. */
const NATIVE_LEVELS = 64

/** Literal JSON text waiting on {@link writeDeep}'s stack, set apart from the values still to write. */
class Text {
  constructor(readonly text: string) {}
}

const CLOSE_ARRAY = new Text("]")
const CLOSE_OBJECT = new Text("}")
const COMMA = new Text(",")

/** `JSON.stringify` of parsed JSON (no `toJSON`, no cycles) without recursion. */
const writeDeep = (root: unknown): string => {
  let out = ""
  const pending: Array<unknown> = [root]
  while (pending.length > 0) {
    const next = pending.pop()
    if (next instanceof Text) out += next.text
    else if (typeof next !== "object" || next === null) out += JSON.stringify(next) ?? "null"
    else if (Array.isArray(next)) {
      out += "["
      // Pushed last to first, so they come off the stack in order.
      pending.push(CLOSE_ARRAY)
      for (let i = next.length - 1; i >= 0; i--) {
        pending.push(next[i])
        if (i > 0) pending.push(COMMA)
      }
    } else {
      out += "{"
      pending.push(CLOSE_OBJECT)
      const record = next as Record<string, unknown>
      const keys = Object.keys(record).filter((key) => {
        const type = typeof record[key]
        return type !== "undefined" && type !== "function" && type !== "symbol"
      })
      for (let i = keys.length - 1; i >= 0; i--) {
        pending.push(record[keys[i]!], new Text(`${i > 0 ? "," : ""}${JSON.stringify(keys[i])}:`))
      }
    }
  }
  return out
}

/**
 * The JSON text of a parsed JSON value, as `JSON.stringify` writes it (`""` for `undefined`), at any
 * depth: natively when it nests at most 64 levels, without recursion beyond that.
 */
export const jsonText = (value: unknown): string =>
  deeperThan(value, NATIVE_LEVELS) ? writeDeep(value) : (JSON.stringify(value) ?? "")
