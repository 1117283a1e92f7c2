/**
 * Going back to the previous venv (after a failed upgrade, or `provision rollback`), as the database
 * allows: decideRollback (schema-compat.ts) over the live database, the update names the older code
 * registers and the state recorded before the upgrade; then a plain switch, a restore of the
 * pre-upgrade dump first, or a refusal, in the upgrade's order.
 */
import type { ApplyContext } from '../../src/resources/resource.js'
import type { Connection } from '../../src/ssh/connection.js'
import { sh } from '../../src/core/shell.js'
import { SYNAPSE_CONFIG_DIR, SYNAPSE_UNIT, VENV_LINK, versionedVenv } from '../../src/synapse/paths.js'
import { executeSteps } from './release/execute.js'
import type { RollbackSpec } from './release/spec.js'
import type { ReleaseStep } from './release/steps.js'
import { decideRollback, type DatabaseSchema, type RollbackDecision } from './schema-compat.js'
import {
  codeSchemaCommand,
  databaseSchemaCommand,
  knownUpdatesCommand,
  parseCodeSchema,
  parseDatabaseSchema,
  parseKnownUpdates,
} from './schema-probe.js'
import type { StepRunner } from './switch.js'

/** The rollback order: the upgrade's, pointing back at the previous venv. */
export function rollbackSteps(
  spec: RollbackSpec,
  from: string,
  to: string,
  backup: string | undefined,
  restore?: Extract<RollbackDecision, { action: 'restore' }>,
): ReleaseStep[] {
  // The checks that judge the inventory's version (the running venv holds its lock) cannot pass on older code.
  const checks = spec.afterChecks.filter((c) => !c.inventoryVersionOnly).map((c) => c.name)
  return [
    ...spec.workerUnits.map((unit): ReleaseStep => ({ kind: 'stop', unit, summary: `stop ${unit}` })),
    { kind: 'stop', unit: SYNAPSE_UNIT, summary: `stop ${SYNAPSE_UNIT} (${from})` },
    ...(restore ? [restoreStep(spec, restore)] : []),
    {
      kind: 'switch',
      venv: versionedVenv(to),
      record: { previous: versionedVenv(from), backup },
      summary: `switch ${VENV_LINK} back -> ${versionedVenv(to)}`,
    },
    { kind: 'start', unit: SYNAPSE_UNIT, summary: `start ${SYNAPSE_UNIT} on ${to}` },
    { kind: 'wait-health', url: spec.healthUrl, summary: `wait until main answers ${spec.healthUrl}` },
    ...spec.workerUnits.map((unit): ReleaseStep => ({ kind: 'start', unit, summary: `start ${unit} on ${to}` })),
    { kind: 'after-checks', checks, summary: `after-checks: ${checks.join('; ')}` },
  ]
}

/** The pre-upgrade dump swapped in for the live database (Synapse stopped). */
export function restoreStep(spec: Pick<RollbackSpec, 'database'>, restore: Extract<RollbackDecision, { action: 'restore' }>): ReleaseStep {
  return {
    kind: 'restore-dump',
    dump: restore.dump,
    summary: `restore ${restore.dump} into a new database and swap it in for ${spec.database} (the newer one is kept renamed); loses ${restore.lost}`,
  }
}

/** How a rollback that is done goes back: after the restore (what it loses), or plainly (why it may). */
export const howBack = (d: Exclude<RollbackDecision, { action: 'refuse' }>) =>
  d.action === 'restore' ? `after restoring ${d.dump} (${d.reason}; lost: ${d.lost})` : `(${d.reason})`

/** A refused rollback, naming the backup when the reason does not. */
export const refusedBack = (to: string, reason: string, backup: string | undefined) =>
  `NOT rolled back to ${to}: ${reason}${backup && !reason.includes(backup) ? `; the backup is ${backup}` : ''} (README, "Upgrading")`

export interface RollbackOptions {
  /** The newer code answered /health since the switch (a restore loses its writes). */
  served: boolean
  /** The operator accepts restoring the pre-upgrade dump (--restore-dump). */
  consent: boolean
  /** The database when the dump was taken, if recorded. */
  before?: DatabaseSchema
  since?: string
  /** Decide and return the steps, do nothing (provision rollback --dry-run). */
  dryRun?: boolean
}

/**
 * What going back to the code of `to` needs, decided from the live database (decideRollback in
 * schema-compat.ts): read with that venv's Python, with the update names that code registers.
 */
