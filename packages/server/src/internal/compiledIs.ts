/**
 * A schema's type guard compiled to plain code, for request bodies on the hot path.
 *
 * `Schema.is` interprets the schema's AST on every call and allocates as it goes (some 2.5 KB and
 * 1.7 µs for a chat request). {@link compile} walks the AST once and returns a closure per node that
 * does only the checks. It covers the nodes the wire schemas are made of — keywords, literals,
 * unions, arrays, structs without index signatures, refinements (their own `filter` is called) —
 * and returns undefined for a schema with anything else, so the caller keeps `Schema.is`.
 *
 * It is strict where `Schema.is` is lenient (a struct must be a plain object, not an array), never
 * the other way round: what it accepts, `Schema.is` accepts. A caller that gets `false` decodes the
 * value with the schema for the answer (and for the error message).
 */
import { Option, Schema, SchemaAST } from "effect"
import type { ParseOptions } from "effect/SchemaAST"

/** A compiled check. */
export type Is = (input: unknown) => boolean

const OPTIONS: ParseOptions = {}
const hasOwn = Object.prototype.hasOwnProperty

const always: Is = () => true

/** The check of a struct's property signatures; undefined when the struct has index signatures. */
const typeLiteral = (ast: SchemaAST.TypeLiteral): Is | undefined => {
  if (ast.indexSignatures.length > 0) return undefined
  // `Schema.Struct({})` is TypeScript's `{}`: anything but null and undefined.
  if (ast.propertySignatures.length === 0) return (input) => input !== null && input !== undefined
  const names: Array<PropertyKey> = []
  const optional: Array<boolean> = []
  const checks: Array<Is> = []
  for (const property of ast.propertySignatures) {
    const check = compile(property.type)
    if (check === undefined) return undefined
    names.push(property.name)
    optional.push(property.isOptional)
    checks.push(check)
  }
  const count = names.length
  return (input) => {
    if (typeof input !== "object" || input === null || Array.isArray(input)) return false
    for (let i = 0; i < count; i++) {
      const name = names[i]!
      if (!hasOwn.call(input, name)) {
        if (optional[i]) continue
        return false
      }
      if (!checks[i]!((input as Record<PropertyKey, unknown>)[name])) return false
    }
    return true
  }
}

/** The check of an array (`Schema.Array`: no fixed elements, one rest type); undefined for tuples. */
const array = (ast: SchemaAST.TupleType): Is | undefined => {
  if (ast.elements.length > 0 || ast.rest.length !== 1) return undefined
  const item = compile(ast.rest[0]!.type)
  if (item === undefined) return undefined
  return (input) => {
    if (!Array.isArray(input)) return false
    for (let i = 0; i < input.length; i++) if (!item(input[i])) return false
    return true
  }
}

const union = (ast: SchemaAST.Union): Is | undefined => {
  const members: Array<Is> = []
  for (const type of ast.types) {
    const check = compile(type)
    if (check === undefined) return undefined
    members.push(check)
  }
  return (input) => {
    for (let i = 0; i < members.length; i++) if (members[i]!(input)) return true
    return false
  }
}

const refinement = (ast: SchemaAST.Refinement): Is | undefined => {
  const from = compile(ast.from)
  if (from === undefined) return undefined
  return (input) => from(input) && Option.isNone(ast.filter(input, OPTIONS, ast))
}

/** The compiled check of `ast`, or undefined when it has a node this module does not compile. */
export const compile = (ast: SchemaAST.AST): Is | undefined => {
  switch (ast._tag) {
    case "StringKeyword":
      return (input) => typeof input === "string"
    case "NumberKeyword":
      return (input) => typeof input === "number"
    case "BooleanKeyword":
      return (input) => typeof input === "boolean"
    case "UndefinedKeyword":
      return (input) => input === undefined
    case "UnknownKeyword":
    case "AnyKeyword":
      return always
    case "Literal": {
      const literal = ast.literal
      return (input) => input === literal
    }
    case "Union":
      return union(ast)
    case "TupleType":
      return array(ast)
    case "TypeLiteral":
      return typeLiteral(ast)
    case "Refinement":
      return refinement(ast)
    default:
      return undefined
  }
}

/** The type guard of `schema`: compiled when {@link compile} can, else `Schema.is`. */
export const is = <A, I, R>(schema: Schema.Schema<A, I, R>): ((input: unknown) => input is A) =>
  (compile(schema.ast) as ((input: unknown) => input is A) | undefined) ?? Schema.is(schema)
