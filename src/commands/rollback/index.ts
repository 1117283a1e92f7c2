import { acquireLock } from '../../engine/lock.js'
import type { HostSpec, Inventory } from '../../inventory/types.js'
import type { Change } from '../../resources/resource.js'
import type { Connection } from '../../ssh/connection.js'
import { releaseSpec } from '../../../tasks/synapse/index.js'
import { readRecord, rollBackTo, StepRunner, VENV_LINK, versionOfVenv } from '../../../tasks/synapse/release.js'

export interface RollbackReport {
  host: string
  ok: boolean
  from?: string
  to?: string
  message: string
  /** The steps done, in the upgrade's order (stop workers -> switch back -> start main -> /health -> workers). */
  change?: Change
}

/**
 * `provision rollback`: back to the venv the last switch left, when the database schema still accepts
 * that code (Synapse's schema_compat_version rule); otherwise refuse and name the backup.
 */
export async function rollbackHost(host: HostSpec, inventory: Inventory, conn: Connection): Promise<RollbackReport> {
  if (!host.roles.includes('synapse')) return { host: host.name, ok: false, message: `${host.name} has no synapse role` }
  if (host.vars.synapse.install !== 'pip') return { host: host.name, ok: false, message: 'rollback switches venvs: it needs synapse.install pip (for apt, pin the previous package version; see README "Upgrading")' }
  const lock = await acquireLock(conn)
  try {
    const record = await readRecord(conn)
    if (!record?.previous) return { host: host.name, ok: false, message: `no earlier version recorded on ${host.name} (${VENV_LINK} was never switched by an upgrade)` }
    const from = versionOfVenv(record.active)
    const to = versionOfVenv(record.previous)
    const change: Change = { resource: `synapse-release:${VENV_LINK}`, kind: 'virtualenv', backupPaths: [], reach: 'anything', action: 'update', summary: `roll back Synapse ${from} -> ${to}`, touches: [VENV_LINK] }
    const spec = releaseSpec(host, inventory, to)
    const remote = (spec.remoteWorkers ?? []).map((r) => r.host)
    // The worker hosts' venvs would stay on the new code: refused rather than half done.
    if (remote.length) return { host: host.name, ok: false, message: `the workers of ${host.name} also run on ${remote.join(', ')}: provision rollback switches one host's venv, so it is not done for a homeserver spread over hosts (README, "Workers on other hosts")` }
    const outcome = await rollBackTo(conn, spec, to, new StepRunner(conn, change), record.backup)
    return { host: host.name, ok: outcome.ok, from, to, message: outcome.message, change }
  } finally {
    await lock.release().catch(() => undefined)
  }
}
