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
 * database schema still accepts it (schema-compat.ts), else names the backup.
 * The apt method follows the same order with the package upgrade in place of install + switch.
 * A running venv is never installed into: when it drifted from its lock, the same procedure switches
 * to a venv rebuilt beside it (/opt/venvs/matrix-synapse-<version>-r2, -r3, ...; no backup: same code).
 */
import { dumpToFile } from './pre-upgrade-dump.js'
import type { AfterCheck, AfterCheckContext } from '../../src/engine/task.js'
import { defineFact, type Fact, type FactValues } from '../../src/facts/fact.js'
import { driftCount, lockDrift, type LockDrift } from '../../src/synapse/lock/drift.js'
import type { SynapseLock } from '../../src/synapse/lock/lock-file.js'
import { venvContentsFact } from '../../src/resources/python-venv.js'
import type { ApplyContext, Change, PerformedStep, Resource, Step } from '../../src/resources/resource.js'
import type { Connection } from '../../src/ssh/connection.js'
import { sh, type ShellCommand } from '../../src/core/shell.js'
import { httpOnHost } from '../common/checks.js'
import { stopRunning } from './worker-handover.js'
import { isVenvOf, rebuildChange, rebuildFailedBeforeSwitch, venvsToPrune } from './venv-rebuild.js'
import { canRun, compareVersions, rollbackWindow, schemaChange, type CodeSchema, type DatabaseSchema } from './schema-compat.js'
import { codeSchemaCommand, databaseSchemaCommand, parseCodeSchema, parseDatabaseSchema } from './schema-probe.js'
import { rollBack } from './rollback.js'
import { afterFailedInstall, plannedDebVersion, SYNAPSE_PACKAGE, type AptSourceState } from './apt-package.js'
import {
  AFTER_SWITCH,
  linkCommand,
  RELEASE_STATE,
  startUnit,
  StepRunner,
  versionOfVenv,
  writeRecord,
  type ReleaseRecord,
} from './switch.js'

export const VENV_LINK = '/opt/venvs/matrix-synapse'
export const versionedVenv = (version: string) => `${VENV_LINK}-${version}`
export const MAIN_UNIT = 'matrix-synapse.service'
const ETC = '/etc/matrix-synapse'

export interface ReleaseState {
  /** /opt/venvs/matrix-synapse: a symlink (to this name), a plain directory (the old layout), or nothing. */
  link: { kind: 'link'; target: string } | { kind: 'dir' } | { kind: 'none' }
  /** Version of the code behind /opt/venvs/matrix-synapse, if any. */
  active?: string
  /** Versioned venvs present, newest first (by mtime). */
  venvs: { path: string; mtime: number }[]
  record?: ReleaseRecord
  /** KiB free where backups go (the nearest existing directory). */
  backupFreeKiB: number
  /** Dumps already in the backup directory (names are never reused). */
  dumps: string[]
}

export function parseReleaseState(out: string): ReleaseState {
  const s: ReleaseState = { link: { kind: 'none' }, venvs: [], backupFreeKiB: 0, dumps: [] }
  for (const line of out.split('\n')) {
    const [key, ...rest] = line.split(' ')
    const value = rest.join(' ')
    if (key === 'link') s.link = { kind: 'link', target: value }
    else if (key === 'dir') s.link = { kind: 'dir' }
    else if (key === 'active' && value) s.active = value
    else if (key === 'venv') s.venvs.push({ mtime: Number(rest[0]), path: rest[1]! })
    else if (key === 'record') s.record = JSON.parse(value) as ReleaseRecord
    else if (key === 'free') s.backupFreeKiB = Number(value)
    else if (key === 'dump') s.dumps.push(value)
  }
  s.venvs.sort((a, b) => b.mtime - a.mtime)
  return s
}

export function releaseStateFact(backupDir: string) {
  const v = VENV_LINK
  const b = backupDir
  return defineFact(
    `synapse-release:${backupDir}`,
    sh`if [ -L ${v} ]; then echo "link $(readlink ${v})"; elif [ -d ${v} ]; then echo dir; fi; for d in ${v}-*; do [ -d "$d" ] && [ ! -L "$d" ] && echo "venv $(stat -c %Y "$d") $d"; done; [ -x ${`${v}/bin/python`} ] && echo "active $(${`${v}/bin/python`} -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null)"; [ -f ${RELEASE_STATE} ] && echo "record $(tr -d '\\n' < ${RELEASE_STATE})"; d=${b}; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; echo "free $(df -Pk "$d" | awk 'NR==2{print $4}')"; for f in ${b}/*.dump; do [ -f "$f" ] && echo "dump $f"; done; true`,
    (out) => parseReleaseState(out),
  )
}

