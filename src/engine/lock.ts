import { randomBytes } from 'node:crypto'
import { hostname, userInfo } from 'node:os'
import type { FactValues } from '../facts/fact.js'
import type { Probe } from '../facts/probe.js'
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
  /** The facts of the probe run inside the lock (acquireLock's `then`). */
  facts?: FactValues
}

/** Printed after the probe run inside the lock, with the probe's exit code. */
const PROBED = /@@MP-PROBED (\d+)\n/

/**
 * A per-host lock held by a remote `flock` whose stdin is our SSH channel: when this process dies or the
 * connection drops, the remote side sees EOF and the kernel releases the lock, so a killed run cannot
 * leave a stale lock behind. The holder (user, controller, pid, time) is recorded for the next runner.
 *
 * `then`: a fact probe run as soon as the lock is held, in the same round trip (a run's base facts: they
 * are read under the lock, as before, without a second exchange). Its script travels on the channel's
 * stdin (`head -c` reads exactly its bytes; the rest of stdin is the lock's lifeline).
 */
export async function acquireLock(conn: Connection, options: { then?: Probe } = {}): Promise<HostLock> {
  const probe = options.then
  // The id is what `provision unlock --holder` must repeat: it kills only the holder the user saw.
  const holder = `${randomBytes(6).toString('hex')} ${userInfo().username}@${hostname()} pid ${process.pid} since ${new Date().toISOString()}`
  const script = sh`mkdir -p ${STATE_DIR} && chmod 0700 ${STATE_DIR} && exec 9>>${LOCK} &&
    if flock -n 9; then printf '%s (remote pid %s)\\n' ${holder} "$$" > ${LOCK}.holder; echo MP-LOCKED; ${probe ? sh`mp_script=$(head -c ${Buffer.byteLength(probe.script)}) && sh -c "$mp_script" </dev/null 9>&-; echo "@@MP-PROBED $?";` : []} exec cat >/dev/null;
    else printf 'MP-BUSY %s\\n' "$(cat ${LOCK}.holder 2>/dev/null)"; fi`
  const proc: RemoteProcess = conn.spawn(script, probe ? { stdin: probe.script } : {})
  const line = await proc.waitForOutput(/MP-(LOCKED|BUSY)[^\n]*\n/, 30_000)
  if (line.includes('MP-BUSY')) {
    await proc.exited
    throw new HostLockedError(conn.host, line.replace(/.*MP-BUSY ?/, '').trim())
  }
  const lock: HostLock = {
    async release() {
      proc.end()
      await proc.exited
    },
  }
  if (!probe) return lock
  let out: string
  try {
    out = await proc.waitForOutput(PROBED, 600_000)
  } catch (error) {
    await lock.release().catch(() => undefined)
    // Only the first line: the rest quotes the output, which may hold the host's secrets (so no `cause` either).
    // eslint-disable-next-line preserve-caught-error -- the caught error quotes the probe's output
    throw new Error(`${conn.host}: the fact probe inside the lock did not finish: ${(error as Error).message.split('\n')[0]}`)
  }
  const start = out.indexOf('MP-LOCKED\n') + 'MP-LOCKED\n'.length
  const done = PROBED.exec(out)!
  const code = Number(done[1])
  if (code !== 0) {
    await lock.release().catch(() => undefined)
    throw new Error(`${conn.host}: the fact probe inside the lock failed (exit code ${code})`)
  }
  lock.facts = probe.read(out.slice(start, done.index))
  return lock
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
  const r = await conn.run(script, { allowFailure: true })
  const out = r.stdout.trim()
  if (r.code !== 0 || !/^MP-(NOT-HELD|OTHER|CLEARED)/.test(out))
    throw new Error(`unlock on ${conn.host} failed (exit ${r.code}): ${r.stderr.trim() || out}`)
  if (out === 'MP-NOT-HELD') return { status: 'not-held' }
  const holder = out.replace(/^MP-\S+ ?/, '')
  return out.startsWith('MP-CLEARED') ? { status: 'cleared', holder } : { status: 'other-holder', holder }
}
