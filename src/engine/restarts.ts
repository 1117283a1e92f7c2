import type { Change, RestartTarget } from '../resources/resource.js'
import { watches } from '../resources/resource.js'
import { inWaves } from '../resources/systemd-service.js'
import { RemoteCommandError, type Connection } from '../ssh/connection.js'
import { joinShell, sh, type ShellCommand } from '../core/shell.js'
import type { RestartRecord } from './report-types.js'
import { awaitNewGeneration, readGeneration } from './reload-wait.js'
import { PENDING_RESTARTS, STATE_DIR } from '../synapse/paths.js'

/** Copies of files a validating unit watches, taken before this run (or a run that died) changed them. */
export const BACKUP_DIR = `${STATE_DIR}/backup`

const backupOf = (path: string) => `${BACKUP_DIR}/${encodeURIComponent(path)}`
/** Which backups belong to a unit, kept on the host beside them: a later run restores from it if this one dies. */
export const backupManifestOf = (unit: string) => `${BACKUP_DIR}/${encodeURIComponent(unit)}.manifest.json`

interface Backup {
  path: string
  /** false: the file did not exist before; restoring removes it. */
  existed: boolean
}

/** Targets whose watched paths or packages a change touches. */
export function targetsTouchedBy(change: Change, targets: RestartTarget[]): RestartTarget[] {
  return targets.filter((t) => change.touches.some((path) => watches(t, path)))
}

/**
 * Restarts due on a host, kept on the host until done: if the run fails between a change and the
 * restart it calls for, the next run finds the unit in the pending file and restarts it (Ansible loses
 * such handlers, #4766).
 *
 * One mechanism for the dry run and apply: changes make units due (`noteChange`/`beforeChange`), and at
 * the end of task i the units settled are those due whose owning task is i or earlier
 * (`unitsSettledAfter`), in the order the tasks declare them. A unit whose task has not run yet waits
 * for it (its files may still change), so it restarts once, under its own task. Units no task of this
 * run owns (pending from an earlier run with other --tasks) settle after the last task.
 */
export class RestartLedger {
  readonly #due = new Map<string, { target: RestartTarget; reasons: string[] }>()
  /** Units started by this run after their last change: a restart would be redundant. */
  readonly #freshlyStarted = new Set<string>()
  /** Per validating unit: the files restored if its validation fails. */
  readonly #backups = new Map<string, Backup[]>()
  readonly #targets: RestartTarget[]
  /** Unit -> index of the task that declares its service (the first one, in task order). */
  readonly #owner = new Map<string, number>()
  readonly #inherited: string[]