export async function rollbackDecision(
  conn: Connection,
  spec: RollbackSpec,
  to: string,
  backup: string | undefined,
  options: RollbackOptions,
): Promise<RollbackDecision> {
  const py = `${versionedVenv(to)}/bin/python`
  const codeOut = await conn.run(sh`[ -x ${py} ] && ${codeSchemaCommand(py)}`, { allowFailure: true })
  if (codeOut.code !== 0) return { action: 'refuse', reason: `${versionedVenv(to)} is not a usable venv (removed, or never installed)` }
  const code = parseCodeSchema(codeOut.stdout)
  const dbOut = await conn.run(
    sh`${databaseSchemaCommand(py, `${SYNAPSE_CONFIG_DIR}/homeserver.yaml`, `${SYNAPSE_CONFIG_DIR}/conf.d`)} 2>&1`,
    { allowFailure: true },
  )
  if (dbOut.code !== 0)
    return { action: 'refuse', reason: `cannot read the database's schema: ${dbOut.stdout.trim().split('\n').slice(-1)[0]}` }
  const now = parseDatabaseSchema(dbOut.stdout)
  if (!now) return { action: 'switch', reason: 'the database has no Synapse schema yet' }
  const knownOut = await conn.run(knownUpdatesCommand(py), { allowFailure: true })
  if (knownOut.code !== 0)
    return {
      action: 'refuse',
      reason: `cannot read the background updates ${to} registers: ${knownOut.stdout.trim().split('\n').slice(-1)[0]}`,
    }
  const known = parseKnownUpdates(knownOut.stdout)
  const decision = decideRollback({
    to: code,
    knownUpdates: known.names,
    now,
    ...(options.before ? { before: options.before } : {}),
    ...(backup ? { dump: backup } : {}),
    served: options.served,
    consent: options.consent,
    ...(options.since ? { since: options.since } : {}),
  })
  // The dump is restored as the postgres superuser on this host (peer authentication).
  if (decision.action === 'restore' && !spec.postgresLocal)
    return {
      action: 'refuse',
      reason: `${decision.reason}, but PostgreSQL runs on another host: restore it there with provision restore, or roll forward`,
    }
  return decision
}

/**
 * Go back to the previous venv, in the upgrade's order, as the database allows (rollbackDecision):
 * switch plainly, restore the pre-upgrade dump first, or refuse. The steps go through the upgrade's
 * executor; `steps` are those planned (none when refused). Throws nothing of its own when it refuses.
 */
export async function rollBackTo(
  ctx: ApplyContext,
  spec: RollbackSpec,
  to: string,
  runner: StepRunner,
  backup: string | undefined,
  options: RollbackOptions,
): Promise<{ ok: boolean; message: string; decision: RollbackDecision; steps: ReleaseStep[] }> {
  const { conn } = ctx
  const decision = await rollbackDecision(conn, spec, to, backup, options)
  if (decision.action === 'refuse')
    return {
      ok: false,
      decision,
      steps: [],
      message: refusedBack(to, decision.reason, backup),
    }
  const from = (await conn.run(sh`readlink ${VENV_LINK}`, { allowFailure: true })).stdout.trim().replace(/^matrix-synapse-/, '')
  const steps = rollbackSteps(spec, from, to, backup, decision.action === 'restore' ? decision : undefined)
  return runRollback(ctx, spec, runner, decision, steps, {
    dryRun: options.dryRun === true,
    would: `would roll back ${from} -> ${to} ${howBack(decision)}`,
    failed: (m) => `rolling back to ${to} failed too: ${m}; the backup is ${backup ?? '(none was taken)'}`,
    done: `rolled back to ${to} ${howBack(decision)}: Synapse ${to} is serving again${backup && decision.action !== 'restore' ? `; the backup taken before the upgrade is ${backup}` : ''}`,
  })
}

/** The decided steps through the one executor (as rollback steps), or (dryRun) only reported; the outcome in the caller's words. */
export async function runRollback(
  ctx: ApplyContext,
  spec: RollbackSpec,
  runner: StepRunner,
  decision: RollbackDecision,
  steps: ReleaseStep[],
  text: { dryRun: boolean; would: string; failed: (message: string) => string; done: string },
): Promise<{ ok: boolean; message: string; decision: RollbackDecision; steps: ReleaseStep[] }> {
  if (text.dryRun) return { ok: true, decision, steps, message: text.would }
  const failure = await executeSteps(steps, { apply: ctx, spec, runner: runner.withRollback() })
  return { ok: !failure, decision, steps, message: failure ? text.failed(failure.message) : text.done }
}
