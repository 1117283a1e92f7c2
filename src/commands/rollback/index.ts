import { acquireLock } from '../../engine/lock.js'
import type { HostSpec, Inventory } from '../../inventory/types.js'
import type { Change } from '../../resources/resource.js'
import type { Connection } from '../../ssh/connection.js'
import { releaseSpec } from '../../../tasks/synapse/index.js'
import { rollBackTo } from '../../../tasks/synapse/rollback.js'
import { describe } from '../../../tasks/synapse/release/steps.js'
import { readRecord, StepRunner, versionOfVenv } from '../../../tasks/synapse/switch.js'
import { VENV_LINK } from '../../synapse/paths.js'

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
 * `provision rollback`: back to the venv the last switch left, as the database allows (rollbackDecision
 * in tasks/synapse/rollback.ts): a plain switch when the older code can run on it as it is; else, with
 * `restoreDump` (the operator's consent to lose the writes since the upgrade), the pre-upgrade dump
 * restored first; else refused, naming the dump and what to do.
 */
export async function rollbackHost(
  host: HostSpec,
  inventory: Inventory,
  conn: Connection,
  options: { restoreDump?: boolean } = {},
): Promise<RollbackReport> {
  if (!host.roles.includes('synapse')) return { host: host.name, ok: false, message: `${host.name} has no synapse role` }
  if (host.vars.synapse.install !== 'pip')
    return {
      host: host.name,
      ok: false,
      message: 'rollback switches venvs: it needs synapse.install pip (for apt, pin the previous package version; see README "Upgrading")',
    }
  const lock = await acquireLock(conn)
  try {
    const record = await readRecord(conn)
    if (!record?.previous)
      return {
        host: host.name,
        ok: false,
        message: `no earlier version recorded on ${host.name} (${VENV_LINK} was never switched by an upgrade)`,
      }
    const from = versionOfVenv(record.active)
    const to = versionOfVenv(record.previous)
    const change: Change = {
      resource: `synapse-release:${VENV_LINK}`,
      kind: 'virtualenv',
      backupPaths: [],
      reach: 'anything',
      action: 'update',
      summary: `roll back Synapse ${from} -> ${to}`,
      touches: [VENV_LINK],
    }
    const spec = releaseSpec(host, inventory, to)
    const remote = (spec.remoteWorkers ?? []).map((r) => r.host)
    // The worker hosts' venvs would stay on the new code: refused rather than half done.
    if (remote.length)
      return {
        host: host.name,
        ok: false,
        message: `the workers of ${host.name} also run on ${remote.join(', ')}: provision rollback switches one host's venv, so it is not done for a homeserver spread over hosts (README, "Workers on other hosts")`,
      }
    // The newer code ran since the switch: it may have taken writes, so a restore needs consent.
    const outcome = await rollBackTo({ conn, state: { aptListsStale: false } }, spec, to, new StepRunner(conn, change), record.backup, {
      served: true,
      consent: options.restoreDump === true,
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
    await lock.release().catch(() => undefined)
  }
}
