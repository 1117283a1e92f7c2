/**
 * Going back to the previous venv (after a failed upgrade, or `provision rollback`), as the database
 * allows: decideRollback (schema-compat.ts) over the live database, the update names the older code
 * registers and the state recorded before the upgrade; then a plain switch, a restore of the
 * pre-upgrade dump first, or a refusal, in the upgrade's order.
 */
import type { AfterCheck } from '../../src/engine/task.js'
import type { Step } from '../../src/resources/resource.js'
import { sqlIdent, sqlLiteral } from '../../src/resources/postgres.js'
import type { Connection } from '../../src/ssh/connection.js'
import { sh } from '../../src/core/shell.js'
import { AFTER_RESTORE_SQL, databaseRestoreCommand } from '../../src/synapse/backup/database-dump.js'
import { SYNAPSE_CONFIG_DIR, SYNAPSE_UNIT as MAIN_UNIT, VENV_LINK, versionedVenv } from '../../src/synapse/paths.js'
import { httpOnHost } from '../common/checks.js'
import { decideRollback, type DatabaseSchema, type RollbackDecision } from './schema-compat.js'
import {
  codeSchemaCommand,
  databaseSchemaCommand,
  knownUpdatesCommand,
  parseCodeSchema,
  parseDatabaseSchema,
  parseKnownUpdates,
} from './schema-probe.js'
import { AFTER_SWITCH, linkCommand, startUnit, writeRecord, type StepRunner } from './switch.js'

/** What the rollback needs of the release's settings (ReleaseSpec has them). */
export interface RollbackSpec {
  workerUnits: string[]
  healthUrl: string
  afterChecks: AfterCheck[]
  database: string
  /** The role owning Synapse's database (a restored dump's objects are owned by it). */
  databaseOwner: string
  /** Postgres runs on this host: the dump is restored as its superuser. */
  postgresLocal: boolean
}

/** The rollback order: the upgrade's, pointing back at the previous venv. */
export function rollbackSteps(
  spec: RollbackSpec,
  from: string,
  to: string,
  restore?: Extract<RollbackDecision, { action: 'restore' }>,
): Step[] {
  return [
    ...spec.workerUnits.map((u): Step => ({ kind: 'stop', target: u, summary: `stop ${u}` })),
    { kind: 'stop', target: MAIN_UNIT, summary: `stop ${MAIN_UNIT} (${from})` },
    ...(restore
      ? [
          {
            kind: 'restore-dump',
            target: restore.dump,
            summary: `restore ${restore.dump} into a new database and swap it in for ${spec.database} (the newer one is kept renamed); loses ${restore.lost}`,
          } satisfies Step,
        ]
      : []),
    { kind: 'switch', target: versionedVenv(to), summary: `switch ${VENV_LINK} back -> ${versionedVenv(to)}` },
    { kind: 'start', target: MAIN_UNIT, summary: `start ${MAIN_UNIT} on ${to}` },
    { kind: 'wait-health', target: spec.healthUrl, summary: `wait until main answers ${spec.healthUrl}` },
    ...spec.workerUnits.map((u): Step => ({ kind: 'start', target: u, summary: `start ${u} on ${to}` })),
    {
      kind: 'after-checks',
      target: 'homeserver',
      summary: `after-checks: ${spec.afterChecks
        .filter((c) => !c.inventoryVersionOnly)
        .map((c) => c.name)
        .join('; ')}`,
    },
  ]
}

