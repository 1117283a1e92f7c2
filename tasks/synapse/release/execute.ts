/**
 * The one executor of the release steps (steps.ts): an upgrade's apply, a venv rebuild, the automatic
 * rollback after a failed upgrade and `provision rollback` all run their planned steps through it, in
 * order, each recorded as done, skipped or failed (switch.ts StepRunner).
 */
import type { ApplyContext, Resource } from '../../../src/resources/resource.js'
import type { Connection } from '../../../src/ssh/connection.js'
import { sh, type ShellCommand } from '../../../src/core/shell.js'
import { VENV_LINK } from '../../../src/synapse/paths.js'
import { httpOnHost } from '../../common/checks.js'
import { SYNAPSE_PACKAGE, upstreamOf } from '../apt-package.js'
import { dumpToFile } from '../pre-upgrade-dump.js'
import { schemaChange } from '../schema-compat.js'
import { codeSchemaCommand, parseCodeSchema } from '../schema-probe.js'
import { AFTER_SWITCH, linkCommand, startUnit, writeRecord, type StepRunner } from '../switch.js'
import { stopRunning } from '../worker-handover.js'
import { restoreDump } from './restore-dump.js'
import type { ExecSpec } from './spec.js'
import { describe, type ReleaseStep } from './steps.js'

export interface ExecuteContext {
  apply: ApplyContext
  spec: ExecSpec
  /** The installer of a venv: the resource the plan asked (its plan goes with it). */
  installerAt?: (venv: string) => Resource | undefined
  /** Records each step into the change (a rollback's runner marks its steps as rollback). */
  runner: StepRunner
}

export interface StepFailure {
  /** Index of the failed step; the steps before it were done (or skipped). */
  at: number
  step: ReleaseStep
  error: unknown
  message: string
}

/** Another host's connection in this run (a worker host): the engine's ApplyContext.peer. */
export async function peerOf(ctx: ApplyContext, host: string): Promise<Connection> {
  if (!ctx.peer)
    throw new Error(`the workers on ${host} must be stopped before main switches, but this command has no connection to ${host}`)
  return ctx.peer(host)
}

/** Runs the steps in order and stops at the first failure, which it returns (undefined: every step done). */
export async function executeSteps(steps: readonly ReleaseStep[], x: ExecuteContext): Promise<StepFailure | undefined> {
  // A planned dump the backup step skipped (no delta pending) was never written: no record names it.
  const skipped = new Set<string>()
  for (let at = 0; at < steps.length; at++) {
    const step = steps[at]!
    try {
      await x.runner.step(describe(step), () => perform(step, x, skipped))
    } catch (error) {
      return { at, step, error, message: error instanceof Error ? error.message : String(error) }
    }
  }
  return undefined
}

/**
 * After a failure before the switch: the units the done steps stopped start again on the code they
 * ran. Returns each one that did not start (a change to what runs, which the error must say).
 */
export async function startStoppedAgain(done: readonly ReleaseStep[], ctx: ApplyContext): Promise<string[]> {
  const stillStopped: string[] = []
  for (const s of done) {
    if (s.kind !== 'stop') continue
    const c = s.host === undefined ? ctx.conn : await peerOf(ctx, s.host).catch(() => undefined)
    const r = await c?.run(sh`systemctl start ${s.unit}`, { allowFailure: true })
    if (r?.code !== 0) stillStopped.push(`${s.unit}${s.host === undefined ? '' : ` on ${s.host}`}`)
  }
  return stillStopped
}