  /** `targetsByTask[i]`: the services task i declares. */
  constructor(
    private readonly conn: Connection,
    targetsByTask: RestartTarget[][],
    pendingFromEarlierRun: string[],
  ) {
    this.#targets = targetsByTask.flat()
    targetsByTask.forEach((targets, i) => targets.forEach((t) => this.#owner.has(t.unit) || this.#owner.set(t.unit, i)))
    this.#inherited = pendingFromEarlierRun
    for (const unit of pendingFromEarlierRun) {
      const target = this.#targets.find((t) => t.unit === unit) ?? { unit, watch: [], reload: false }
      this.#due.set(unit, { target, reasons: ['pending from an earlier run that stopped before restarting it'] })
    }
  }

  /** Units settled at the end of task i: due, owned by task i or an earlier one, in declaration order. */
  unitsSettledAfter(taskIndex: number): string[] {
    return [...new Set(this.#targets.map((t) => t.unit))].filter((u) => this.#due.has(u) && this.#owner.get(u)! <= taskIndex)
  }

  /** Units still due after the last task: every one left, owned or not. */
  unitsLeft(): string[] {
    const owned = [...new Set(this.#targets.map((t) => t.unit))].filter((u) => this.#due.has(u))
    return [...owned, ...[...this.#due.keys()].filter((u) => !owned.includes(u))]
  }

  /**
   * Apply, once before the first change: read the backup manifests an earlier run left for the units
   * it left pending, so a validation failure restores what that run replaced.
   */
  async loadInherited(): Promise<void> {
    for (const unit of this.#inherited) {
      if (!this.#due.get(unit)?.target.validate) continue
      const r = await this.conn.run(sh`cat ${backupManifestOf(unit)}`, { allowFailure: true })
      if (r.code !== 0) continue
      try {
        const files = (JSON.parse(r.stdout) as { files: Backup[] }).files
        if (Array.isArray(files))
          this.#backups.set(
            unit,
            files.filter((b) => typeof b.path === 'string' && typeof b.existed === 'boolean'),
          )
      } catch {
        // A manifest cut short by a dying run: nothing trustworthy to restore from.
      }
    }
  }

  /** Before a change is applied: record the restarts it will need, on the host first, and back up what a validator may need to restore. */
  async beforeChange(change: Change): Promise<void> {
    const touched = targetsTouchedBy(change, this.#targets)
    if (touched.length === 0) return this.noteChange(change)
    const newUnits = touched.filter((t) => !this.#due.has(t.unit)).map((t) => t.unit)
    const validating = touched.filter((t) => t.validate)
    const script: ShellCommand[] = []
    if (newUnits.length) script.push(sh`mkdir -p ${STATE_DIR} && printf '%s\\n' ${newUnits} >> ${PENDING_RESTARTS}`)
    // A file changed twice before its validation keeps its first backup: restoring means the state before
    // the run that first changed it (also an earlier run that died, through its manifest).
    const backedUp = new Map([...this.#backups.values()].flat().map((b) => [b.path, b.existed]))
    const fresh = validating.length ? change.backupPaths.filter((f) => !backedUp.has(f)) : []
    if (fresh.length) {
      script.push(sh`mkdir -p ${BACKUP_DIR}`)
      for (const f of fresh) {
        const backup = backupOf(f)
        // rm first: cp onto an old backup that is a symlink would write through it.
        script.push(sh`if [ -e ${f} ] || [ -L ${f} ]; then rm -f ${backup} && cp -a ${f} ${backup}; echo existed; else echo new; fi`)
      }
    }
    if (script.length) {
      const r = await this.conn.run(joinShell(script, ' && '), { what: 'recording pending restarts' })
      const states = r.stdout.split('\n').filter((l) => l === 'existed' || l === 'new')
      fresh.forEach((f, i) => backedUp.set(f, states[i] === 'existed'))
    }
    for (const t of validating) {
      const list = this.#backups.get(t.unit) ?? []
      const added = change.backupPaths.filter((f) => !list.some((b) => b.path === f))
      if (added.length === 0) continue
      list.push(...added.map((f) => ({ path: f, existed: backedUp.get(f)! })))
      this.#backups.set(t.unit, list)
      // Written before the change itself reaches the host (writes go out in order).
      await this.conn.writeFile({
        path: backupManifestOf(t.unit),
        content: JSON.stringify({ unit: t.unit, files: list }) + '\n',
        mode: 0o600,
      })
    }
    this.noteChange(change)
  }

  /** Record the restarts a change calls for, in memory only (the dry run's prediction). */
  noteChange(change: Change): void {
    for (const t of targetsTouchedBy(change, this.#targets)) {
      const due = this.#due.get(t.unit) ?? { target: t, reasons: [] }
      due.reasons.push(change.summary)
      this.#due.set(t.unit, due)
      this.#freshlyStarted.delete(t.unit)
    }
  }

  /** After a change is applied (or planned): a unit it started runs the new configuration already. */
  applied(change: Change): void {
    if (change.starts) this.#freshlyStarted.add(change.starts)
  }

  /** The dry run's counterpart of perform: the restarts due for these units, in order, then settled. */
  takePlanned(units: string[]): RestartRecord[] {
    const out = units
      .filter((u) => this.#due.has(u) && !this.#freshlyStarted.has(u))
      .map((u): RestartRecord => ({
        unit: u,
        action: this.#due.get(u)!.target.reload ? 'reload' : 'restart',
        reason: this.#due.get(u)!.reasons.join('; '),
        done: false,
      }))
    for (const u of units) this.#due.delete(u)
    return out
  }

  /**
   * Validate, then restart (or reload) each due unit once; clear it from the host's pending file and
   * drop its backups. A unit that is not running is not restarted: it starts on the new files.
   *
   * The units of one settling go together: their validations run side by side (Synapse's parser
   * takes seconds of CPU per process, and sixteen processes one after another took minutes), then
   * `systemctl restart` (and `reload`) takes them a few per call (UNITS_AT_ONCE), and systemd runs
   * the jobs of a call side by side in the order of the units' After=. A reloaded unit with a
   * generation probe is done once its new configuration serves (awaitNewGeneration). If any unit rejects its configuration, that unit's files are
   * restored as before and none of the set is restarted: the others stay due, on the host too, and
   * the next run restarts them on what is then on disk.
   */
  async perform(units: string[]): Promise<RestartRecord[]> {
    const due = units.flatMap((unit) => {
      const d = this.#due.get(unit)
      return d ? [{ unit, ...d }] : []
    })
    if (due.length === 0) return []
    const states = (await this.conn.run(sh`systemctl is-active ${due.map((d) => d.unit)}`, { allowFailure: true })).stdout
      .trim()
      .split('\n')
    const running = new Set(due.filter((_, i) => states[i] === 'active' || states[i] === 'reloading').map((d) => d.unit))
    // A unit this run started after its last change runs the new files already (a bad one would have
    // failed its start): nothing to check before a restart that is not due.
    const validating = due.filter((d) => d.target.validate && !this.#freshlyStarted.has(d.unit))
    const verdicts = await Promise.all(validating.map((d) => this.conn.run(d.target.validate!, { timeoutMs: 180_000, allowFailure: true })))
    const errors: string[] = []
    for (const [i, d] of validating.entries()) {
      if (verdicts[i]!.code === 0) continue
      try {
        await this.#rejected(d.unit, d.target.validate!, d.target.reload ? 'reload' : 'restart', verdicts[i]!)
      } catch (error) {
        errors.push(error instanceof Error ? error.message : String(error))
      }
    }
    if (errors.length) throw new Error(errors.join('\n'))
    const act = due.filter((d) => !this.#freshlyStarted.has(d.unit) && running.has(d.unit))
    const done: RestartRecord[] = []
    for (const verb of ['restart', 'reload'] as const) {
      for (const these of inWaves(act.filter((d) => (d.target.reload ? 'reload' : 'restart') === verb).map((d) => d.unit))) {
        // A restart's new process serves only the new files; a reload may return before they serve.
        const probed = verb === 'reload' ? act.filter((d) => these.includes(d.unit) && d.target.generation) : []
        const before = await Promise.all(probed.map((d) => readGeneration(this.conn, d.target.generation!)))
        const r = await this.conn.run(sh`systemctl ${verb} ${these}`, { timeoutMs: 300_000, allowFailure: true })
        if (r.code !== 0) {
          const status = await this.conn.run(sh`systemctl status --no-pager -n 20 ${these}`, { allowFailure: true })
          r.stderr += `\n${status.stdout}`
          throw new RemoteCommandError(this.conn.host, r, `${verb} ${these.join(' ')}`)
        }
        await Promise.all(probed.map((d, i) => awaitNewGeneration(this.conn, d.unit, d.target.generation!, before[i]!)))
      }
    }
    for (const d of due) {
      if (act.includes(d))
        done.push({ unit: d.unit, action: d.target.reload ? 'reload' : 'restart', reason: d.reasons.join('; '), done: true })
      await this.#settled(d.unit)
    }
    return done
  }

  /**
   * A rejected configuration is never left on disk unnoticed: the files this run (or the earlier run
   * that left the restart pending) replaced are put back and validated again. Only when the host's
   * configuration validates again is the restart forgotten; otherwise it stays pending, and every run
   * fails here until the configuration is fixed.
   */
  async #rejected(unit: string, validate: ShellCommand, verb: string, v: { stdout: string; stderr: string }): Promise<void> {
    const output = (v.stderr + v.stdout).trim().split('\n').slice(-6).join('\n')
    const restored = await this.#restore(unit)
    const again = restored.length ? await this.conn.run(validate, { timeoutMs: 180_000, allowFailure: true }) : undefined
    if (again?.code === 0) {
      await this.#settled(unit)
      throw new Error(
        `${unit}: the new configuration failed validation (${validate.text}); restored the previous files (${restored.join(', ')}) and left ${unit} running as it was:\n${output}`,
      )
    }
    // Still due, still in the host's pending file: the next run validates again instead of saying "no changes".
    throw new Error(
      `${unit}: the configuration on the host fails validation (${validate.text}) and ${restored.length ? `restoring ${restored.join(', ')} did not fix it` : 'no earlier version of its files is kept to restore'}; ` +
        `left ${unit} running as it was, with its ${verb} pending: fix the inventory (or the files) and run again:\n${output}`,
    )
  }

  /** The unit is done with: out of the pending file, and its backups (old, secret-bearing files) removed. */
  async #settled(unit: string): Promise<void> {
    this.#due.delete(unit)
    const mine = this.#backups.get(unit)
    this.#backups.delete(unit)
    // These throw when they fail (run's contract): a unit left pending, or an old secret-bearing copy left behind, is not settled.
    await this.conn.run(sh`if [ -f ${PENDING_RESTARTS} ]; then sed -i ${`/^${unit.replace(/[.@]/g, '\\$&')}$/d`} ${PENDING_RESTARTS}; fi`)
    if (this.#due.size === 0) {
      // Nothing due any more on this host: no backup can be needed (this also clears ones older versions left).
      await this.conn.run(sh`rm -rf ${BACKUP_DIR}`)
      return
    }
    if (!mine) return
    const stillNeeded = new Set([...this.#backups.values()].flat().map((b) => b.path))
    const remove = [backupManifestOf(unit), ...mine.filter((b) => b.existed && !stillNeeded.has(b.path)).map((b) => backupOf(b.path))]
    await this.conn.run(sh`rm -f ${remove}`)
  }

  async #restore(unit: string): Promise<string[]> {
    const list = this.#backups.get(unit) ?? []
    const script = list.map((b) =>
      // Copied beside, then renamed over: atomic, and works when the path is a symlink.
      b.existed
        ? sh`cp -a ${backupOf(b.path)} ${b.path + '.mp-restore'} && mv -Tf ${b.path + '.mp-restore'} ${b.path}`
        : sh`rm -f ${b.path}`,
    )
    if (script.length) await this.conn.run(joinShell(script, ' && '), { what: `restoring the previous configuration of ${unit}` })
    return list.map((b) => b.path)
  }
}