/** The schema rules of the code in a venv (null when that venv does not exist). */
export function codeSchemaFact(venv: string) {
  const py = `${venv}/bin/python`
  return defineFact(`synapse-code-schema:${venv}`, sh`if [ -x ${py} ]; then ${codeSchemaCommand(py)}; else echo null; fi`, (out, code) => {
    if (code !== 0) return { error: out.trim().slice(-300) || `exit ${code}` }
    return out.trim() === 'null' ? null : parseCodeSchema(out)
  })
}

/** The database's schema state, read with the active venv and the live config (null: no schema yet). */
export const databaseSchemaFact = defineFact(
  'synapse-database-schema',
  sh`if [ -x ${`${VENV_LINK}/bin/python`} ] && [ -f ${`${ETC}/homeserver.yaml`} ]; then ${databaseSchemaCommand(`${VENV_LINK}/bin/python`, `${ETC}/homeserver.yaml`, `${ETC}/conf.d`)} 2>&1; else echo null; fi`,
  (out, code): DatabaseSchema | null | { error: string } => {
    if (code !== 0) return { error: out.trim().split('\n').slice(-2).join(' ') || `exit ${code}` }
    try {
      return parseDatabaseSchema(out)
    } catch {
      return { error: out.trim().slice(-300) }
    }
  },
)

const isError = (v: unknown): v is { error: string } => typeof v === 'object' && v !== null && 'error' in v

export interface ReleaseSpec {
  method: 'pip' | 'apt'
  version: string
  /** Worker units on this host, from the workers task's one source. */
  workerUnits: string[]
  /**
   * Worker units on the worker hosts of a homeserver spread over hosts: stopped (through their host's
   * connection) before main switches; their own host's run switches their venv and starts them after
   * main is up (its workers task needs this host's synapse task).
   */
  remoteWorkers?: { host: string; units: string[] }[]
  /** Main's /health on the host. */
  healthUrl: string
  /** The checks of a working homeserver after the switch (main, client API, each worker). */
  afterChecks: AfterCheck[]
  keepVenvs: number
  backupDir: string
  /** Copied beside the dump: a restored database is useless without the server's key. */
  signingKey: string
  /** Commands that parse the live configuration with a given venv's Python (main, then each worker). */
  configChecks: (python: string) => ShellCommand[]
  /** pip: the resource that installs a venv at a path from the lock (the wheelhouse, an index or the lock itself). */
  installAt?: (path: string) => Resource
  /** pip: the lock the running venv must hold; drift from it is repaired by a venv rebuilt beside it. */
  lock?: SynapseLock
  /** The new code's schema rules known on the controller (the wheelhouse's wheel), for the dry run. */
  controllerCode?: CodeSchema
  /** apt: what the matrix.org source offers (read fresh in the plan), and the guarded install of one Debian version. */
  apt?: { source: Fact<AptSourceState>; install: (debVersion: string) => ShellCommand }
  /** Postgres runs on this host (dumped as the postgres superuser), else the dump connects with Synapse's credentials. */
  postgresLocal: boolean
  database: string
  /** The role owning Synapse's database (a restored dump's objects are owned by it). */
  databaseOwner: string
}

interface Planned {
  from?: string
  /** The venv serving before the switch (what a failure rolls back to). */
  fromVenv?: string
  next?: CodeSchema
  db: DatabaseSchema | null
  previousCode?: CodeSchema
  dump?: string
  installer?: Resource
  installChange?: Change
  /** A rebuild's new venv: removed when the run fails before the switch (never reused half-built). */
  rebuilt?: string
  debVersion?: string // apt: the Debian version the source offers for spec.version
}

/** Another host's connection in this run (a worker host): the engine's ApplyContext.peer. */
async function peerOf(ctx: ApplyContext, host: string): Promise<Connection> {
  if (!ctx.peer)
    throw new Error(`the workers on ${host} must be stopped before main switches, but this command has no connection to ${host}`)
  return ctx.peer(host)
}

/** Name of the dump before upgrading from -> to; never an existing one. */
export function dumpPath(backupDir: string, from: string, to: string, existing: string[]): string {
  const base = `${backupDir}/synapse-${from}-before-${to}`
  for (let n = 1; ; n++) {
    const p = n === 1 ? `${base}.dump` : `${base}.${n}.dump`
    if (!existing.includes(p)) return p
  }
}

