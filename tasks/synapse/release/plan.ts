/**
 * The plan of a release change (release.ts has the order): which steps, with what, as typed values
 * the change carries to apply (steps.ts). Refusals (a schema the code cannot run on, no room for the
 * dump, an apt version the source lacks) are thrown here, before anything stops.
 */
import type { Fact } from '../../../src/facts/fact.js'
import type { Change, PlanContext, Resource } from '../../../src/resources/resource.js'
import { compareReleases } from '../../../src/synapse/compat.js'
import { driftCount, lockDrift, type LockDrift, type VenvContents } from '../../../src/synapse/lock/drift.js'
import { VENV_LINK, versionedVenv } from '../../../src/synapse/paths.js'
import { plannedDebVersion, SYNAPSE_PACKAGE } from '../apt-package.js'
import { readDebSchema } from '../apt-schema.js'
import { canRun, rollbackWindow, schemaChange, type CodeSchema, type DatabaseSchema } from '../schema-compat.js'
import { isVenvOf, rebuildChange, venvsToPrune } from '../venv-rebuild.js'
import { databaseSchemaFact, dumpPath, dumpsToPrune, isError, type ReleaseState } from './facts.js'
import type { ReleaseSpec } from './spec.js'
import { carryPlan, stepsAround, type ReleasePlan, type ReleaseStep } from './steps.js'

/** The facts the plan reads (release.ts declares them). */
export interface ReleaseFacts {
  state: Fact<ReleaseState>
  targetCode: Fact<CodeSchema | null | { error: string }>
  activeCode: Fact<CodeSchema | null | { error: string }>
  liveContents?: Fact<VenvContents | null>
}

const releaseChange = (id: string, fields: Omit<Change, 'resource' | 'kind' | 'touches' | 'backupPaths' | 'reach'>, plan: ReleasePlan) =>
  carryPlan({ resource: id, kind: 'virtualenv', touches: [VENV_LINK], backupPaths: [], reach: 'anything', ...fields }, plan)

