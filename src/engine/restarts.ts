import type { Change, RestartTarget } from '../resources/resource.js'
import { watches } from '../resources/resource.js'
import { ensureSuccess, type Connection } from '../ssh/connection.js'
import { joinShell, sh, type ShellCommand } from '../ssh/shell.js'
import type { RestartRecord } from './report-types.js'
import { PENDING_RESTARTS, STATE_DIR } from './host-state.js'

const BACKUP_DIR = `${STATE_DIR}/backup`

/** Targets whose watched paths or packages a change touches. */
export function targetsTouchedBy(change: Change, targets: RestartTarget[]): RestartTarget[] {
  return targets.filter((t) => change.touches.some((path) => watches(t, path)))
}

/**
 * Restarts due on a host, kept on the host until done: if the run fails between a change and the
 * restart it calls for, the next run finds the unit in the pending file and restarts it (Ansible loses
 * such handlers, #4766).
 */
export class RestartLedger {
  readonly #due = new Map<string, { target: RestartTarget; reasons: string[] }>()
  /** Units started by this run after their last change: a restart would be redundant. */
  readonly #freshlyStarted = new Set<string>()
  /** Files replaced by this run that a validating unit watches: restored if validation fails. */
  readonly #backups = new Map<string, { path: string; existed: boolean }[]>()

  constructor(private readonly conn: Connection, private readonly targets: RestartTarget[], pendingFromEarlierRun: string[]) {
    for (const unit of pendingFromEarlierRun) {
      const target = targets.find((t) => t.unit === unit) ?? { unit, watch: [], reload: false }
      this.#due.set(unit, { target, reasons: ['pending from an earlier run that stopped before restarting it'] })
    }
  }

