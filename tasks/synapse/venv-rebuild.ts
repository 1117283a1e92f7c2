/**
 * A running venv is never installed into (issue 21). When the venv Synapse runs from differs from its
 * lock (a package changed by hand, an adopted server's own installs), a new venv is built beside it
 * from the lock and switched to exactly as an upgrade switches versions (release.ts: the same install,
 * config check, workers stopped, atomic switch, main, /health, workers, after-checks); the drifted one
 * stays, unchanged, for rollback until synapse.keepVenvs prunes it.
 */
import { FactValues } from '../../src/facts/fact.js'
import type { Change, PlanContext, Resource } from '../../src/resources/resource.js'
import type { Connection } from '../../src/ssh/connection.js'
import { sh } from '../../src/core/shell.js'
import { describeDrift, driftCount, driftDiff, type LockDrift } from '../../src/synapse/lock/drift.js'
import { VENV_LINK, versionedVenv } from '../../src/synapse/paths.js'
import type { ReleaseSpec } from './release/spec.js'
import { stepsAround, type ReleaseStep } from './release/steps.js'

/** A venv of `version`: its first one, or one rebuilt beside it from the lock (`-r2`, `-r3`, ...). */
export const isVenvOf = (path: string, version: string) =>
  path === versionedVenv(version) ||
  (path.startsWith(`${versionedVenv(version)}-r`) && /^\d+$/.test(path.slice(versionedVenv(version).length + 2)))
/** The name a rebuild of `version`'s venv gets: the first `-rN` no directory holds (a failed one is removed, never reused half-built). */
export function rebuiltVenv(version: string, venvs: { path: string }[]): string {
  for (let n = 2; ; n++) if (!venvs.some((v) => v.path === `${versionedVenv(version)}-r${n}`)) return `${versionedVenv(version)}-r${n}`
}

/** Venvs to remove after switching to `active`: keep `keep` in all, the active one and the one to roll back to first. */
export function venvsToPrune(venvs: { path: string }[], active: string, previous: string | undefined, keep: number): string[] {
  const kept = new Set([active, ...(previous ? [previous] : [])])
  for (const v of venvs) if (kept.size < keep) kept.add(v.path)
  return venvs.map((v) => v.path).filter((p) => !kept.has(p))
}

export interface RebuildInput {
  /** The release resource's id. */
  id: string
  spec: ReleaseSpec
  ctx: PlanContext
  venvs: { path: string; mtime: number }[]
  /** The venv serving now (it differs from the lock). */
  live: string
  drift: LockDrift
  /** Steps that come first (the adopt move of a plain directory). */
  before: ReleaseStep[]
  /** The installer of a venv at a path (the release keeps one per path: apply uses the one planned). */
  installerAt: (venv: string) => Resource | undefined
  /** false on a worker host: no main to restart; its workers' units watch the link (the engine restarts them). */
  main?: boolean
}

/** The plan of a rebuild: the new venv's name, its steps in the upgrade's order, and the release change (without them). */
export async function rebuildChange(x: RebuildInput): Promise<{ change: Change; venv: string; steps: ReleaseStep[] }> {
  const { spec, ctx, live, drift } = x
  const venv = rebuiltVenv(spec.version, x.venvs)
  const installer = x.installerAt(venv)
  if (!installer || !spec.lock) throw new Error('a pip release with a lock needs its installer (installAt)')
  // The state fact lists every venv directory, and none is at this new name: its own facts read nothing.
  const facts = new FactValues()
  facts.merge(ctx.facts)
  for (const f of installer.facts()) facts.set(f.id, null)
  const installChange = await installer.plan({ ...ctx, facts })
  const lockName = spec.lock.file.split('/').slice(-2).join('/')
  const steps: ReleaseStep[] = [
    ...x.before,
    ...(installChange ? [{ kind: 'install', venv, change: installChange, summary: installChange.summary } satisfies ReleaseStep] : []),
    {
      kind: 'check-config',
      venv,
      summary: `parse the live configuration with the rebuilt venv's code (${venv}/bin/python -m synapse.config), main and every worker`,
    },
  ]
  const switchStep: ReleaseStep = {
    kind: 'switch',
    venv,
    record: { previous: live },
    summary: `switch ${VENV_LINK} -> ${venv} (one atomic rename; ${live} stays, unchanged, for rollback)${x.main === false ? ": this host's workers restart on it" : ''}`,
  }
  if (x.main === false) steps.push(switchStep)
  else steps.push(...stepsAround(spec, undefined, [switchStep], `${spec.version} (${venv.replace(/^.*\//, '')})`))
  const venvs = [...x.venvs, { path: venv, mtime: Infinity }].sort((a, b) => b.mtime - a.mtime)
  const prune = venvsToPrune(venvs, venv, live, spec.keepVenvs)
  if (prune.length)
    steps.push({ kind: 'prune', venvs: prune, summary: `remove ${prune.join(', ')} (keep ${spec.keepVenvs} venvs: synapse.keepVenvs)` })
  ctx.predicted.paths.add(VENV_LINK)
  const change: Change = {
    resource: x.id,
    kind: 'virtualenv',
    action: 'update',
    summary: `rebuild Synapse ${spec.version} side by side in ${venv} and switch to it: the running ${live} differs from the lock ${lockName} (${driftCount(drift)}: ${describeDrift(drift)}) and is not changed`,
    diff: driftDiff(drift, live, lockName),
    touches: [VENV_LINK],
    backupPaths: [],
    reach: 'anything',
  }
  return { change, venv, steps }
}

/** A rebuild failed before the switch: the half-built venv was never run and goes; the live one was not touched and still differs. */
export async function rebuildFailedBeforeSwitch(
  conn: Connection,
  message: string,
  p: { from: string; fromVenv: string; rebuilt: string },
): Promise<Error> {
  const rm = await conn.run(sh`rm -rf ${p.rebuilt}`, { allowFailure: true })
  return new Error(
    `${message}; nothing running was changed: Synapse ${p.from} keeps serving from ${p.fromVenv}, which still differs from the lock (a later run or check reports it)${rm.code ? `; removing ${p.rebuilt} failed too: ${rm.stderr.trim()}` : `; ${p.rebuilt} removed`}`,
  )
}
