import type { ShellCommand } from '../core/shell.js'
import type { Connection } from '../ssh/connection.js'

/**
 * How long a reloaded unit may take to serve its new configuration. Apache's graceful reload is a
 * signal: its parent re-reads the configuration and starts new children when it next gets the CPU,
 * which took up to about a second on a loaded 2-core host; a starved parent takes longer.
 */
export const RELOAD_WAIT_MS = 60_000
const POLL_MS = 250

/** The generation the unit serves now, or '' when the probe cannot tell (nothing answers, or the answer lacks it). */
export async function readGeneration(conn: Connection, probe: ShellCommand): Promise<string> {
  const r = await conn.run(probe, { timeoutMs: 30_000, allowFailure: true })
  return r.code === 0 ? r.stdout.trim() : ''
}

/**
 * After a reload: wait until the unit serves a generation other than `before` (read just before the
 * reload). An empty `before` means the old configuration did not answer the probe at all, so any
 * answer comes from the new one. Throws when the new generation does not serve in time: the run must
 * not go on (and report success) while the old configuration answers.
 */
export async function awaitNewGeneration(
  conn: Connection,
  unit: string,
  probe: ShellCommand,
  before: string,
  options: { timeoutMs?: number; pollMs?: number } = {},
): Promise<string> {
  const timeoutMs = options.timeoutMs ?? RELOAD_WAIT_MS
  const deadline = Date.now() + timeoutMs
  let last: string
  for (;;) {
    last = await readGeneration(conn, probe)
    if (last !== '' && last !== before) return last
    if (Date.now() >= deadline) break
    await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? POLL_MS))
  }
  const serving = last === '' ? 'no answer to its generation probe' : `still generation ${last}, as before the reload`
  throw new Error(
    `${unit}: reloaded, but ${timeoutMs / 1000} s later its new configuration is not serving (${serving}; probe: ${probe.text})`,
  )
}