export async function planRelease(
  id: string,
  spec: ReleaseSpec,
  ctx: PlanContext,
  f: ReleaseFacts,
  installerAt: (venv: string) => Resource | undefined,
): Promise<Change | null> {
  const target = versionedVenv(spec.version)
  const install = installerAt(target)
  const s = ctx.facts.get(f.state)
  const active = s.active
  const debVersion = spec.apt ? plannedDebVersion(spec.version, ctx.facts.get(spec.apt.source), active) : undefined // refuses an absent version before anything stops
  const linkTarget = s.link.kind === 'link' ? s.link.target : undefined
  const liveVenv =
    linkTarget === undefined ? undefined : linkTarget.startsWith('/') ? linkTarget : `${VENV_LINK.replace(/[^/]+$/, '')}${linkTarget}`
  const drift = (): LockDrift | undefined => {
    const venv = f.liveContents && spec.lock ? ctx.facts.get(f.liveContents) : null
    const d = venv ? lockDrift(spec.lock!, venv) : undefined
    return d && driftCount(d) ? d : undefined
  }
  const rebuild = async (state: ReleaseState, live: string, d: LockDrift, before: ReleaseStep[]) => {
    const r = await rebuildChange({ id, spec, ctx, venvs: state.venvs, live, drift: d, before, installerAt })
    return carryPlan(r.change, { steps: r.steps, from: spec.version, fromVenv: live, rebuilt: r.venv })
  }
  if (spec.method === 'pip' && liveVenv && isVenvOf(liveVenv, spec.version) && active === spec.version) {
    const d = drift()
    return d ? rebuild(s, liveVenv, d, []) : null
  }
  if (spec.method === 'apt' && active === spec.version) return null
  const steps: ReleaseStep[] = []
  const installStep = async () => {
    const change = install ? await install.plan(ctx) : null
    if (change) steps.push({ kind: 'install', venv: target, change, summary: change.summary })
  }
  // Fresh host: nothing runs yet; install and link (the service resource starts it later).
  if (!active || (spec.method === 'pip' && s.link.kind === 'none')) {
    if (spec.method === 'apt') return null // the apt task installs it; nothing to order yet
    await installStep()
    steps.push({ kind: 'switch', venv: target, record: {}, summary: `link ${VENV_LINK} -> ${target}` })
    ctx.predicted.paths.add(VENV_LINK)
    return releaseChange(
      id,
      { action: 'create', summary: `install Synapse ${spec.version} side by side in ${target}, ${VENV_LINK} linked to it` },
      { steps, ...(active ? { from: active } : {}) },
    )
  }
  // The old layout: the running code sits in a plain directory. Give it its versioned name first.
  if (spec.method === 'pip' && s.link.kind === 'dir') {
    steps.push({
      kind: 'adopt',
      venv: versionedVenv(active),
      summary: `move the plain venv ${VENV_LINK} (${active}) to ${versionedVenv(active)} and link ${VENV_LINK} to it (the running code stays in place)`,
    })
    if (active === spec.version) {
      const d = drift()
      if (d) return rebuild({ ...s, venvs: [...s.venvs, { path: versionedVenv(active), mtime: 0 }] }, versionedVenv(active), d, steps)
      return releaseChange(id, { action: 'update', summary: `move Synapse ${active} to the side-by-side layout` }, { steps, from: active })
    }
  }
  const fromVenv = liveVenv && s.link.kind === 'link' ? liveVenv : versionedVenv(active)
  const db = ctx.facts.get(databaseSchemaFact)
  if (isError(db)) throw new Error(`cannot read the database's schema version with ${VENV_LINK} and the live configuration: ${db.error}`)
  const haveTarget = ctx.facts.get(f.targetCode)
  // apt: the package file is read before anything changes (a downgrade the database does not accept is refused here).
  const next =
    (haveTarget && !isError(haveTarget) ? haveTarget : undefined) ??
    (await spec.controllerCode?.()) ??
    (debVersion ? await readDebSchema(ctx.conn, debVersion) : undefined)
  const prev = ctx.facts.get(f.activeCode)
  const previousCode = prev && !isError(prev) ? prev : undefined
  const downgrade = compareReleases(spec.version, active) < 0
  if (next) {
    const run = canRun(db, next)
    if (!run.ok)
      throw new Error(
        `refusing ${downgrade ? 'the downgrade' : 'the switch'} ${active} -> ${spec.version}: ${run.reason}. Pin a version the database accepts${backupOf(s, spec.backupDir, spec.version, active) ? `, or restore the backup ${backupOf(s, spec.backupDir, spec.version, active)}` : ''}.`,
      )
  }
  if (spec.method === 'pip') {
    await installStep()
    steps.push({
      kind: 'check-config',
      venv: target,
      summary: `parse the live configuration with ${spec.version}'s code (${target}/bin/python -m synapse.config), main and every worker`,
    })
  }
  const change = next ? schemaChange(db, next) : undefined
  let dump: string | undefined
  if (!change || change.changes) {
    dump = dumpPath(spec.backupDir, active, spec.version, s.dumps)
    steps.push(backupStep(spec, s, db, dump, change, next, target))
  }
  const window = next && previousCode ? rollbackWindow(db, previousCode, next) : undefined
  const record = { previous: fromVenv, backup: dump, ...(db ? { before: db } : {}) }
  steps.push(
    ...stepsAround(spec, active, [
      spec.method === 'pip'
        ? {
            kind: 'switch',
            venv: target,
            record,
            summary: `switch ${VENV_LINK} -> ${target} (one atomic rename; ${fromVenv} stays for rollback)`,
          }
        : {
            kind: 'apt-install',
            debVersion: debVersion!,
            from: active,
            record: { backup: dump, ...(db ? { before: db } : {}) },
            summary: `install ${SYNAPSE_PACKAGE}=${debVersion} (was ${active}) and hold it there; its postinst does not restart main (a policy-rc.d guard for this one apt run): main keeps serving ${active} until the restart below`,
          },
    ]),
  )
  if (spec.method === 'pip') {
    const venvs = [...s.venvs.filter((v) => v.path !== target), { path: target, mtime: Infinity }].sort((a, b) => b.mtime - a.mtime)
    if (s.link.kind === 'dir' && !venvs.some((v) => v.path === versionedVenv(active)))
      venvs.splice(1, 0, { path: versionedVenv(active), mtime: 0 })
    const prune = venvsToPrune(venvs, target, fromVenv, spec.keepVenvs)
    if (prune.length)
      steps.push({ kind: 'prune', venvs: prune, summary: `remove ${prune.join(', ')} (keep ${spec.keepVenvs} venvs: synapse.keepVenvs)` })
  }
  const oldDumps = dumpsToPrune(s, spec.keepDumps, dump, [s.record?.backup])
  if (oldDumps.length)
    steps.push({
      kind: 'prune-dumps',
      dumps: oldDumps,
      summary: `remove the older pre-upgrade dumps ${oldDumps.join(', ')} and their signing key copies (keep ${spec.keepDumps}: synapse.keepDumps${s.record?.backup ? `; ${s.record.backup} stays, the last switch's record names it` : ''})`,
    })
  ctx.predicted.paths.add(VENV_LINK)
  const uncertain = steps.find((x) => x.uncertain)?.uncertain
  return releaseChange(
    id,
    {
      action: 'update',
      summary: `${downgrade ? 'downgrade' : 'upgrade'} Synapse ${active} -> ${spec.version}${spec.method === 'pip' ? ` side by side in ${target}` : ' (apt)'}${window ? `; rollback window: ${window.reason}` : ''}`,
      ...(uncertain ? { uncertain } : {}),
    },
    { steps, from: active, fromVenv, ...(db ? { db } : {}), ...(dump ? { dump } : {}) },
  )
}

