import type { Fact, FactValues } from '../facts/fact.js'
import { gatherFacts, prepareProbe } from '../facts/probe.js'
import { debPackages } from '../facts/packages.js'
import { freeDiskMiB, memoryMiB, osRelease } from '../facts/system.js'
import type { HostSpec, Inventory, Role } from '../inventory/types.js'
import { needsDaemonReload } from '../resources/file.js'
import { Prediction, type ApplyTogether, type Change, type Resource, type RestartTarget } from '../resources/resource.js'
import { isServiceResource } from '../resources/systemd-service.js'
import { maskSecrets } from '../core/secret.js'
import type { Connection } from '../ssh/connection.js'
import { sh } from '../core/shell.js'
import {
  HostSecrets,
  hostOwnership,
  hostRecordResources,
  pendingRestarts,
  storedSecrets,
  type AdoptedSettings,
  type HostOwnership,
} from './host-state.js'
import { withAdoptedSettings } from './adopted-settings.js'
import { isOurs, notBuiltByHand } from './ownership.js'
import { acquireLock, type HostLock } from './lock.js'
import type { AdoptionReport, HostReport, TaskReport } from './report-types.js'
import { RestartLedger } from './restarts.js'
import { StaleFacts } from './stale-facts.js'
import { BatchedWrites } from './batched-writes.js'
import type { AfterCheck, AfterCheckContext, BeforeCheck, CheckResult, Task, TaskContext, TaskName, TaskOnHost } from './task.js'

/** Facts every host needs before its tasks can even be built: one round trip. */
export const BASE_FACTS = [osRelease, memoryMiB, freeDiskMiB('/'), debPackages, pendingRestarts, storedSecrets, hostOwnership]

export type Mode = 'apply' | 'dry-run' | 'check'

/**
 * How `provision adopt` takes over a server built by hand, handed in by that verb (the engine knows no
 * verb): the facts it reads, and from them what is kept, refused and done before the role tasks.
 */
export interface AdoptionHook {
  facts: Fact<unknown>[]
  analyze(facts: FactValues, host: HostSpec, inventoryFile: string): AdoptionPlan
}

export interface AdoptionPlan {
  report: AdoptionReport
  /** What cannot be adopted safely: the host is refused as a whole, nothing changed. */
  refusals: string[]
  adopted: AdoptedSettings
  /** The server's own secrets, stored under the inventory's `{ generate: true }` names. */
  secrets: { name: string; value: string }[]
  /** The step that runs before the role tasks (backup of the files, secrets, host record, retirements). */
  task(secrets: HostSecrets, ownership: HostOwnership, today: string): Task<'adopt'>
}

export interface HostRunOptions {
  mode: Mode
  tasks: Task[]
  inventory: Inventory
  /** Progress callback: "task synapse: install matrix-synapse" */
  onEvent?: (event: { host: string; task?: string; message: string }) => void
  /** Apply: wait for tasks of other hosts a task needs; resolves with why they will not be there. */
  awaitNeeds?: (needs: TaskOnHost[], task: Role) => Promise<string | undefined>
  /** Apply: the connection of another host of the run (ApplyContext.peer). */
  peer?: (host: string) => Promise<Connection>
  /** Apply: a task ended, for the hosts that wait for it. */
  onTaskDone?: (task: Role, ok: boolean) => void
  /** --wait: seconds every after-check may wait for a service, instead of its own default after a restart (and 0 otherwise). */
  waitS?: number
  /** `provision adopt`: take over a Synapse built by hand before the role tasks run. */
  adoption?: AdoptionHook
  /** The caller holds this host's lock already (restore applies the inventory inside its own lock). */
  lockHeld?: boolean
}

interface PreparedTask {
  task: Task<TaskName>
  resources: Resource[]
  checks: CheckResult[]
}

const errorText = (e: unknown) => maskSecrets(e instanceof Error ? e.message : String(e))

/**
 * Plan or apply the tasks of one host over an open connection. Never throws: every failure becomes
 * part of the host's report, so one host failing never stops the others.
 */
