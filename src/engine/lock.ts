import { randomBytes } from 'node:crypto'
import { hostname, userInfo } from 'node:os'
import type { Fact, FactValues } from '../facts/fact.js'
import { prepareProbe, type Probe } from '../facts/probe.js'
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
  /**
   * Gather facts on the lock's own channel, as gatherFacts does on a command of its own: no new session on the
   * host (its login shell and sshd's session process), no channel to open. Probes on it run one at a time.
   */
  gather(facts: readonly Fact<unknown>[], into: FactValues): Promise<FactValues>
}

/** Printed after each probe run inside the lock: its number (1, 2, ...) and exit code. */
const probed = (n: number) => new RegExp(`@@MP-PROBED ${n} (\\d+)\\n`)

/** A probe as the lock's loop reads it from its stdin: the script's length in bytes on a line, then the script. */
const message = (probe: Probe) => `${Buffer.byteLength(probe.script)}\n${probe.script}`

/**
 * A per-host lock held by a remote `flock` whose stdin is our SSH channel: when this process dies or the
 * connection drops, the remote side sees EOF and the kernel releases the lock, so a killed run cannot
 * leave a stale lock behind. The holder (user, controller, pid, time) is recorded for the next runner.
 *
 * While held, the lock's shell runs the fact probes sent on its stdin (`head -c` reads exactly a script's bytes;
 * EOF ends the loop and releases the lock). `then`: a probe sent with the lock itself, in the same round trip (a
 * run's base facts: read under the lock, without a second exchange).
 */
export async function acquireLock(conn: Connection, options: { then?: Probe } = {}): Promise<HostLock> {
  const first = options.then
  // The id is what `provision unlock --holder` must repeat: it kills only the holder the user saw.
  const holder = `${randomBytes(6).toString('hex')} ${userInfo().username}@${hostname()} pid ${process.pid} since ${new Date().toISOString()}`
  // chmod alone when the directory exists (a converged host): one process fewer than mkdir and chmod.
  const script = sh`{ chmod 0700 ${STATE_DIR} 2>/dev/null || { mkdir -p ${STATE_DIR} && chmod 0700 ${STATE_DIR}; }; } && exec 9>>${LOCK} &&
    if flock -n 9; then printf '%s (remote pid %s)\n' ${holder} "$$" > ${LOCK}.holder; echo MP-LOCKED;
      mp_n=0; while read -r mp_len; do mp_n=$((mp_n + 1)); mp_script=$(head -c "$mp_len") && sh -c "$mp_script" </dev/null 9>&-; echo "@@MP-PROBED $mp_n $?"; done;
    else printf 'MP-BUSY %s\n' "$(cat ${LOCK}.holder 2>/dev/null)"; fi`
  const proc: RemoteProcess = conn.spawn(script, first ? { stdin: message(first) } : {})
  const line = await proc.waitForOutput(/MP-(LOCKED|BUSY)[^\n]*\n/, 30_000)
  if (line.includes('MP-BUSY')) {
    await proc.exited
    throw new HostLockedError(conn.host, line.replace(/.*MP-BUSY ?/, '').trim())
  }
  let sent = 0
  let queue: Promise<unknown> = Promise.resolve()
  const release = async () => {
    proc.end()
    await proc.exited
  }
  /** The output of the probe sent as number n (sent in order): what it printed after the one before. */
  const answer = async (probe: Probe, n: number): Promise<FactValues> => {
    let out: string
    try {
      out = await proc.waitForOutput(probed(n), 600_000)
    } catch (error) {
      await release().catch(() => undefined)
      // Only the first line: the rest quotes the output, which may hold the host's secrets (so no `cause` either).
      // eslint-disable-next-line preserve-caught-error -- the caught error quotes the probe's output
      throw new Error(`${conn.host}: the fact probe inside the lock did not finish: ${(error as Error).message.split('\n')[0]}`)
    }
    const after = n === 1 ? /MP-LOCKED\n/.exec(out) : probed(n - 1).exec(out)
    const done = probed(n).exec(out)!
    const code = Number(done[1])
    if (code !== 0) {
      await release().catch(() => undefined)
      throw new Error(`${conn.host}: the fact probe inside the lock failed (exit code ${code})`)
    }
    return probe.read(out.slice(after!.index + after![0].length, done.index))
  }
  const lock: HostLock = {
    release,
    gather(facts, into) {
      const probe = prepareProbe(facts, into)
      if (!probe) return Promise.resolve(into)
      const run = queue.then(() => {
        const n = ++sent
        proc.write(message(probe))
        return answer(probe, n)
      })
      queue = run.catch(() => undefined)
      return run
    },
  }
  if (first) lock.facts = await answer(first, ++sent)
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