export function synapseRelease(spec: ReleaseSpec): Resource {
  const target = versionedVenv(spec.version)
  const install = spec.installAt?.(target)
  const state = releaseStateFact(spec.backupDir)
  // What the running venv holds (through the link): drift from the lock is repaired beside it.
  const liveContents = spec.lock ? venvContentsFact(VENV_LINK) : undefined
  const targetCode = codeSchemaFact(target)
  const activeCode = codeSchemaFact(VENV_LINK)
  const id = `synapse-release:${VENV_LINK}`
  let planned: Planned = { db: null }

  const stepsAround = (from: string | undefined, body: Step[], on = spec.version): Step[] => [
    ...spec.workerUnits.map((u): Step => ({ kind: 'stop', target: u, summary: `stop ${u}` })),
    ...(spec.remoteWorkers ?? []).flatMap((r) =>
      r.units.map((u): Step => ({
        kind: 'stop',
        target: u,
        host: r.host,
        summary: `stop ${u} on ${r.host} (that host's run switches it to ${spec.version} and starts it once main is up)`,
      })),
    ),
    ...body,
    {
      kind: 'start',
      target: MAIN_UNIT,
      summary: `${spec.method === 'apt' ? 'restart' : 'start'} ${MAIN_UNIT} on ${on}${from ? ` (was ${from})` : ''}: main alone applies the schema deltas${spec.method === 'apt' ? ' (its only restart in this change)' : ''}`,
    },
    { kind: 'wait-health', target: spec.healthUrl, summary: `wait until main answers ${spec.healthUrl} (migrations done)` },
    ...spec.workerUnits.map((u): Step => ({ kind: 'start', target: u, summary: `start ${u} on ${on}` })),
    { kind: 'after-checks', target: 'homeserver', summary: `after-checks: ${spec.afterChecks.map((c) => c.name).join('; ')}` },
  ]

  // Each step kind, done as the dry run described it.
  async function doStep(step: Step, ctx: ApplyContext): Promise<string | { skipped: string } | void> {
    const { conn } = ctx
    const run = async (command: ShellCommand, what: string, timeoutMs = 300_000) =>
      (await conn.run(command, { timeoutMs, what })).stdout.trim()
    switch (step.kind) {
      case 'adopt':
        await run(sh`mv -T ${VENV_LINK} ${step.target} && ${linkCommand(step.target)}`, 'moving the plain venv to its versioned name')
        await writeRecord(conn, { active: step.target })
        return `${VENV_LINK} -> ${step.target}`
      case 'install':
        if (!planned.installer || !planned.installChange) return { skipped: 'already installed' }
        await planned.installer.apply(planned.installChange, ctx)
        return
      case 'check-config':
        for (const c of spec.configChecks(`${step.target}/bin/python`))
          await run(c, `Synapse ${spec.version} in ${step.target} rejects the live configuration (${c.text})`, 180_000)
        return 'the new code accepts the live configuration'
      case 'backup': {
        let next = planned.next
        if (!next && spec.method === 'pip')
          next = parseCodeSchema(await run(codeSchemaCommand(`${target}/bin/python`), 'reading the new code schema version'))
        if (next && spec.method === 'pip') {
          const change = schemaChange(planned.db, next)
          if (!change.changes) return { skipped: 'no schema delta pending: no dump needed' }
        }
        const size = await run(dumpToFile(spec, step.target), `dumping the database to ${step.target}`, 3_600_000)
        const key = step.target.replace(/\.dump$/, '.signing.key')
        await run(sh`install -m 0600 ${spec.signingKey} ${key}`, 'copying the signing key')
        return `${step.target} (${size} bytes) and ${key}`
      }
      case 'stop':
        if (step.host !== undefined) {
          await stopRunning(await peerOf(ctx, step.host), [step.target], `stopping ${step.target} on ${step.host}`)
          return
        }
        await run(sh`systemctl stop ${step.target}`, `stopping ${step.target}`)
        return
      case 'switch':
        await run(linkCommand(step.target), `switching ${VENV_LINK}`)
        await writeRecord(conn, {
          active: step.target,
          previous: planned.fromVenv,
          backup: planned.dump,
          ...(planned.db ? { before: planned.db } : {}),
          switchedAt: new Date().toISOString(),
        })
        return `${VENV_LINK} -> ${step.target}`
      case 'apt-install':
        await run(spec.apt!.install(planned.debVersion!), `installing ${SYNAPSE_PACKAGE}=${planned.debVersion}`, 1_200_000)
        return `${SYNAPSE_PACKAGE} ${planned.debVersion} installed and held; main still serves ${planned.from} until its restart`
      case 'start':
        await startUnit(conn, step.target)
        return
      case 'wait-health': {
        const r = await httpOnHost(conn, step.target, { waitS: 300, expect: /OK/ })
        if (!r.ok) throw new Error(r.detail)
        return
      }
      case 'after-checks': {
        const failed: string[] = []
        for (const c of spec.afterChecks) {
          const r = await c.run(conn, AFTER_SWITCH)
          if (!r.ok && !r.warning) failed.push(`${c.name}: ${r.detail}`)
        }
        if (failed.length) throw new Error(`after-checks failed: ${failed.join('; ')}`)
        return `${spec.afterChecks.length} passed`
      }
      case 'prune':
        await run(sh`rm -rf ${step.target.split(' ')}`, 'removing old venvs')
        return
      default:
        throw new Error(`unknown step ${step.kind}`)
    }
  }

  async function rebuildPlan(
    ctx: Parameters<Resource['plan']>[0],
    s: ReleaseState,
    live: string,
    drift: LockDrift,
    before: Step[],
  ): Promise<Change> {
    const r = await rebuildChange({ id, spec, ctx, venvs: s.venvs, live, drift, before, stepsAround })
    planned = { from: spec.version, fromVenv: live, db: null, installer: r.installer, installChange: r.installChange, rebuilt: r.venv }
    return r.change
  }

  return {
    id,
    facts: () => [
      state,
      targetCode,
      activeCode,
      databaseSchemaFact,
      ...(install?.facts() ?? []),
      ...(liveContents ? [liveContents] : []),
      ...(spec.apt ? [spec.apt.source] : []),
    ],
    async plan(ctx) {
      const s = ctx.facts.get(state)
      const active = s.active
      const debVersion = spec.apt ? plannedDebVersion(spec.version, ctx.facts.get(spec.apt.source), active) : undefined // refuses an absent version before anything stops
      const linkTarget = s.link.kind === 'link' ? s.link.target : undefined
      const liveVenv =
        linkTarget === undefined ? undefined : linkTarget.startsWith('/') ? linkTarget : `${VENV_LINK.replace(/[^/]+$/, '')}${linkTarget}`
      const drift = (): LockDrift | undefined => {
        const venv = liveContents && spec.lock ? ctx.facts.get(liveContents) : null
        const d = venv ? lockDrift(spec.lock!, venv) : undefined
        return d && driftCount(d) ? d : undefined
      }
      if (spec.method === 'pip' && liveVenv && isVenvOf(liveVenv, spec.version) && active === spec.version) {
        const d = drift()
        return d ? rebuildPlan(ctx, s, liveVenv, d, []) : null
      }
      if (spec.method === 'apt' && active === spec.version) return null
      const steps: Step[] = []
      planned = { from: active, db: null, ...(debVersion ? { debVersion } : {}) }
      // Fresh host: nothing runs yet; install and link (the service resource starts it later).
      if (!active || (spec.method === 'pip' && s.link.kind === 'none')) {
        if (spec.method === 'apt') return null // the apt task installs it; nothing to order yet
        if (install) Object.assign(planned, { installer: install, installChange: (await install.plan(ctx)) ?? undefined })
        if (planned.installChange) steps.push({ kind: 'install', target, summary: planned.installChange.summary })
        steps.push({ kind: 'switch', target, summary: `link ${VENV_LINK} -> ${target}` })
        ctx.predicted.paths.add(VENV_LINK)
        return {
          resource: id,
          kind: 'virtualenv',
          action: 'create',
          summary: `install Synapse ${spec.version} side by side in ${target}, ${VENV_LINK} linked to it`,
          touches: [VENV_LINK],
          backupPaths: [],
          reach: 'anything',
          steps,
        }
      }
      // The old layout: the running code sits in a plain directory. Give it its versioned name first.
      if (spec.method === 'pip' && s.link.kind === 'dir') {
        steps.push({
          kind: 'adopt',
          target: versionedVenv(active),
          summary: `move the plain venv ${VENV_LINK} (${active}) to ${versionedVenv(active)} and link ${VENV_LINK} to it (the running code stays in place)`,
        })
        if (active === spec.version) {
          const d = drift()
          if (d)
            return rebuildPlan(
              ctx,
              { ...s, venvs: [...s.venvs, { path: versionedVenv(active), mtime: 0 }] },
              versionedVenv(active),
              d,
              steps,
            )
          return {
            resource: id,
            kind: 'virtualenv',
            action: 'update',
            summary: `move Synapse ${active} to the side-by-side layout`,
            touches: [VENV_LINK],
            backupPaths: [],
            reach: 'anything',
            steps,
          }
        }
      }
      planned.fromVenv = liveVenv && s.link.kind === 'link' ? liveVenv : versionedVenv(active)
      const dbFact = ctx.facts.get(databaseSchemaFact)
      if (isError(dbFact))
        throw new Error(`cannot read the database's schema version with ${VENV_LINK} and the live configuration: ${dbFact.error}`)
      planned.db = dbFact
      const haveTarget = ctx.facts.get(targetCode)
      const next = (haveTarget && !isError(haveTarget) ? haveTarget : undefined) ?? spec.controllerCode
      const prev = ctx.facts.get(activeCode)
      planned.previousCode = prev && !isError(prev) ? prev : undefined
      planned.next = next
      const downgrade = compareVersions(spec.version, active) < 0
      if (next) {
        const run = canRun(dbFact, next)
        if (!run.ok)
          throw new Error(
            `refusing ${downgrade ? 'the downgrade' : 'the switch'} ${active} -> ${spec.version}: ${run.reason}. Pin a version the database accepts${s.record?.backup ? `, or restore the backup ${s.record.backup}` : ''}.`,
          )
      }
      if (spec.method === 'pip') {
        if (install) Object.assign(planned, { installer: install, installChange: (await install.plan(ctx)) ?? undefined })
        if (planned.installChange) steps.push({ kind: 'install', target, summary: planned.installChange.summary })
        steps.push({
          kind: 'check-config',
          target,
          summary: `parse the live configuration with ${spec.version}'s code (${target}/bin/python -m synapse.config), main and every worker`,
        })
      }
      const change = next ? schemaChange(dbFact, next) : undefined
      const dump = dumpPath(spec.backupDir, active, spec.version, s.dumps)
      if (!change || change.changes || spec.method === 'apt') {
        const needKiB = Math.ceil((dbFact?.sizeBytes ?? 0) / 1024)
        if (change?.changes && needKiB > s.backupFreeKiB)
          throw new Error(
            `not enough space for the database dump before the schema migration: ${spec.backupDir} has ${s.backupFreeKiB} KiB free, the database is ${needKiB} KiB; free space or set synapse.backupDir`,
          )
        planned.dump = dump
        const why = change
          ? `${change.pending.length} schema delta(s) pending: ${change.pending.join(', ') || `schema_version ${dbFact?.version} -> ${next!.schemaVersion}`}`
          : undefined
        steps.push({
          kind: 'backup',
          target: dump,
          summary: `pg_dump -Fc (without e2e_one_time_keys_json data) to ${dump}, and the signing key to ${dump.replace(/\.dump$/, '.signing.key')}${why ? ` (${why})` : ''}`,
          ...(!change
            ? {
                uncertain:
                  spec.method === 'apt'
                    ? "the package's schema is known only once it is unpacked: dumped before every apt upgrade"
                    : "the new code's schema is known only once its venv is installed: skipped if no delta is pending",
              }
            : {}),
        })
      }
      const window = next && planned.previousCode ? rollbackWindow(dbFact, planned.previousCode, next) : undefined
      if (spec.method === 'pip')
        steps.push(
          ...stepsAround(active, [
            {
              kind: 'switch',
              target,
              summary: `switch ${VENV_LINK} -> ${target} (one atomic rename; ${planned.fromVenv} stays for rollback)`,
            },
          ]),
        )
      else
        steps.push(
          ...stepsAround(active, [
            {
              kind: 'apt-install',
              target: `${SYNAPSE_PACKAGE} ${debVersion}`,
              summary: `install ${SYNAPSE_PACKAGE}=${debVersion} (was ${active}) and hold it there; its postinst does not restart main (a policy-rc.d guard for this one apt run): main keeps serving ${active} until the restart below`,
            },
          ]),
        )
      if (spec.method === 'pip') {
        const venvs = [...s.venvs.filter((v) => v.path !== target), { path: target, mtime: Infinity }].sort((a, b) => b.mtime - a.mtime)
        if (s.link.kind === 'dir' && !venvs.some((v) => v.path === versionedVenv(active)))
          venvs.splice(1, 0, { path: versionedVenv(active), mtime: 0 })
        const prune = venvsToPrune(venvs, target, planned.fromVenv, spec.keepVenvs)
        if (prune.length)
          steps.push({
            kind: 'prune',
            target: prune.join(' '),
            summary: `remove ${prune.join(', ')} (keep ${spec.keepVenvs} venvs: synapse.keepVenvs)`,
          })
      }
      ctx.predicted.paths.add(VENV_LINK)
      return {
        resource: id,
        kind: 'virtualenv',
        backupPaths: [],
        reach: 'anything',
        action: 'update',
        summary: `${downgrade ? 'downgrade' : 'upgrade'} Synapse ${active} -> ${spec.version}${spec.method === 'pip' ? ` side by side in ${target}` : ' (apt)'}${window ? `; rollback window: ${window.reason}` : ''}`,
        touches: [VENV_LINK],
        steps,
        ...(steps.some((x) => x.uncertain) ? { uncertain: steps.find((x) => x.uncertain)!.uncertain } : {}),
      }
    },
    async apply(change, ctx) {
      const run = new StepRunner(ctx.conn, change)
      const steps = change.steps ?? []
      const switchedAt = steps.findIndex((x) => x.kind === 'switch' || x.kind === 'apt-install')
      let i = 0
      try {
        for (; i < steps.length; i++) await run.step(steps[i]!, () => doStep(steps[i]!, ctx))
      } catch (error) {
        // Before the switch nothing running was touched (a stopped worker is started again).
        const message = error instanceof Error ? error.message : String(error)
        if (switchedAt < 0 || i < switchedAt || change.action === 'create') {
          const stillStopped: string[] = []
          for (const x of steps.slice(0, i).filter((y) => y.kind === 'stop')) {
            const c = x.host === undefined ? ctx.conn : await peerOf(ctx, x.host).catch(() => undefined)
            const r = await c?.run(sh`systemctl start ${x.target}`, { allowFailure: true })
            if (r?.code !== 0) stillStopped.push(`${x.target}${x.host === undefined ? '' : ` on ${x.host}`}`)
          }
          // A worker that did not start again is a change to what runs: say so instead of "nothing changed".
          if (stillStopped.length)
            throw new Error(`${message}; could not start ${stillStopped.join(', ')} again (see journalctl)`, { cause: error })
          if (planned.rebuilt && i < switchedAt)
            throw await rebuildFailedBeforeSwitch(ctx.conn, message, planned as Required<Pick<Planned, 'from' | 'fromVenv' | 'rebuilt'>>)
          throw new Error(
            `${message}${i < switchedAt ? `; nothing running was changed (Synapse ${planned.from ?? ''} keeps serving)` : ''}`,
          )
        }
        if (spec.method === 'apt' && steps[i]?.kind === 'apt-install' && planned.from)
          throw new Error(
            await afterFailedInstall(ctx.conn, {
              message,
              from: planned.from,
              debVersion: planned.debVersion!,
              dump: planned.dump,
              stopped: steps.slice(0, i).filter((y) => y.kind === 'stop'),
              runner: run.withRollback(),
              peer: (h) => peerOf(ctx, h),
            }),
            { cause: error },
          )
        if (spec.method !== 'pip' || !planned.from)
          throw new Error(`${message}; the apt method cannot roll back by itself${planned.dump ? `; the backup is ${planned.dump}` : ''}`)
        // The newer code served once main answered /health (workers and clients may have written since).
        const served = steps.slice(0, i).some((x) => x.kind === 'wait-health')
        const back = await rollBack(ctx.conn, spec, versionOfVenv(planned.fromVenv ?? versionedVenv(planned.from)), run, planned.dump, {
          served,
          consent: false,
          ...(planned.db ? { before: planned.db } : {}),
        })
        const remote = (spec.remoteWorkers ?? []).filter((r) => r.units.length).map((r) => r.host)
        const what = planned.rebuilt
          ? `switching Synapse ${spec.version} to the rebuilt ${planned.rebuilt}`
          : `upgrade ${planned.from} -> ${spec.version}`
        throw new Error(
          `${what} failed: ${message}; ${back}${remote.length ? `; the workers on ${remote.join(', ')} stay stopped until a run succeeds` : ''}`,
        )
      }
    },
  }
}

export type { FactValues }
export { venvsToPrune }
