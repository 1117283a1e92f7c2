import { randomBytes } from 'node:crypto'
import { hostname, userInfo } from 'node:os'
import type { Connection, RemoteProcess } from '../ssh/connection.js'
import { sh } from '../core/shell.js'
import { STATE_DIR } from '../synapse/paths.js'

const LOCK = `${STATE_DIR}/lock`

/** A holder's id: 12 hex digits, the first word of the holder line (`<id> user@controller pid N since T (remote pid M)`). */
const HOLDER_ID = /^[0-9a-f]{12}$/

/** The id at the start of a holder line, or undefined for a line without one (an older version's). */
export function holderId(holder: string): string | undefined {
  const first = holder.trim().split(/\s+/, 1)[0] ?? ''
  return HOLDER_ID.test(first) ? first : undefined
}

export class HostLockedError extends Error {
  constructor(host: string, holder: string) {
    const id = holderId(holder)
    super(
      `${host} is locked by another run: ${holder || 'holder unknown'}. Wait for it to finish. ` +
        `If that run is gone and its remote process is stuck, clear it with: provision unlock --inventory <file> --limit ${host} --holder ${id ?? '<id>'}`,
    )
    this.name = 'HostLockedError'
  }
}

export interface HostLock {
  release(): Promise<void>
}

/**
 * A per-host lock held by a remote `flock` whose stdin is our SSH channel: when this process dies or the
 * connection drops, the remote side sees EOF and the kernel releases the lock, so a killed run cannot
 * leave a stale lock behind. The holder (user, controller, pid, time) is recorded for the next runner.
 */
export async function acquireLock(conn: Connection): Promise<HostLock> {
  // The id is what `provision unlock --holder` must repeat: it kills only the holder the user saw.
  const holder = `${randomBytes(6).toString('hex')} ${userInfo().username}@${hostname()} pid ${process.pid} since ${new Date().toISOString()}`
  const script = sh`mkdir -p ${STATE_DIR} && chmod 0700 ${STATE_DIR} && exec 9>>${LOCK} &&
    if flock -n 9; then printf '%s (remote pid %s)\\n' ${holder} "$$" > ${LOCK}.holder; echo MP-LOCKED; exec cat >/dev/null;
    else printf 'MP-BUSY %s\\n' "$(cat ${LOCK}.holder 2>/dev/null)"; fi`
  const proc: RemoteProcess = conn.spawn(script)
  const line = await proc.waitForOutput(/MP-(LOCKED|BUSY)[^\n]*\n/, 30_000)
  if (line.includes('MP-BUSY')) {
    await proc.exited
    throw new HostLockedError(conn.host, line.replace(/.*MP-BUSY ?/, '').trim())
  }
  return {
    async release() {
      proc.end()
      await proc.exited
    },
  }
}

export type BreakLockResult =
  | { status: 'cleared'; holder: string }
  | { status: 'not-held' }
  /** Held by another holder than the one named: nothing was killed. */
  | { status: 'other-holder'; holder: string }

/**
 * Kill a stuck remote holder of the lock (a run whose connection never closed), but only the holder whose
 * id the user names (from the lock message): every process with the lock file open, found through /proc
 * (fuser is not installed on minimal hosts). The lock is only ever opened by holders and by runs trying it
 * with `flock -n`, which give up at once. The holder line is read again just before the kill, so a holder
 * that changed meanwhile is not killed.
 */
export async function breakLock(conn: Connection, expectedId: string): Promise<BreakLockResult> {
  const script = sh`holder() { cat ${LOCK}.holder 2>/dev/null; }; h=$(holder)
pids=$(for p in /proc/[0-9]*; do for f in "$p"/fd/*; do [ "$(readlink "$f" 2>/dev/null)" = ${LOCK} ] && { echo "\${p#/proc/}"; break; }; done; done 2>/dev/null)
if [ -z "$pids" ]; then echo MP-NOT-HELD
elif [ "\${h%% *}" != ${expectedId} ] || [ "$(holder)" != "$h" ]; then printf 'MP-OTHER %s\n' "$h"
else kill $pids; printf 'MP-CLEARED %s\n' "$h"; fi`
  const r = await conn.run(script)
  const out = r.stdout.trim()
  if (r.code !== 0 || !/^MP-(NOT-HELD|OTHER|CLEARED)/.test(out)) throw new Error(`unlock on ${conn.host} failed (exit ${r.code}): ${r.stderr.trim() || out}`)
  if (out === 'MP-NOT-HELD') return { status: 'not-held' }
  const holder = out.replace(/^MP-\S+ ?/, '')
  return out.startsWith('MP-CLEARED') ? { status: 'cleared', holder } : { status: 'other-holder', holder }
}
