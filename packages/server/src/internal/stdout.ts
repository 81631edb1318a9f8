/**
 * Standard output written as Node's console writes it: an error on it — EPIPE once the reader of a
 * pipe is gone, a full disk — drops what was written instead of ending the process. A synchronous
 * error is caught by a listener held during the write; an asynchronous one (a pipe's, emitted on a
 * later tick) by a listener the write's callback adds before the stream emits it.
 */
export const writeStdout = (chunk: string | Uint8Array): void => {
  const out = process.stdout
  const listening = out.listenerCount("error") > 0
  if (!listening) out.once("error", ignore)
  try {
    out.write(chunk, written)
  } catch {
    // Nothing to tell: this is where the gateway tells things.
  } finally {
    if (!listening) out.removeListener("error", ignore)
  }
}

const ignore = () => {}

/** A failed write's error is emitted on the stream after its callback: something must listen then. */
const written = (error: Error | null | undefined) => {
  if (error !== null && error !== undefined && process.stdout.listenerCount("error") === 0)
    process.stdout.once("error", ignore)
}
