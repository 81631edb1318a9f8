/** State-store keys built once per upstream, so reading the state of many candidates allocates nothing. */

/**
 * The keys `<prefix><upstream id>`, each built on first use and kept (one per upstream of the config).
 */
export const keyCache = (prefix: string): ((upstreamId: string) => string) => {
  const keys = new Map<string, string>()
  return (upstreamId) => {
    let key = keys.get(upstreamId)
    if (key === undefined) keys.set(upstreamId, (key = `${prefix}${upstreamId}`))
    return key
  }
}