  /** Before a change is applied: record the restarts it will need, on the host first, and back up what a validator may need to restore. */
  async beforeChange(change: Change): Promise<void> {
    const touched = targetsTouchedBy(change, this.targets)
    if (touched.length === 0) return
    const newUnits = touched.filter((t) => !this.#due.has(t.unit)).map((t) => t.unit)
    const validating = touched.filter((t) => t.validate)
    // Files, edited lines and symlinks (a new *-enabled link must go with its bad file, or Apache's
    // Include finds a dangling link and every later configtest fails).
    const files = /^(file|line|symlink):/.test(change.resource) ? change.touches : []
    const script: ShellCommand[] = []
    if (newUnits.length) script.push(sh`mkdir -p ${STATE_DIR} && printf '%s\\n' ${newUnits} >> ${PENDING_RESTARTS}`)
    // A file changed twice before its validation keeps its first backup: restoring means the state before this run.
    const backedUp = new Map([...this.#backups.values()].flat().map((b) => [b.path, b.existed]))
    const fresh = files.filter((f) => !backedUp.has(f))
    if (validating.length && fresh.length) {
      script.push(sh`mkdir -p ${BACKUP_DIR}`)
      for (const f of fresh) {
        const backup = BACKUP_DIR + '/' + encodeURIComponent(f)
        // rm first: cp onto an old backup that is a symlink would write through it.
        script.push(sh`if [ -e ${f} ] || [ -L ${f} ]; then rm -f ${backup} && cp -a ${f} ${backup}; echo existed; else echo new; fi`)
      }
    }
    if (script.length) {
      const r = ensureSuccess(this.conn.host, await this.conn.run(joinShell(script, ' && ')), 'recording pending restarts')
      const states = r.stdout.split('\n').filter((l) => l === 'existed' || l === 'new')
      fresh.forEach((f, i) => backedUp.set(f, states[i] === 'existed'))
      for (const t of validating) {
        const list = this.#backups.get(t.unit) ?? []
        for (const f of files) if (!list.some((b) => b.path === f)) list.push({ path: f, existed: backedUp.get(f)! })
        this.#backups.set(t.unit, list)
      }
    }
    this.noteChange(change)
  }

  /** Record the restarts a change calls for, in memory only (the dry run's prediction). */
  noteChange(change: Change): void {
    for (const t of targetsTouchedBy(change, this.targets)) {
      const due = this.#due.get(t.unit) ?? { target: t, reasons: [] }
      due.reasons.push(change.summary)
      this.#due.set(t.unit, due)
      this.#freshlyStarted.delete(t.unit)
    }
  }

  /** The service resource started a unit that was stopped: it runs the new configuration already. */
  started(unit: string): void {
    this.#freshlyStarted.add(unit)
  }

  /** The dry run's counterpart of perform: the restarts due for these units, in order, then settled. */
  takePlanned(units: string[]): RestartRecord[] {
    const out = units
      .filter((u) => this.#due.has(u) && !this.#freshlyStarted.has(u))
      .map((u): RestartRecord => ({ unit: u, action: this.#due.get(u)!.target.reload ? 'reload' : 'restart', reason: this.#due.get(u)!.reasons.join('; '), done: false }))
    for (const u of units) this.#due.delete(u)
    return out
  }

  /**
   * Validate, then restart (or reload) each due unit once, in order; clear it from the host's pending
   * file. Units of the finishing task are always settled; another task's unit only when it is running
   * (a later task that installs or starts it settles it then).
   */
  async perform(units: string[], ownUnits: string[] = units): Promise<RestartRecord[]> {
    const done: RestartRecord[] = []
    for (const unit of units) {
      const due = this.#due.get(unit)
      if (!due) continue
      const { target } = due
      const active = await this.conn.run(sh`systemctl is-active ${unit}`)
      const running = active.stdout.trim() === 'active' || active.stdout.trim() === 'reloading'
      if (!running && !ownUnits.includes(unit)) continue
      if (target.validate) {
        const v = await this.conn.run(target.validate, { timeoutMs: 180_000 })
        if (v.code !== 0) {
          const restored = await this.#restore(unit)
          this.#due.delete(unit)
          await this.#clearPending(unit)
          const output = (v.stderr + v.stdout).trim().split('\n').slice(-6).join('\n')
          throw new Error(`${unit}: the new configuration failed validation (${target.validate.text}); restored the previous files (${restored.join(', ') || 'none'}) and left ${unit} running as it was:\n${output}`)
        }
      }
      if (!this.#freshlyStarted.has(unit) && running) {
        const verb = target.reload ? 'reload' : 'restart'
        const r = await this.conn.run(sh`systemctl ${verb} ${unit}`, { timeoutMs: 300_000 })
        if (r.code !== 0) {
          const status = await this.conn.run(sh`systemctl status --no-pager -n 20 ${unit}`)
          r.stderr += `\n${status.stdout}`
          ensureSuccess(this.conn.host, r, `${verb} ${unit}`)
        }
        done.push({ unit, action: verb, reason: due.reasons.join('; '), done: true })
      }
      this.#due.delete(unit)
      this.#backups.delete(unit)
      await this.#clearPending(unit)
    }
    return done
  }

  async #clearPending(unit: string): Promise<void> {
    await this.conn.run(sh`[ -f ${PENDING_RESTARTS} ] && sed -i ${`/^${unit.replace(/[.@]/g, '\\$&')}$/d`} ${PENDING_RESTARTS}; true`)
  }

  async #restore(unit: string): Promise<string[]> {
    const list = this.#backups.get(unit) ?? []
    const script = list.map((b) =>
      // Copied beside, then renamed over: atomic, and works when the path is a symlink.
      b.existed
        ? sh`cp -a ${BACKUP_DIR + '/' + encodeURIComponent(b.path)} ${b.path + '.mp-restore'} && mv -Tf ${b.path + '.mp-restore'} ${b.path}`
        : sh`rm -f ${b.path}`,
    )
    if (script.length) ensureSuccess(this.conn.host, await this.conn.run(joinShell(script, ' && ')), `restoring the previous configuration of ${unit}`)
    return list.map((b) => b.path)
  }
}
