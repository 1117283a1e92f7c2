import { hostname, userInfo } from 'node:os'
import type { Connection, RemoteProcess } from '../ssh/connection.js'
import { sh } from '../ssh/shell.js'
import { STATE_DIR } from './host-state.js'

const LOCK = `${STATE_DIR}/lock`

export class HostLockedError extends Error {
  constructor(host: string, holder: string) {
    super(
      `${host} is locked by another run: ${holder || 'holder unknown'}. Wait for it to finish. ` +
        `If that run is gone and its remote process is stuck, clear it with: provision unlock --inventory <file> --limit ${host}`,
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
  const holder = `${userInfo().username}@${hostname()} pid ${process.pid} since ${new Date().toISOString()}`
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

/**
 * Kill a stuck remote holder of the lock (a run whose connection never closed): every process with the
 * lock file open (found through /proc: fuser is not installed on minimal hosts). The lock is only ever
 * opened by holders and by runs trying it with `flock -n`, which give up at once.
 */
export async function breakLock(conn: Connection): Promise<string> {
  const r = await conn.run(
    sh`holder=$(cat ${LOCK}.holder 2>/dev/null); pids=$(for p in /proc/[0-9]*; do for f in "$p"/fd/*; do
      [ "$(readlink "$f" 2>/dev/null)" = ${LOCK} ] && { echo "\${p#/proc/}"; break; }; done; done 2>/dev/null);
      if [ -n "$pids" ]; then kill $pids; echo "cleared: $holder"; else echo "not held"; fi`,
  )
  return r.stdout.trim()
}