/** Each step kind, done as the dry run described it. */
async function perform(step: ReleaseStep, x: ExecuteContext, skipped: Set<string>): Promise<string | { skipped: string } | void> {
  const { conn } = x.apply
  const { spec } = x
  const run = async (command: ShellCommand, what: string, timeoutMs = 300_000) =>
    (await conn.run(command, { timeoutMs, what })).stdout.trim()
  switch (step.kind) {
    case 'adopt':
      await run(sh`mv -T ${VENV_LINK} ${step.venv} && ${linkCommand(step.venv)}`, 'moving the plain venv to its versioned name')
      await writeRecord(conn, { active: step.venv })
      return `${VENV_LINK} -> ${step.venv}`
    case 'install': {
      const installer = x.installerAt?.(step.venv)
      if (!installer) throw new Error(`no installer for ${step.venv} in this command`)
      await installer.apply(step.change, x.apply)
      return
    }
    case 'check-config':
      for (const c of spec.configChecks(`${step.venv}/bin/python`))
        await run(c, `Synapse ${spec.version} in ${step.venv} rejects the live configuration (${c.text})`, 180_000)
      return 'the new code accepts the live configuration'
    case 'backup': {
      if (step.unlessNoDelta) {
        const { venv, db } = step.unlessNoDelta
        const next = parseCodeSchema(await run(codeSchemaCommand(`${venv}/bin/python`), 'reading the new code schema version'))
        if (!schemaChange(db, next).changes) {
          skipped.add(step.dump)
          return { skipped: 'no schema delta pending: no dump needed' }
        }
      }
      const size = await run(dumpToFile(spec, step.dump), `dumping the database to ${step.dump}`, 3_600_000)
      const key = step.dump.replace(/\.dump$/, '.signing.key')
      await run(sh`install -m 0600 ${spec.signingKey} ${key}`, 'copying the signing key')
      return `${step.dump} (${size} bytes) and ${key}`
    }
    case 'stop':
      if (step.host !== undefined) {
        await stopRunning(await peerOf(x.apply, step.host), [step.unit], `stopping ${step.unit} on ${step.host}`)
        return
      }
      await run(sh`systemctl stop ${step.unit}`, `stopping ${step.unit}`)
      return
    case 'switch':
      await run(linkCommand(step.venv), `switching ${VENV_LINK}`)
      await writeRecord(conn, { active: step.venv, ...written(step.record, skipped), switchedAt: new Date().toISOString() })
      return `${VENV_LINK} -> ${step.venv}`
    case 'apt-install': {
      if (!spec.apt) throw new Error('an apt-install step needs the apt method')
      await run(spec.apt.install(step.debVersion), `installing ${SYNAPSE_PACKAGE}=${step.debVersion}`, 1_200_000)
      await writeRecord(conn, {
        method: 'apt',
        active: upstreamOf(step.debVersion),
        previous: step.from,
        ...written(step.record, skipped),
        switchedAt: new Date().toISOString(),
      })
      return `${SYNAPSE_PACKAGE} ${step.debVersion} installed and held; main still serves ${step.from} until its restart`
    }
    case 'restore-dump':
      return restoreDump(conn, spec, step.dump)
    case 'start':
      await startUnit(step.host === undefined ? conn : await peerOf(x.apply, step.host), step.unit)
      return
    case 'wait-health': {
      const r = await httpOnHost(conn, step.url, { waitS: 300, expect: /OK/ })
      if (!r.ok) throw new Error(r.detail)
      return
    }
    case 'after-checks': {
      const failed: string[] = []
      const checks = spec.afterChecks.filter((c) => step.checks.includes(c.name))
      for (const c of checks) {
        const r = await c.run(conn, AFTER_SWITCH)
        if (!r.ok && !r.warning) failed.push(`${c.name}: ${r.detail}`)
      }
      if (failed.length) throw new Error(`after-checks failed: ${failed.join('; ')}`)
      return `${checks.length} passed`
    }
    case 'prune':
      await run(sh`rm -rf ${step.venvs}`, 'removing old venvs')
      return
    case 'prune-dumps':
      await run(sh`rm -f ${step.dumps.flatMap((d) => [d, d.replace(/\.dump$/, '.signing.key')])}`, 'removing old pre-upgrade dumps')
      return
  }
}

/** A step's record without a backup that was planned but skipped. */
function written<R extends { backup?: string }>(record: R, skipped: ReadonlySet<string>): R {
  if (!record.backup || !skipped.has(record.backup)) return record
  const { backup: _never, ...rest } = record
  return rest as R
}
