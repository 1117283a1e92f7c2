/**
 * The venv of a worker host (a homeserver spread over hosts; no main process there): the lock's
 * version in its own venv, /opt/venvs/matrix-synapse linked to it, as on the synapse host. The
 * workers' units watch the link, so the engine restarts them (checking their configuration first)
 * once it moves. A running venv is never installed into (issue 21): one that drifted from its lock
 * gets a venv rebuilt beside it (-r2, -r3, ...), checked with the workers' configuration, switched to;
 * the drifted one stays for rollback until synapse.keepVenvs prunes it. A failed rebuild leaves the
 * running venv as it was and removes the half-built one.
 */
import type { Change, Resource } from '../../../src/resources/resource.js'
import type { ShellCommand } from '../../../src/core/shell.js'
import { venvContentsFact } from '../../../src/resources/python-venv.js'
import { driftCount, lockDrift } from '../../../src/synapse/lock/drift.js'
import type { SynapseLock } from '../../../src/synapse/lock/lock-file.js'
import { VENV_LINK, versionedVenv } from '../../../src/synapse/paths.js'
import { StepRunner } from '../switch.js'
import { isVenvOf, rebuildChange, rebuildFailedBeforeSwitch } from '../venv-rebuild.js'
import { executeSteps } from './execute.js'
import { releaseStateFact } from './facts.js'
import type { ExecSpec, ReleaseSpec } from './spec.js'
import { carryPlan, releasePlanOf, type ReleaseStep } from './steps.js'

export interface WorkerHostReleaseSpec {
  lock: SynapseLock
  installAt: (path: string) => Resource
  keepVenvs: number
  /** Where the homeserver keeps its dumps (the release state fact reads its free space; nothing is dumped here). */
  backupDir: string
  /** Synapse's config reader with a venv's Python over each worker of this host. */
  configChecks: (python: string) => ShellCommand[]
  /** What the executor reads besides (no step of a worker host dumps, restores or installs with apt). */
  exec: Omit<ExecSpec, 'version' | 'configChecks' | 'afterChecks'>
}

export function workerHostRelease(spec: WorkerHostReleaseSpec): Resource {
  const version = spec.lock.synapseVersion
  const id = `synapse-release:${VENV_LINK}`
  const installers = new Map<string, Resource>()
  const installerAt = (venv: string): Resource => {
    if (!installers.has(venv)) installers.set(venv, spec.installAt(venv))
    return installers.get(venv)!
  }
  const state = releaseStateFact(spec.backupDir)
  const live = venvContentsFact(VENV_LINK)
  const target = versionedVenv(version)
  // The rebuild's order without a main process: no worker is stopped by hand, the engine restarts them after the switch.
  const release: ReleaseSpec = {
    method: 'pip',
    version,
    workerUnits: [],
    healthUrl: '',
    afterChecks: [],
    keepVenvs: spec.keepVenvs,
    // No dump is ever written on a worker host: none to prune.
    keepDumps: Number.MAX_SAFE_INTEGER,
    backupDir: spec.backupDir,
    configChecks: spec.configChecks,
    installAt: installerAt,
    lock: spec.lock,
    ...spec.exec,
  }
  const change = (fields: Pick<Change, 'action' | 'summary'> & Partial<Change>, steps: ReleaseStep[], extra = {}) =>
    carryPlan(
      { resource: id, kind: 'virtualenv', touches: [VENV_LINK], backupPaths: [VENV_LINK], reach: 'anything', ...fields },
      { steps, ...extra },
    )
  return {
    id,
    facts: () => [state, live, ...installerAt(target).facts()],
    async plan(ctx) {
      const s = ctx.facts.get(state)
      const link = s.link.kind === 'link' ? s.link.target : undefined
      const liveVenv = link === undefined ? undefined : link.startsWith('/') ? link : `${VENV_LINK.replace(/[^/]+$/, '')}${link}`
      if (liveVenv && isVenvOf(liveVenv, version) && s.active === version) {
        const contents = ctx.facts.get(live)
        const drift = contents ? lockDrift(spec.lock, contents) : undefined
        if (!drift || !driftCount(drift)) return null
        const r = await rebuildChange({
          id,
          spec: release,
          ctx,
          venvs: s.venvs,
          live: liveVenv,
          drift,
          before: [],
          installerAt,
          main: false,
        })
        return carryPlan({ ...r.change, backupPaths: [VENV_LINK] }, { steps: r.steps, from: version, fromVenv: liveVenv, rebuilt: r.venv })
      }
      if (s.link.kind === 'dir')
        throw new Error(`${VENV_LINK} on this worker host is a plain directory: move it aside, the next run installs ${target}`)
      // A fresh host or another version: the lock's venv beside the running one, then the link.
      const steps: ReleaseStep[] = []
      const install = await installerAt(target).plan(ctx)
      if (install) steps.push({ kind: 'install', venv: target, change: install, summary: install.summary })
      steps.push({
        kind: 'switch',
        venv: target,
        record: liveVenv ? { previous: liveVenv } : {},
        summary: `link ${VENV_LINK} -> ${target}`,
      })
      ctx.predicted.paths.add(VENV_LINK)
      return change(
        {
          action: link === undefined ? 'create' : 'update',
          summary: `install Synapse ${version} side by side in ${target}, ${VENV_LINK} linked to it${liveVenv ? ` (was ${liveVenv}; this host's workers restart on it)` : ''}`,
        },
        steps,
      )
    },
    async apply(c, ctx) {
      const plan = releasePlanOf(c)
      const failure = await executeSteps(plan.steps, {
        apply: ctx,
        spec: { version, configChecks: spec.configChecks, afterChecks: [], ...spec.exec },
        installerAt,
        runner: new StepRunner(ctx.conn, c),
      })
      if (!failure) return
      const switchedAt = plan.steps.findIndex((x) => x.kind === 'switch')
      if (plan.rebuilt && plan.fromVenv && failure.at < switchedAt)
        throw await rebuildFailedBeforeSwitch(ctx.conn, failure.message, { from: version, fromVenv: plan.fromVenv, rebuilt: plan.rebuilt })
      throw new Error(failure.message, { cause: failure.error })
    },
  }
}
