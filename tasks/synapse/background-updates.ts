/**
 * The health of main's background updater (synapse/storage/background_updates.py): it runs the rows of
 * `background_updates` one by one; a name the running code does not register fails with KeyError, and
 * after 5 back-to-back failures run_background_updates logs "5 back-to-back background update
 * failures; aborting." and runs nothing more until main restarts (then aborts again). Judged from the
 * database (pending rows, against the update names the running code registers) and from main's
 * journal since its current start.
 */
import type { AfterCheck, CheckOutcome } from '../../src/engine/task.js'
import type { Connection } from '../../src/ssh/connection.js'
import { sh } from '../../src/core/shell.js'
import { parseDatabaseSchema, databaseSchemaCommand, knownUpdatesCommand, parseKnownUpdates } from './schema-probe.js'

export const ABORTED_LINE = 'background update failures; aborting'

export interface UpdaterState {
  /** Rows of background_updates, in the order the updater takes them. */
  pending: string[]
  /** Pending names the running code does not register (it will abort on them). */
  unknown: string[]
  /** Main's journal since its start says the updater aborted. */
  aborted: boolean
  /** The last "Error doing update" line of that journal. */
  lastError?: string
}

export function judgeUpdater(s: UpdaterState, version: string): CheckOutcome {
  const fix = 'roll forward to a Synapse that registers them, or remove the rows the running code cannot run (README, "Upgrading")'
  if (s.aborted)
    return {
      ok: false,
      detail: `the background updater ABORTED since main started (${ABORTED_LINE})${s.lastError ? `; last error: ${s.lastError}` : ''}; pending: ${s.pending.join(', ') || 'none'}; no background update runs until this is fixed: ${fix}`,
    }
  if (s.unknown.length)
    return {
      ok: false,
      detail: `pending background updates Synapse ${version} does not register: ${s.unknown.join(', ')}; its updater fails on them and aborts: ${fix}`,
    }
  if (s.pending.length)
    return {
      ok: true,
      detail: `${s.pending.length} pending, running: ${s.pending.slice(0, 8).join(', ')}${s.pending.length > 8 ? ', …' : ''}`,
    }
  return { ok: true, detail: 'none pending' }
}

/** Reads the updater's state on the host with the running venv and the live configuration. */
export async function readUpdaterState(
  conn: Connection,
  venv: string,
  etc: string,
  unit: string,
): Promise<UpdaterState | { error: string }> {
  const py = `${venv}/bin/python`
  const [db, journal] = await Promise.all([
    conn.run(sh`${databaseSchemaCommand(py, `${etc}/homeserver.yaml`, `${etc}/conf.d`)} 2>&1`, { allowFailure: true }),
    // Only the current start counts: an abort before a restart that fixed it is history.
    conn.run(
      sh`id=$(systemctl show -p InvocationID --value ${unit}) && [ -n "$id" ] && journalctl _SYSTEMD_INVOCATION_ID="$id" -o cat --no-pager | grep -E ${`${ABORTED_LINE}|Error doing update`} | tail -n 5 || true`,
    ),
  ])
  if (db.code !== 0) return { error: `cannot read background_updates: ${db.stdout.trim().split('\n').slice(-1)[0]}` }
  const pending = parseDatabaseSchema(db.stdout)?.backgroundUpdates ?? []
  let unknown: string[] = []
  if (pending.length) {
    const k = await conn.run(knownUpdatesCommand(py), { allowFailure: true })
    if (k.code !== 0)
      return { error: `cannot read the background updates the running code registers: ${k.stdout.trim().split('\n').slice(-1)[0]}` }
    const known = new Set(parseKnownUpdates(k.stdout).names)
    unknown = pending.filter((u) => !known.has(u))
  }
  const lines = journal.stdout.split('\n').filter(Boolean)
  const lastError = lines.filter((l) => l.includes('Error doing update')).at(-1)
  return { pending, unknown, aborted: lines.some((l) => l.includes(ABORTED_LINE)), ...(lastError ? { lastError: lastError.trim() } : {}) }
}

export function backgroundUpdaterCheck(venv: string, etc: string, unit: string): AfterCheck {
  return {
    name: 'background updates healthy',
    async run(conn) {
      const version =
        (await conn.run(sh`readlink ${venv}`, { allowFailure: true })).stdout.trim().replace(/^.*matrix-synapse-/, '') || 'running'
      const s = await readUpdaterState(conn, venv, etc, unit)
      return 'error' in s ? { ok: false, detail: s.error } : judgeUpdater(s, version)
    },
  }
}
