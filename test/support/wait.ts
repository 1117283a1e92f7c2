/**
 * Waiting on a condition instead of a fixed sleep: CI shares its machine (2 cores, other container tests
 * at once), so a service that starts in 0.3 s on a quiet host may take 10 s there. Deadlines are generous
 * on purpose; a wait that runs out fails the test, naming what it waited for.
 */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Calls `fn` until it returns a value other than undefined (or false), every `intervalMs`, for up to `timeoutMs`. */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  { timeoutMs = 90_000, intervalMs = 250 } = {},
): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v !== undefined && v !== false) return v
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`)
    await sleep(intervalMs)
  }
}

/** A host command that exits 0 once something listens on TCP `port` (up to `seconds`), for systemd-run'd servers. */
export const listening = (port: number, seconds = 60) =>
  `for i in $(seq 1 ${seconds * 10}); do ss -Htln 'sport = :${port}' | grep -q . && exit 0; sleep 0.1; done; echo 'nothing listens on port ${port} after ${seconds} s' >&2; exit 1`
