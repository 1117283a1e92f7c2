/**
 * `provision rollback` on an apt host: back to the package version the last change replaced (the
 * switch record the apt-install step writes), within the same rule as the pip method's rollback
 * (schema-compat.ts decideRollback): the previous version must still be in the repository, and the
 * database must accept its code (its schema rules and background update names read from its .deb
 * before anything stops); else the pre-upgrade dump is restored first with --restore-dump, or refused.
 * The steps go through the release's one executor, in the upgrade's order with one restart of main.
 */
import type { ApplyContext } from '../../src/resources/resource.js'
import { sh } from '../../src/core/shell.js'
import { HOMESERVER_YAML, SYNAPSE_CONF_D, SYNAPSE_PYTHON, SYNAPSE_UNIT } from '../../src/synapse/paths.js'
import { aptCandidate, aptSourceFact, INSTALLED_VERSION, SYNAPSE_PACKAGE, upstreamOf } from './apt-package.js'
import { readDebCode } from './apt-schema.js'
import type { RollbackSpec } from './release/spec.js'
import type { ReleaseStep } from './release/steps.js'
import { howBack, refusedBack, restoreStep, runRollback } from './rollback.js'
import { decideRollback, type RollbackDecision } from './schema-compat.js'
import { databaseSchemaCommand, parseDatabaseSchema } from './schema-probe.js'
import type { ReleaseRecord, StepRunner } from './switch.js'

export interface AptRollbackOutcome {
  ok: boolean
  message: string
  decision: RollbackDecision
  /** The steps decided (none when refused), done in this order unless dryRun. */
  steps: ReleaseStep[]
}

/** The rollback order on an apt host: workers stopped, [main stopped, dump restored], the older package, main's one (re)start, /health, workers. */
export function aptRollbackSteps(
  spec: RollbackSpec,
  r: { from: string; to: string; debVersion: string; backup?: string; restore?: Extract<RollbackDecision, { action: 'restore' }> },
): ReleaseStep[] {
  const checks = spec.afterChecks.filter((c) => !c.inventoryVersionOnly).map((c) => c.name)
  return [
    ...spec.workerUnits.map((unit): ReleaseStep => ({ kind: 'stop', unit, summary: `stop ${unit}` })),
    ...(r.restore
      ? [
          { kind: 'stop', unit: SYNAPSE_UNIT, summary: `stop ${SYNAPSE_UNIT} (${r.from})` } satisfies ReleaseStep,
          restoreStep(spec, r.restore),
        ]
      : []),
    {
      kind: 'apt-install',
      debVersion: r.debVersion,
      from: r.from,
      record: r.backup ? { backup: r.backup } : {},
      summary: `install ${SYNAPSE_PACKAGE}=${r.debVersion} (was ${r.from}) and hold it there; its postinst does not restart main (a policy-rc.d guard for this one apt run)${r.restore ? '' : `: main keeps serving ${r.from} until the restart below`}`,
    },
    {
      kind: 'start',
      unit: SYNAPSE_UNIT,
      summary: `${r.restore ? 'start' : 'restart'} ${SYNAPSE_UNIT} on ${r.to} (its only restart in this rollback)`,
    },
    { kind: 'wait-health', url: spec.healthUrl, summary: `wait until main answers ${spec.healthUrl}` },
    ...spec.workerUnits.map((unit): ReleaseStep => ({ kind: 'start', unit, summary: `start ${unit} on ${r.to}` })),
    { kind: 'after-checks', checks, summary: `after-checks: ${checks.join('; ')}` },
  ]
}

/**
 * Decides and (unless dryRun) does the rollback the record describes. Refusals change nothing: the
 * package is not what the record says, the previous version is gone from the repository, the database
 * does not accept its code without the dump (and no consent), or the dump needs a local PostgreSQL.
 */
export async function aptRollBack(
  ctx: ApplyContext,
  spec: RollbackSpec,
  record: ReleaseRecord & { previous: string },
  runner: StepRunner,
  options: { consent: boolean; dryRun: boolean },
): Promise<AptRollbackOutcome> {
  const { conn } = ctx
  const from = record.active
  const to = record.previous
  const refuse = (reason: string): AptRollbackOutcome => ({
    ok: false,
    decision: { action: 'refuse', reason },
    steps: [],
    message: refusedBack(to, reason, record.backup),
  })
  const installed = (await conn.run(INSTALLED_VERSION)).stdout.trim()
  if (upstreamOf(installed) !== from)
    return refuse(
      `the package is ${installed || 'not installed'}, not the ${from} the last change installed (changed since): pin the version you want in the inventory instead`,
    )
  const source = aptSourceFact.parse(
    (await conn.run(aptSourceFact.command, { timeoutMs: 300_000, what: 'refreshing the matrix.org source' })).stdout,
    0,
  )
  const candidate = aptCandidate(to, source)
  if (candidate.ok !== true) return refuse(`${to} cannot be installed again: ${candidate.reason}`)
  const { code, known } = await readDebCode(conn, candidate.debVersion)
  const dbOut = await conn.run(sh`${databaseSchemaCommand(SYNAPSE_PYTHON, HOMESERVER_YAML, SYNAPSE_CONF_D)} 2>&1`, { allowFailure: true })
  if (dbOut.code !== 0) return refuse(`cannot read the database's schema: ${dbOut.stdout.trim().split('\n').slice(-1)[0]}`)
  const now = parseDatabaseSchema(dbOut.stdout)
  let decision: RollbackDecision = now
    ? decideRollback({
        to: code,
        knownUpdates: known.names,
        now,
        ...(record.before ? { before: record.before } : {}),
        ...(record.backup ? { dump: record.backup } : {}),
        // The newer code served since the change (provision rollback runs after it).
        served: true,
        consent: options.consent,
        ...(record.switchedAt ? { since: record.switchedAt } : {}),
      })
    : { action: 'switch', reason: 'the database has no Synapse schema yet' }
  if (decision.action === 'restore' && !spec.postgresLocal)
    decision = {
      action: 'refuse',
      reason: `${decision.reason}, but PostgreSQL runs on another host: restore it there with provision restore, or roll forward`,
    }
  if (decision.action === 'refuse') return { ...refuse(decision.reason), decision }
  const steps = aptRollbackSteps(spec, {
    from,
    to,
    debVersion: candidate.debVersion,
    ...(record.backup ? { backup: record.backup } : {}),
    ...(decision.action === 'restore' ? { restore: decision } : {}),
  })
  const how = howBack(decision)
  return runRollback(ctx, spec, runner, decision, steps, {
    dryRun: options.dryRun,
    would: `would roll back ${from} -> ${to} (${SYNAPSE_PACKAGE} ${candidate.debVersion}) ${how}`,
    failed: (m) => `rolling back to ${to} failed: ${m}${record.backup ? `; the backup is ${record.backup}` : ''}`,
    done: `rolled back to ${to} ${how}: ${SYNAPSE_PACKAGE} ${candidate.debVersion} installed and held, Synapse ${to} is serving again; pin synapse.version ${to} in the inventory, or the next run upgrades again`,
  })
}