/** The dump before the schema changes: refused when it does not fit; uncertain when the new code's schema is not known yet. */
function backupStep(
  spec: ReleaseSpec,
  s: ReleaseState,
  db: DatabaseSchema | null,
  dump: string,
  change: ReturnType<typeof schemaChange> | undefined,
  next: CodeSchema | undefined,
  target: string,
): ReleaseStep {
  const needKiB = Math.ceil((db?.sizeBytes ?? 0) / 1024)
  if (change?.changes && needKiB > s.backupFreeKiB)
    throw new Error(
      `not enough space for the database dump before the schema migration: ${spec.backupDir} has ${s.backupFreeKiB} KiB free, the database is ${needKiB} KiB; free space or set synapse.backupDir`,
    )
  const why = change
    ? `${change.pending.length} schema delta(s) pending: ${change.pending.join(', ') || `schema_version ${db?.version} -> ${next!.schemaVersion}`}`
    : undefined
  return {
    kind: 'backup',
    dump,
    // pip: the new code's schema is read after its install; no pending delta then skips the dump.
    ...(!change && spec.method === 'pip' ? { unlessNoDelta: { venv: target, db } } : {}),
    summary: `pg_dump -Fc (without e2e_one_time_keys_json data) to ${dump}, and the signing key to ${dump.replace(/\.dump$/, '.signing.key')}${why ? ` (${why})` : ''}`,
    ...(!change
      ? {
          uncertain:
            spec.method === 'apt'
              ? "the package's schema is known only once it is unpacked: dumped before every apt upgrade"
              : "the new code's schema is known only once its venv is installed: skipped if no delta is pending",
        }
      : {}),
  }
}

/** The backup to go back to: the switch record's, else the newest dump taken before `from` -> `to` (a host changed before records were kept). */
function backupOf(s: ReleaseState, backupDir: string, to: string, from: string): string | undefined {
  if (s.record?.backup) return s.record.backup
  const base = `${backupDir}/synapse-${to}-before-${from}`
  const n = (d: string) => (d === `${base}.dump` ? 1 : Number(d.slice(base.length + 1, -'.dump'.length)))
  return s.dumps
    .filter((d) => d === `${base}.dump` || new RegExp(`^${base.replace(/[.+]/g, '\\$&')}\\.\\d+\\.dump$`).test(d))
    .sort((a, b) => n(a) - n(b))
    .at(-1)
}