export async function runHost(inventoryHost: HostSpec, conn: Connection, options: HostRunOptions): Promise<HostReport> {
  const started = Date.now()
  let host = inventoryHost
  const report: HostReport = { host: host.name, status: 'ok', tasks: [], warnings: [], durationMs: 0 }
  const emit = (message: string, task?: string) => options.onEvent?.({ host: host.name, task, message })
  let lock: HostLock | undefined
  try {
    // Apply reads the base facts inside the lock's round trip; plans and checks take no lock.
    if (options.mode === 'apply' && !options.lockHeld) lock = await acquireLock(conn, { then: prepareProbe(BASE_FACTS) })
    const facts = lock?.facts ?? (await gatherFacts(conn, BASE_FACTS))
    // Under the lock, the probes before the plan ride on its channel (apply's later re-reads follow its queued writes).
    const gather = (more: Fact<unknown>[]) => (lock ? lock.gather(more, facts) : gatherFacts(conn, more, facts))
    const ownership = facts.get(hostOwnership)
    const stored = facts.get(storedSecrets)
    const today = new Date().toISOString().slice(0, 10)
    // An adopted server keeps its signing key, media store and unnamed settings (the host records them).
    host = withAdoptedSettings(host, ownership.record?.adopted)
    let adoption: AdoptionPlan | undefined
    if (options.adoption && isOurs(ownership)) {
      report.warnings.push(
        ownership.record?.origin === 'adopted'
          ? `adopted by matrix-provision on ${ownership.record.since}: nothing left to take over; this is a plain run`
          : 'set up by matrix-provision: there is nothing to adopt; this is a plain run',
      )
    } else if (options.adoption) {
      await gather(options.adoption.facts)
      adoption = options.adoption.analyze(facts, host, options.inventory.file)
      report.adoption = adoption.report
      if (adoption.refusals.length) {
        // Nothing was changed: what cannot be adopted safely is refused as a whole, in the dry run too.
        report.status = 'failed'
        report.error = `cannot adopt this host:\n${adoption.refusals.map((r) => `- ${r}`).join('\n')}`
        return report
      }
      host = withAdoptedSettings(host, adoption.adopted)
      for (const s of adoption.secrets) stored.set(s.name, s.value)
    }
    const secrets = new HostSecrets(stored)
    const ctx: TaskContext = {
      host,
      inventory: options.inventory,
      os: facts.get(osRelease),
      facts,
      secret: (v) => secrets.resolve(v),
      hostByName: (name) => {
        const h = options.inventory.hosts.find((x) => x.name === name)
        if (!h) throw new Error(`no host named ${name} in the inventory`)
        return h
      },
    }
    const prepared: PreparedTask[] = []
    if (adoption) {
      const task = adoption.task(secrets, ownership, today)
      prepared.push({ task, resources: await task.resources(ctx), checks: [] })
    }
    for (const task of options.tasks.filter((t) => host.roles.includes(t.name))) {
      const resources = await task.resources(ctx)
      // The first change a run makes to a host marks it as the tool's (kept as it is once written).
      const record =
        prepared.length === 0 ? hostRecordResources(ownership, { managedBy: 'matrix-provision', origin: 'provisioned', since: today }) : []
      prepared.push({ task, resources: [...record, ...secrets.takeResources(), ...resources], checks: [] })
    }
    // One more round trip: the facts of every resource and before-check of every task.
    const guard: BeforeCheck[] = adoption ? [] : notBuiltByHand(ownership, { inventory: options.inventory.file, host: host.name })
    const beforeChecks = prepared.map((p, i) => [...(i === 0 ? guard : []), ...(p.task.before?.(ctx) ?? [])])
    await gather([...prepared.flatMap((p) => p.resources.flatMap((r) => r.facts())), ...beforeChecks.flat().flatMap((c) => c.facts ?? [])])
    let refused = false
    for (const [i, p] of prepared.entries()) {
      for (const check of beforeChecks[i]!) {
        const outcome = await check.evaluate(facts)
        p.checks.push({ name: check.name, phase: 'before', ...outcome })
        if (!outcome.ok && !outcome.warning) refused = true
        if (outcome.warning && !report.warnings.includes(outcome.detail)) report.warnings.push(outcome.detail)
      }
    }
    if (refused) {
      // Nothing was changed: a target that does not fit is refused as a whole, in the dry run too.
      for (const p of prepared)
        report.tasks.push({
          task: p.task.name,
          status: p.checks.some((c) => !c.ok && !c.warning) ? 'failed' : 'skipped',
          changes: [],
          restarts: [],
          checks: p.checks,
          durationMs: 0,
        })
      report.status = 'failed'
      report.error = prepared
        .flatMap((p) => p.checks.filter((c) => !c.ok && !c.warning).map((c) => `${p.task.name}: ${c.detail}`))
        .join('\n')
      return report
    }
    const targets: RestartTarget[][] = prepared.map((p) => p.resources.filter(isServiceResource).map((r) => r.restartTarget))
    if (options.mode === 'apply') await applyTasks(conn, prepared, targets, facts, report, emit, ctx, options)
    else await planTasks(conn, prepared, targets, facts, report, options.mode, ctx, options.waitS)
  } catch (error) {
    report.status = 'failed'
    report.error = errorText(error)
  } finally {
    await lock?.release().catch(() => undefined)
    report.durationMs = Date.now() - started
  }
  return report
}

