/**
 * The young generation during start-up. Loading the gateway's modules allocates ~30 MB of objects
 * that live as long as the process (module namespaces, compiled code, the config): V8 sees most of
 * each scavenge survive and doubles its nursery up to its 32 MB ceiling, which then sits empty in
 * resident memory until V8's memory reducer shrinks it some ten seconds into idleness. The `sluice`
 * command holds the nursery at its initial size while it loads (`bin/sluice.js` sets the growth
 * factor to 1 before importing anything) and gives V8 back its default growth once the gateway
 * listens, so traffic grows it exactly as before. In-process users of the packages are never touched.
 *
 * `v8.setFlagsFromString` after start-up is allowed for flags V8 reads on use; this one is read each
 * time the new space grows.
 */
import { setFlagsFromString } from "node:v8"

/** V8's default factor by which the new space grows (`--semi-space-growth-factor`). */
const DEFAULT_GROWTH = 2

/** Whether `bin/sluice.js` held the nursery (so releasing it restores what it changed, nothing else). */
const held = (): boolean => (globalThis as { readonly __sluiceNurseryHeld?: boolean }).__sluiceNurseryHeld === true

/** Gives V8 back its default young-generation growth; a no-op unless the command held it. */
export const release = (): void => {
  if (!held()) return
  setFlagsFromString(`--semi-space-growth-factor=${DEFAULT_GROWTH}`)
  ;(globalThis as { __sluiceNurseryHeld?: boolean }).__sluiceNurseryHeld = false
}
