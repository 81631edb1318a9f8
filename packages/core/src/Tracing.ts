/**
 * Tracing: the one gate that decides whether spans are made at all. Effect's built-in tracer
 * exports nothing, so without another tracer installed (or with tracing disabled) the router, the
 * providers and the gateway make no spans: the hot path pays nothing for tracing nobody reads.
 */
import type { Fiber } from "effect"
import { Context, DefaultServices, FiberRef, Tracer } from "effect"

/** Effect's built-in tracer: its spans are exported nowhere. */
const nativeTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/** Anything that reads fiber refs: a running fiber, or a runtime's `FiberRefs` through a getter. */
export interface FiberRefReader {
  readonly getFiberRef: <A>(ref: FiberRef.FiberRef<A>) => A
}

/** Whether spans made on `fiber` go anywhere: tracing is enabled and a tracer other than Effect's own is installed. */
export const exported = (fiber: FiberRefReader): boolean =>
  fiber.getFiberRef(FiberRef.currentTracerEnabled) &&
  Context.get(fiber.getFiberRef(DefaultServices.currentServices), Tracer.Tracer) !== nativeTracer

/** {@link exported} for a running fiber, from its own cache of its tracer (one fiber ref read, not two). */
export const exportedOn = (fiber: Fiber.RuntimeFiber<unknown, unknown>): boolean =>
  fiber.currentTracer !== nativeTracer && fiber.getFiberRef(FiberRef.currentTracerEnabled)
