/**
 * The Synapse release procedure as data: each step a typed value the plan builds, the dry run prints
 * (describe) and apply hands to the one executor (execute.ts), for an upgrade, a rebuild and a rollback
 * alike. A new kind of step: add its variant here, its target in describe(), its action in execute.ts
 * (the compiler then names every switch that misses it).
 */
import { definePlanPayload, type Change, type Step } from '../../../src/resources/resource.js'
import { SYNAPSE_UNIT } from '../../../src/synapse/paths.js'
import type { DatabaseSchema } from '../schema-compat.js'
import type { ReleaseSpec } from './spec.js'
import { SYNAPSE_PACKAGE } from '../apt-package.js'

type Variant =
  /** Move a plain-directory venv (the old layout) to its versioned name and link it (the running code stays). */
  | { kind: 'adopt'; venv: string }
  /** Install the venv from the lock: the installer's own planned change. */
  | { kind: 'install'; venv: string; change: Change }
  /** Parse the live configuration with that venv's code, main and every worker. */
  | { kind: 'check-config'; venv: string }
  /**
   * pg_dump and the signing key beside it. `unlessNoDelta`: the new code's schema was unknown at plan
   * time; read from that venv after the install, no pending delta skips the dump.
   */
  | { kind: 'backup'; dump: string; unlessNoDelta?: { venv: string; db: DatabaseSchema | null } }
  /** Stop a unit, on this host or (host set) on a worker host through its connection. */
  | { kind: 'stop'; unit: string; host?: string }
  /** Point /opt/venvs/matrix-synapse at the venv (one rename) and record the switch (what a rollback reads). */
  | { kind: 'switch'; venv: string; record: { previous?: string; backup?: string; before?: DatabaseSchema } }
  /**
   * apt: the guarded install of one Debian version (main keeps serving `from` until its restart), and
   * the record of the change (what `provision rollback` reads): from -> the version installed.
   */
  | { kind: 'apt-install'; debVersion: string; from: string; record: { backup?: string; before?: DatabaseSchema } }
  /** The pre-upgrade dump into a new database, swapped in for the live one (rollback). */
  | { kind: 'restore-dump'; dump: string }
  | { kind: 'start'; unit: string; host?: string }
  | { kind: 'wait-health'; url: string }
  /** The release's after-checks named here (a rollback leaves out those that judge the inventory's version). */
  | { kind: 'after-checks'; checks: string[] }
  | { kind: 'prune'; venvs: string[] }
  /** The oldest pre-upgrade dumps beyond synapse.keepDumps, each with its signing key copy. */
  | { kind: 'prune-dumps'; dumps: string[] }

export type ReleaseStep = Variant & {
  /** What the dry run prints. */
  summary: string
  /** The dry run cannot know yet whether the step will do anything: why. */
  uncertain?: string
}

export type StepKind = ReleaseStep['kind']

/** The report's generic step (kind and target stay strings for rendering and --json). */
export function describe(step: ReleaseStep): Step {
  const target = ((): string => {
    switch (step.kind) {
      case 'adopt':
      case 'install':
      case 'check-config':
      case 'switch':
        return step.venv
      case 'backup':
      case 'restore-dump':
        return step.dump
      case 'stop':
      case 'start':
        return step.unit
      case 'apt-install':
        return `${SYNAPSE_PACKAGE} ${step.debVersion}`
      case 'wait-health':
        return step.url
      case 'after-checks':
        return 'homeserver'
      case 'prune':
        return step.venvs.join(' ')
      case 'prune-dumps':
        return step.dumps.join(' ')
    }
  })()
  return {
    kind: step.kind,
    target,
    ...('host' in step && step.host !== undefined ? { host: step.host } : {}),
    summary: step.summary,
    ...(step.uncertain ? { uncertain: step.uncertain } : {}),
  }
}

/** What apply needs of the plan of a release change, besides its steps. */
export interface ReleasePlan {
  steps: ReleaseStep[]
  /** The version serving before the change (unset: a fresh host). */
  from?: string
  /** The venv serving before the switch (what a failure rolls back to). */
  fromVenv?: string
  /** The database as read in the plan (the rollback compares what the newer code changed since). */
  db?: DatabaseSchema
  dump?: string
  /** A rebuild's new venv: removed when the run fails before the switch (never reused half-built). */
  rebuilt?: string
}

/** The order around the switch: workers stopped, `body` (the switch), main, /health, workers, after-checks. */
export function stepsAround(spec: ReleaseSpec, from: string | undefined, body: ReleaseStep[], on = spec.version): ReleaseStep[] {
  const checks = spec.afterChecks.map((c) => c.name)
  return [
    ...spec.workerUnits.map((unit): ReleaseStep => ({ kind: 'stop', unit, summary: `stop ${unit}` })),
    ...(spec.remoteWorkers ?? []).flatMap((r) =>
      r.units.map((unit): ReleaseStep => ({
        kind: 'stop',
        unit,
        host: r.host,
        summary: `stop ${unit} on ${r.host} (that host's run switches it to ${spec.version} and starts it once main is up)`,
      })),
    ),
    ...body,
    {
      kind: 'start',
      unit: SYNAPSE_UNIT,
      summary: `${spec.method === 'apt' ? 'restart' : 'start'} ${SYNAPSE_UNIT} on ${on}${from ? ` (was ${from})` : ''}: main alone applies the schema deltas${spec.method === 'apt' ? ' (its only restart in this change)' : ''}`,
    },
    { kind: 'wait-health', url: spec.healthUrl, summary: `wait until main answers ${spec.healthUrl} (migrations done)` },
    ...spec.workerUnits.map((unit): ReleaseStep => ({ kind: 'start', unit, summary: `start ${unit} on ${on}` })),
    { kind: 'after-checks', checks, summary: `after-checks: ${checks.join('; ')}` },
  ]
}

const releasePlan = definePlanPayload<ReleasePlan>('synapse-release', 'release plan')

/** The change carries the typed plan; its `steps` are what the dry run prints of it, in the same order. */
export const carryPlan = (change: Change, plan: ReleasePlan): Change =>
  releasePlan.carry({ ...change, steps: plan.steps.map(describe) }, plan)

export const releasePlanOf = releasePlan.of