export interface RollbackOptions {
  /** The newer code answered /health since the switch (a restore loses its writes). */
  served: boolean
  /** The operator accepts restoring the pre-upgrade dump (--restore-dump). */
  consent: boolean
  /** The database when the dump was taken, if recorded. */
  before?: DatabaseSchema
  since?: string
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
 * switch plainly, restore the pre-upgrade dump first, or refuse. Returns what the report says; throws
 * nothing of its own when it refuses.
 */
export async function rollBack(
  conn: Connection,
  spec: RollbackSpec,
  to: string,
  runner: StepRunner,
  backup: string | undefined,
  options: RollbackOptions,
): Promise<string> {
  return (await rollBackTo(conn, spec, to, runner, backup, options)).message
}

export async function rollBackTo(
  conn: Connection,
  spec: RollbackSpec,
  to: string,
  runner: StepRunner,
  backup: string | undefined,
  options: RollbackOptions,
): Promise<{ ok: boolean; message: string; decision: RollbackDecision }> {
  const decision = await rollbackDecision(conn, spec, to, backup, options)
  if (decision.action === 'refuse')
    return {
      ok: false,
      decision,
      message: `NOT rolled back to ${to}: ${decision.reason}${backup && !decision.reason.includes(backup) ? `; the backup is ${backup}` : ''} (README, "Upgrading")`,
    }
  const from = (await conn.run(sh`readlink ${VENV_LINK}`, { allowFailure: true })).stdout.trim().replace(/^matrix-synapse-/, '')
  const rb = runner.withRollback()
  try {
    for (const step of rollbackSteps(spec, from, to, decision.action === 'restore' ? decision : undefined)) {
      await rb.step(step, async () => {
        if (step.kind === 'stop') await conn.run(sh`systemctl stop ${step.target}`, { timeoutMs: 300_000 })
        else if (step.kind === 'restore-dump') return restoreDump(conn, spec, step.target)
        else if (step.kind === 'switch') {
          await conn.run(linkCommand(step.target))
          await writeRecord(conn, { active: step.target, previous: versionedVenv(from), backup, switchedAt: new Date().toISOString() })
        } else if (step.kind === 'start') await startUnit(conn, step.target)
        else if (step.kind === 'wait-health') {
          const r = await httpOnHost(conn, step.target, { waitS: 300, expect: /OK/ })
          if (!r.ok) throw new Error(r.detail)
        } else {
          const failed: string[] = []
          for (const c of spec.afterChecks.filter((x) => !x.inventoryVersionOnly)) {
            const r = await c.run(conn, AFTER_SWITCH)
            if (!r.ok && !r.warning) failed.push(`${c.name}: ${r.detail}`)
          }
          if (failed.length) throw new Error(`after-checks failed: ${failed.join('; ')}`)
        }
        return undefined
      })
    }
  } catch (error) {
    return {
      ok: false,
      decision,
      message: `rolling back to ${to} failed too: ${error instanceof Error ? error.message : String(error)}; the backup is ${backup ?? '(none was taken)'}`,
    }
  }
  const how =
    decision.action === 'restore' ? `after restoring ${decision.dump} (${decision.reason}; lost: ${decision.lost})` : `(${decision.reason})`
  return {
    ok: true,
    decision,
    message: `rolled back to ${to} ${how}: Synapse ${to} is serving again${backup && decision.action !== 'restore' ? `; the backup taken before the upgrade is ${backup}` : ''}`,
  }
}

/**
 * The pre-upgrade dump into a new database, swapped in by renames while Synapse is stopped (as
 * provision restore does it); the database the newer code wrote is kept under another name.
 */
async function restoreDump(conn: Connection, spec: RollbackSpec, dump: string): Promise<string> {
  const restoring = `${spec.database}_restoring`
  const kept = `${spec.database}_rolled_back_${new Date().toISOString().replace(/\D/g, '').slice(0, 14)}`
  const psql = async (db: string, sql: string) =>
    await conn.run(sh`cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d ${db} -f -`, { stdin: sql, what: `psql on ${db}` })
  await psql(
    'postgres',
    `DROP DATABASE IF EXISTS ${sqlIdent(restoring)};\nCREATE DATABASE ${sqlIdent(restoring)} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0 OWNER ${sqlIdent(spec.databaseOwner)};`,
  )
  await conn.run(sh`${databaseRestoreCommand(restoring, spec.databaseOwner)} < ${dump}`, { timeoutMs: 3_600_000 })
  await psql(restoring, AFTER_RESTORE_SQL)
  await psql(
    'postgres',
    [
      `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ${sqlLiteral(spec.database)} AND pid <> pg_backend_pid();`,
      `DO $$ BEGIN FOR i IN 1..50 LOOP EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = ${sqlLiteral(spec.database)}); PERFORM pg_sleep(0.1); END LOOP; END $$;`,
      `ALTER DATABASE ${sqlIdent(spec.database)} RENAME TO ${sqlIdent(kept)};`,
      `ALTER DATABASE ${sqlIdent(restoring)} RENAME TO ${sqlIdent(spec.database)};`,
    ].join('\n'),
  )
  return `${spec.database} restored from ${dump}; the database the newer code wrote is kept as ${kept}`
}
