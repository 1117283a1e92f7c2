/**
 * The installed Synapse release, switched as a whole (docs/upgrade.md; reference/synapse.md section 8):
 * each version lives in its own venv /opt/venvs/matrix-synapse-<version>, /opt/venvs/matrix-synapse is a
 * symlink to the active one (the units keep using the stable path), and a version change is one
 * ordered procedure, the same in the dry run and in apply:
 *
 *   install the new venv -> check the live config with the new code -> back up the database if the
 *   schema will change -> stop every worker -> switch the link -> start main (it migrates) -> wait for
 *   /health -> start the workers -> after-checks -> prune old venvs
 *
 * No worker runs old code against the new main: they are stopped before main restarts and started
 * only once main answers /health. A failure after the switch rolls back to the previous venv when the
 * database allows it (rollback.ts), else names the backup.
 * The apt method follows the same order with the package upgrade in place of install + switch.
 * A running venv is never installed into: when it drifted from its lock, the same procedure switches
 * to a venv rebuilt beside it (/opt/venvs/matrix-synapse-<version>-r2, -r3, ...; no backup: same code).
 *
 * The plan (release/plan.ts) builds typed steps (release/steps.ts) that the change carries; apply runs
 * exactly those through the one executor (release/execute.ts), which the rollback uses too.
 */
import { venvContentsFact } from '../../src/resources/python-venv.js'
import type { ApplyContext, Change, Resource } from '../../src/resources/resource.js'
import { VENV_LINK, versionedVenv } from '../../src/synapse/paths.js'
import { afterFailedInstall } from './apt-package.js'
import { executeSteps, peerOf, startStoppedAgain, type StepFailure } from './release/execute.js'
import { codeSchemaFact, databaseSchemaFact, releaseStateFact } from './release/facts.js'
import { planRelease, type ReleaseFacts } from './release/plan.js'
import type { ReleaseSpec } from './release/spec.js'
import { describe, releasePlanOf, type ReleasePlan } from './release/steps.js'
import { rollBackTo } from './rollback.js'
import { StepRunner, versionOfVenv } from './switch.js'
import { rebuildFailedBeforeSwitch } from './venv-rebuild.js'

export type { ReleaseSpec }

export function synapseRelease(spec: ReleaseSpec): Resource {
  const id = `synapse-release:${VENV_LINK}`
  // One installer per venv path: apply installs with the resource the plan asked.
  const installers = new Map<string, Resource>()
  const installerAt = (venv: string): Resource | undefined => {
    if (!spec.installAt) return undefined
    if (!installers.has(venv)) installers.set(venv, spec.installAt(venv))
    return installers.get(venv)
  }
  const f: ReleaseFacts = {
    state: releaseStateFact(spec.backupDir),
    targetCode: codeSchemaFact(versionedVenv(spec.version)),
    activeCode: codeSchemaFact(VENV_LINK),
    // What the running venv holds (through the link): drift from the lock is repaired beside it.
    ...(spec.lock ? { liveContents: venvContentsFact(VENV_LINK) } : {}),
  }
  return {
    id,
    facts: () => [
      f.state,
      f.targetCode,
      f.activeCode,
      databaseSchemaFact,
      ...(installerAt(versionedVenv(spec.version))?.facts() ?? []),
      ...(f.liveContents ? [f.liveContents] : []),
      ...(spec.apt ? [spec.apt.source] : []),
    ],
    plan: (ctx) => planRelease(id, spec, ctx, f, installerAt),
    async apply(change, ctx) {
      const plan = releasePlanOf(change)
      const runner = new StepRunner(ctx.conn, change)
      const failure = await executeSteps(plan.steps, { apply: ctx, spec, installerAt, runner })
      if (failure) throw await afterFailure(spec, change, plan, failure, ctx, runner)
    },
  }
}

/**
 * What a failed step leaves, said exactly: before the switch nothing running changed (stopped workers
 * start again; a half-built rebuild goes); a failed apt install that left the package as it was starts
 * the workers again; after the switch the pip method rolls back as the database allows.
 */
async function afterFailure(
  spec: ReleaseSpec,
  change: Change,
  plan: ReleasePlan,
  failure: StepFailure,
  ctx: ApplyContext,
  runner: StepRunner,
): Promise<Error> {
  const { steps } = plan
  const { at, message, error } = failure
  const switchedAt = steps.findIndex((x) => x.kind === 'switch' || x.kind === 'apt-install')
  const done = steps.slice(0, at)
  // Only a dump the backup step wrote is named (it skips one when no delta is pending).
  const dump = change.performed?.some((p) => p.kind === 'backup' && p.status === 'done') ? plan.dump : undefined
  if (switchedAt < 0 || at < switchedAt || change.action === 'create') {
    // A worker that did not start again is a change to what runs: say so instead of "nothing changed".
    const stillStopped = await startStoppedAgain(done, ctx)
    if (stillStopped.length)
      return new Error(`${message}; could not start ${stillStopped.join(', ')} again (see journalctl)`, { cause: error })
    if (plan.rebuilt && plan.fromVenv && at < switchedAt)
      return rebuildFailedBeforeSwitch(ctx.conn, message, { from: spec.version, fromVenv: plan.fromVenv, rebuilt: plan.rebuilt })
    return new Error(`${message}${at < switchedAt ? `; nothing running was changed (Synapse ${plan.from ?? ''} keeps serving)` : ''}`, {
      cause: error,
    })
  }
  if (failure.step.kind === 'apt-install' && plan.from)
    return new Error(
      await afterFailedInstall(ctx.conn, {
        message,
        from: plan.from,
        debVersion: failure.step.debVersion,
        ...(dump ? { dump } : {}),
        stopped: done.filter((y) => y.kind === 'stop').map(describe),
        runner: runner.withRollback(),
        peer: (h) => peerOf(ctx, h),
      }),
      { cause: error },
    )
  if (spec.method !== 'pip' || !plan.from)
    return new Error(
      `${message}; the apt method does not roll back by itself (provision rollback does, README "Upgrading")${dump ? `; the backup is ${dump}` : ''}`,
      {
        cause: error,
      },
    )
  // The newer code served once main answered /health (workers and clients may have written since).
  const served = done.some((x) => x.kind === 'wait-health')
  const back = await rollBackTo(ctx, spec, versionOfVenv(plan.fromVenv ?? versionedVenv(plan.from)), runner, dump, {
    served,
    consent: false,
    ...(plan.db ? { before: plan.db } : {}),
  })
  const remote = (spec.remoteWorkers ?? []).filter((r) => r.units.length).map((r) => r.host)
  const what = plan.rebuilt ? `switching Synapse ${spec.version} to the rebuilt ${plan.rebuilt}` : `upgrade ${plan.from} -> ${spec.version}`
  return new Error(
    `${what} failed: ${message}; ${back.message}${remote.length ? `; the workers on ${remote.join(', ')} stay stopped until a run succeeds` : ''}`,
    { cause: error },
  )
}
