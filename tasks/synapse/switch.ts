/**
 * What the upgrade (release.ts) and the rollback (rollback.ts) both do to a host: the record of the last
 * switch, the atomic link switch, starting a unit, and the recording of each step's outcome.
 */
import type { AfterCheckContext } from '../../src/engine/task.js'
import type { Change, PerformedStep, Step } from '../../src/resources/resource.js'
import type { Connection } from '../../src/ssh/connection.js'
import { sh, type ShellCommand } from '../../src/core/shell.js'
import { STATE_DIR, VENV_LINK } from '../../src/synapse/paths.js'
import type { DatabaseSchema } from './schema-compat.js'

export const RELEASE_STATE = `${STATE_DIR}/synapse-release.json`

/**
 * What the host records at each switch: the venv to go back to and the backup taken before it. The
 * apt method records versions instead of venvs (`method: 'apt'`: `active` and `previous` are Synapse
 * versions, the package installed and the one it replaced).
 */
export interface ReleaseRecord {
  method?: 'apt'
  active: string
  previous?: string
  backup?: string
  /** The database as it was when the backup was taken (the rollback compares what the newer code changed since). */
  before?: DatabaseSchema
  /** When the link switched to `active`: the start of the writes a restore of `backup` loses. */
  switchedAt?: string
}

/** Everything was just (re)started: each check waits as long as its own default. */
export const AFTER_SWITCH: AfterCheckContext = { waitS: (defaultS) => defaultS }

/** One atomic rename: a new symlink beside, renamed over the old one (never a moment without a link). */
export function linkCommand(venv: string): ShellCommand {
  const tmp = `${VENV_LINK}.mp-new`
  return sh`ln -sfn ${venv.replace(/^.*\//, '')} ${tmp} && mv -Tf ${tmp} ${VENV_LINK}`
}

export async function writeRecord(conn: Connection, record: ReleaseRecord): Promise<void> {
  await conn.writeFile({ path: RELEASE_STATE, content: JSON.stringify(record) + '\n', mode: 0o600 })
}

export async function startUnit(conn: Connection, unit: string): Promise<void> {
  // restart: main still runs the old code until here; a stopped unit simply starts.
  const r = await conn.run(sh`systemctl restart ${unit}`, { timeoutMs: 900_000, allowFailure: true })
  if (r.code !== 0) {
    const log = await conn.run(sh`journalctl -u ${unit} -n 8 --no-pager -o cat`, { allowFailure: true })
    throw new Error(`${unit} did not start: ${log.stdout.trim().split('\n').slice(-4).join(' | ')}`)
  }
}

/** Records each step's outcome into the change (the report shows what was done, in order). */
export class StepRunner {
  constructor(
    private readonly conn: Connection,
    private readonly change: Change,
    private readonly rollback = false,
  ) {
    change.performed ??= []
  }

  async step(step: Step, run: () => Promise<string | { skipped: string } | void>): Promise<void> {
    const t0 = Date.now()
    const rec: PerformedStep = { ...step, status: 'done', durationMs: 0, ...(this.rollback ? { rollback: true } : {}) }
    delete rec.uncertain
    this.change.performed!.push(rec)
    try {
      const out = await run()
      if (typeof out === 'string') rec.detail = out
      else if (out) {
        rec.status = 'skipped'
        rec.detail = out.skipped
      }
    } catch (error) {
      rec.status = 'failed'
      rec.detail = error instanceof Error ? error.message : String(error)
      throw error
    } finally {
      rec.durationMs = Date.now() - t0
    }
  }

  withRollback(): StepRunner {
    return new StepRunner(this.conn, this.change, true)
  }
}

/** The record of the last switch on the host (what `provision rollback` goes back to). */
export async function readRecord(conn: Connection): Promise<ReleaseRecord | undefined> {
  const r = await conn.run(sh`cat ${RELEASE_STATE}`, { allowFailure: true })
  return r.code === 0 ? (JSON.parse(r.stdout) as ReleaseRecord) : undefined
}

export const versionOfVenv = (path: string) => path.replace(/^.*\/matrix-synapse-/, '')