/**
 * A task's after-checks, side by side (they only read: sixteen workers' /health and units are one
 * round trip's time, not sixteen), reported in their declared order.
 */
async function runAfterChecks(checks: AfterCheck[], conn: Connection, checkCtx: AfterCheckContext): Promise<CheckResult[]> {
  const outcomes = await Promise.all(checks.map((check) => check.run(conn, checkCtx)))
  return checks.map((check, i) => ({ name: check.name, phase: 'after', ...outcomes[i]! }))
}

/** Dry run and check: plan every task against the facts and the predictions of the changes before it. */
async function planTasks(
  conn: Connection,
  prepared: PreparedTask[],
  targets: RestartTarget[][],
  facts: FactValues,
  report: HostReport,
  mode: Mode,
  ctx: TaskContext,
  waitS?: number,
) {
  // check is read-only and restarts nothing: a service that does not answer now fails its check now.
  const checkCtx: AfterCheckContext = { waitS: () => waitS ?? 0 }
  const predicted = new Prediction()
  // The same ledger as apply, fed by planned changes: it predicts restarts without touching the host.
  const ledger = new RestartLedger(conn, targets, facts.get(pendingRestarts))
  for (const p of prepared) {
    const t0 = Date.now()
    const tr: TaskReport = { task: p.task.name, status: 'ok', changes: [], restarts: [], checks: [...p.checks], durationMs: 0 }
    try {
      for (const r of p.resources) {
        const change = await r.plan({ conn, facts, predicted, dryRun: true })
        if (!change) continue
        facts.merge(predicted.factsAfter) // later resources plan against the state this change leaves
        tr.changes.push(change)
        ledger.noteChange(change)
        ledger.applied(change)
      }
      // As apply settles them: the due units of this task and of earlier ones.
      tr.restarts = ledger.takePlanned(ledger.unitsSettledAfter(prepared.indexOf(p)))
      if (p === prepared.at(-1)) tr.restarts.push(...ledger.takePlanned(ledger.unitsLeft()))
      if (mode === 'check') tr.checks.push(...(await runAfterChecks(p.task.after?.(ctx) ?? [], conn, checkCtx)))
      tr.status = tr.checks.some((c) => !c.ok && !c.warning) ? 'failed' : tr.changes.length ? 'changed' : 'ok'
    } catch (error) {
      tr.status = 'failed'
      tr.error = errorText(error)
      tr.restarts = []
    }
    tr.durationMs = Date.now() - t0
    report.tasks.push(tr)
    if (tr.status === 'failed' && mode === 'check') report.status = 'failed'
    else if (tr.status === 'failed') {
      // As apply would: later tasks depend on this one, so they are not planned on a wrong basis.
      report.status = 'failed'
      report.error = `task ${p.task.name} failed: ${tr.error ?? 'checks failed'}`
      for (const rest of prepared.slice(prepared.indexOf(p) + 1))
        report.tasks.push({ task: rest.task.name, status: 'skipped', changes: [], restarts: [], checks: [], durationMs: 0 })
      return
    }
    if (tr.status === 'changed' && report.status === 'ok') report.status = 'changed'
  }
}

