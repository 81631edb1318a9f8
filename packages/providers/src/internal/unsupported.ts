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
 * the upstream, not retried (a request is only sent where it can be served when capabilities are
 * configured; see `Capabilities`).
 */
export const refuse = (upstream: Topology.Upstream, kind: string, what: Unsupported): Errors.UpstreamError =>
  Errors.Failure.http(
    upstream.id,
    400,
    `upstream '${upstream.id}' (${kind}) cannot serve this request: ${what.message} (${what.feature}); ` +
      `send it to a pool whose upstreams support ${what.feature}`
  )
