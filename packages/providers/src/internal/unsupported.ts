/** What an upstream's API cannot take, found while translating a request, and the failure it becomes. */
import { Errors } from "@sluice/core"
import type { Topology } from "@sluice/core"

/** A request a provider cannot serve as asked (`n > 1`, audio input...), naming the feature. */
export class Unsupported {
  readonly _tag = "Unsupported"
  constructor(
    readonly feature: string,
    readonly message: string
  ) {}
}

/**
 * The failure of a request `upstream` (of provider `kind`) cannot serve: a 400 naming the feature and
 * the upstream, which the router takes as an exclusion of this upstream (`Errors.Failure.unsupported`)
 * and tries another of the pool; the capability guard usually keeps such a request away beforehand.
 */
export const refuse = (upstream: Topology.Upstream, kind: string, what: Unsupported): Errors.UpstreamError =>
  Errors.Failure.unsupported(
    upstream.id,
    what.feature,
    `upstream '${upstream.id}' (${kind}) cannot serve this request: ${what.message} (${what.feature}); ` +
      `send it to a pool whose upstreams support ${what.feature}`
  )