/** Apply: each task's changes in order, its restarts once at its end, then its after-checks. */
async function applyTasks(
  hostConn: Connection,
  prepared: PreparedTask[],
  targets: RestartTarget[][],
  facts: FactValues,
  report: HostReport,
  emit: (m: string, t?: string) => void,
  ctx: TaskContext,
  options: Pick<HostRunOptions, 'awaitNeeds' | 'onTaskDone' | 'waitS' | 'peer'>,
) {
  const conn = new BatchedWrites(hostConn) // consecutive file writes share one round trip
  const ledger = new RestartLedger(conn, targets, facts.get(pendingRestarts))
  await ledger.loadInherited()
  const state = { aptListsStale: false }
  const stale = new StaleFacts() // facts gathered before an applied change may no longer describe the host
  for (const p of prepared) {
    const t0 = Date.now()
    const tr: TaskReport = { task: p.task.name, status: 'ok', changes: [], restarts: [], checks: [...p.checks], durationMs: 0 }
    report.tasks.push(tr)
    // Changes whose file writes are still queued: reported as applied only once the batch is sent.
    const unsent: { change: Change; batch: number }[] = []
    try {
      const needs = p.task.needs?.(ctx) ?? []
      const unmet = needs.length && options.awaitNeeds && p.task.name !== 'adopt' ? await options.awaitNeeds(needs, p.task.name) : undefined
      if (unmet) throw new Error(`needs ${unmet}`)
      emit('planning', p.task.name)
      /** The bookkeeping after a change reached the host, in the plan's order. */
      const recordApplied = async (change: Change) => {
        tr.changes.push(change)
        if (conn.queued) unsent.push({ change, batch: conn.sentBatches })
        stale.noteApplied(change)
        if (change.touches.some(needsDaemonReload)) await conn.run(sh`systemctl daemon-reload`)
        ledger.applied(change)
      }
      // Changes of consecutive resources that go to the host together (Resource.together): planned
      // against the facts before any of them, which they do not alter for each other.
      let together: { key: string; run: ApplyTogether; changes: Change[] } | undefined
      const sendTogether = async () => {
        if (!together) return
        const { run, changes } = together
        together = undefined
        const failed = await run.apply(changes, { conn, state })
        for (const change of changes) if (!failed.has(change)) await recordApplied(change)
        if (failed.size) throw new Error([...failed].map(([c, why]) => `${c.summary}: ${why}`).join('\n'))
      }
      for (const r of p.resources) {
        if (together && r.together?.key !== together.key) await sendTogether()
        let current = facts
        if (stale.affects(r.facts())) current = await gatherFacts(conn, r.facts())
        const change = await r.plan({ conn, facts: current, predicted: new Prediction(), dryRun: false })
        if (!change) continue
        emit(change.summary, p.task.name)
        await ledger.beforeChange(change)
        if (r.together) {
          together ??= { key: r.together.key, run: r.together, changes: [] }
          together.changes.push(change)
          continue
        }
        try {
          await r.apply(change, { conn, state, ...(options.peer ? { peer: options.peer } : {}) })
        } catch (error) {
          // An ordered procedure that failed part-way stays in the report with the steps it did.
          if (change.performed?.length) tr.changes.push(change)
          throw error
        }
        await recordApplied(change)
      }
      await sendTogether()
      await conn.flush()
      // Settle the due units of this task and of earlier ones (an Element vhost reloads Apache before
      // Element's after-checks look at it); a later task's unit waits for its task, as the plan says.
      tr.restarts = await ledger.perform(ledger.unitsSettledAfter(prepared.indexOf(p)))
      if (p === prepared.at(-1)) tr.restarts.push(...(await ledger.perform(ledger.unitsLeft())))
      for (const rs of tr.restarts) emit(`${rs.action}ed ${rs.unit}`, p.task.name)
      // Services restarted or started by this run (here or in an earlier task) may still be coming up.
      const settling = report.tasks.some((t) => t.restarts.length > 0 || t.changes.length > 0)
      const checkCtx: AfterCheckContext = { waitS: (defaultS) => options.waitS ?? (settling ? defaultS : 0) }
      tr.checks.push(...(await runAfterChecks(p.task.after?.(ctx) ?? [], conn, checkCtx)))
      const failed = tr.checks.filter((c) => c.phase === 'after' && !c.ok && !c.warning)
      if (failed.length) throw new Error(`after-checks failed: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}`)
      tr.status = tr.changes.length || tr.restarts.length ? 'changed' : 'ok'
    } catch (error) {
      tr.status = 'failed'
      tr.error = errorText(error)
      // Writes queued before the failure still go out: they were applied as far as this run is concerned.
      await conn.flush().catch((e: unknown) => (tr.error += `\n${errorText(e)}`))
      const lost = unsent.filter((u) => u.batch === conn.sentBatches).map((u) => u.change)
      if (lost.length) {
        tr.changes = tr.changes.filter((c) => !lost.includes(c))
        tr.error += `\nnot applied (their writes did not reach the host): ${lost.map((c) => c.summary).join('; ')}`
      }
    }
    tr.durationMs = Date.now() - t0
    if (p.task.name !== 'adopt') options.onTaskDone?.(p.task.name, tr.status !== 'failed')
    if (tr.status === 'failed') {
      report.status = 'failed'
      report.error = `task ${p.task.name} failed: ${tr.error}`
      // Later tasks depend on earlier ones: stop this host here. Pending restarts stay recorded on the host.
      for (const rest of prepared.slice(prepared.indexOf(p) + 1))
        report.tasks.push({ task: rest.task.name, status: 'skipped', changes: [], restarts: [], checks: [], durationMs: 0 })
      return
    }
    if (tr.status === 'changed' && report.status === 'ok') report.status = 'changed'
  }
}
