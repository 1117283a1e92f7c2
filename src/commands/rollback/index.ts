import { acquireLock } from '../../engine/lock.js'
import type { HostSpec, Inventory } from '../../inventory/types.js'
import type { Change } from '../../resources/resource.js'
import type { Connection } from '../../ssh/connection.js'
import { aptMethod, releaseSpec } from '../../../tasks/synapse/index.js'
import { aptRollBack } from '../../../tasks/synapse/apt-rollback.js'
import { rollBackTo } from '../../../tasks/synapse/rollback.js'
import { describe } from '../../../tasks/synapse/release/steps.js'
import { readRecord, StepRunner, versionOfVenv } from '../../../tasks/synapse/switch.js'
import { VENV_LINK } from '../../synapse/paths.js'
import { SYNAPSE_PACKAGE } from '../../../tasks/synapse/apt-package.js'

export interface RollbackReport {
  host: string
  ok: boolean
  from?: string
  to?: string
  message: string
  /** What the database allowed: a plain switch, a restore of the pre-upgrade dump first, or a refusal. */
  decision?: 'switch' | 'restore' | 'refuse'
  /** The steps done, in the upgrade's order (stop workers -> switch back -> start main -> /health -> workers). */
  change?: Change
}

/**
 * `provision rollback`: back to the version the last change replaced, as the database allows
 * (rollbackDecision in tasks/synapse/rollback.ts): a plain switch when the older code can run on it as
 * it is; else, with `restoreDump` (the operator's consent to lose the writes since the upgrade), the
 * pre-upgrade dump restored first; else refused, naming the dump and what to do. pip switches back to
 * the previous venv; apt installs the previous package version again (tasks/synapse/apt-rollback.ts).
 * `dryRun` decides and reports the steps without changing anything (and without the host lock).
 */
export async function rollbackHost(
  host: HostSpec,
  inventory: Inventory,
  conn: Connection,
  options: { restoreDump?: boolean; dryRun?: boolean } = {},
): Promise<RollbackReport> {
  if (!host.roles.includes('synapse')) return { host: host.name, ok: false, message: `${host.name} has no synapse role` }
  const apt = host.vars.synapse.install === 'apt'
  const lock = options.dryRun ? undefined : await acquireLock(conn)
  try {
    const record = await readRecord(conn)
    if (!record?.previous || (record.method === 'apt') !== apt)
      return {
        host: host.name,
        ok: false,
        message: `no earlier version recorded on ${host.name} (${apt ? `${SYNAPSE_PACKAGE} was never changed by an upgrade of this tool` : `${VENV_LINK} was never switched by an upgrade`})`,
      }
    const from = apt ? record.active : versionOfVenv(record.active)
    const to = apt ? record.previous : versionOfVenv(record.previous)
    const change: Change = {
      resource: `synapse-release:${VENV_LINK}`,
      kind: 'virtualenv',
      backupPaths: [],
      reach: 'anything',
      action: 'update',
      summary: `roll back Synapse ${from} -> ${to}`,
      touches: [VENV_LINK],
    }
    const spec = { ...releaseSpec(host, inventory, to), ...(apt ? { apt: aptMethod() } : {}) }
    const remote = (spec.remoteWorkers ?? []).map((r) => r.host)
    // The worker hosts' venvs would stay on the new code: refused rather than half done.
    if (remote.length)
      return {
        host: host.name,
        ok: false,
        message: `the workers of ${host.name} also run on ${remote.join(', ')}: provision rollback changes one host's Synapse, so it is not done for a homeserver spread over hosts (README, "Workers on other hosts")`,
      }
    const ctx = { conn, state: { aptListsStale: false } }
    const runner = new StepRunner(conn, change)
    const consent = options.restoreDump === true
    const dryRun = options.dryRun === true
    // The newer code ran since the switch: it may have taken writes, so a restore needs consent.
    const outcome = apt
      ? await aptRollBack(ctx, spec, { ...record, previous: record.previous }, runner, { consent, dryRun })
      : await rollBackTo(ctx, spec, to, runner, record.backup, {
          served: true,
          consent,
          dryRun,
          ...(record.before ? { before: record.before } : {}),
          ...(record.switchedAt ? { since: record.switchedAt } : {}),
        })
    // The steps decided, as planned (`performed` holds them as done, in the same order: the executor runs exactly these).
    if (outcome.steps.length) change.steps = outcome.steps.map(describe)
    change.summary +=
      outcome.decision.action === 'restore'
        ? ` after restoring ${outcome.decision.dump}`
        : outcome.decision.action === 'switch'
          ? ' (plain switch)'
          : ' (refused)'
    return { host: host.name, ok: outcome.ok, from, to, message: outcome.message, decision: outcome.decision.action, change }
  } finally {
    await lock?.release().catch(() => undefined)
  }
}
