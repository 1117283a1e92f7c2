/**
 * Which Synapse the restored database first runs on. A backup of the version the inventory pins is
 * restored as it is; one of an older version X is restored onto X (installed side by side, started so
 * that its own code reads the schema it wrote), and then upgraded to the inventory's version by the
 * release procedure (pre-upgrade dump, workers stopped, switch, main migrates, workers), in one plan.
 * A newer one is refused: Synapse never runs a database on code older than its schema.
 */
import { dirname, join } from 'node:path'
import { wheelhouseDirName } from '../../artifacts/wheelhouse.js'
import { gatherFacts } from '../../facts/probe.js'
import { pythonVersion } from '../../facts/system.js'
import { readLock, readWheelhouseManifest } from '../../inventory/controller-files.js'
import type { HostSpec, Inventory } from '../../inventory/types.js'
import type { InstalledSynapse } from '../../resources/homeserver-state.js'
import { pythonVirtualenv } from '../../resources/python-venv.js'
import type { Task } from '../../engine/task.js'
import { versionedVenv } from '../../synapse/paths.js'
import type { Connection } from '../../ssh/connection.js'
import { compareReleases, compareVersions, minimumPostgresFor } from '../../synapse/compat.js'
import { LockError, type SynapseLock } from '../../synapse/lock/lock-file.js'
import { aptCandidate, aptSourceFact } from '../../../tasks/synapse/apt-package.js'
import { RestoreRefused } from './restore-types.js'

export type RestoreRoute = { kind: 'same'; version: string } | { kind: 'older'; from: string; to: string }

/**
 * The route from the backup's Synapse to the inventory's (the pinned version, else what the host runs:
 * apt without a pin). Refused: a host not yet at the inventory's version, a backup newer than it.
 */
export function restoreRoute(
  backup: { version: string; schemaVersion: number },
  installed: InstalledSynapse,
  pinned: string | undefined,
  host: string,
): RestoreRoute {
  if (pinned && pinned !== installed.version)
    throw new RestoreRefused(
      `${host} runs Synapse ${installed.version}, the inventory pins ${pinned}: provision ${host} from the inventory first (provision --inventory FILE --limit ${host}), then restore`,
    )
  const to = pinned ?? installed.version
  if (compareReleases(backup.version, to) > 0)
    throw new RestoreRefused(
      `the backup was taken with Synapse ${backup.version}, newer than the inventory's ${to}: its database may hold schema changes ${to} does not know, and Synapse never runs a database on older code. Set synapse.version to "${backup.version}" or newer in the inventory, provision ${host}, then restore`,
    )
  if (backup.schemaVersion > installed.schemaVersion)
    throw new RestoreRefused(
      `the backup's database has schema version ${backup.schemaVersion} (Synapse ${backup.version}), newer than Synapse ${installed.version} on ${host} knows (${installed.schemaVersion}): it cannot run on it. Set synapse.version to a release that knows schema ${backup.schemaVersion} in the inventory, provision ${host}, then restore`,
    )
  return compareReleases(backup.version, to) === 0 ? { kind: 'same', version: to } : { kind: 'older', from: backup.version, to }
}

/** Whether a lock's Python range (">=3.10", ">=3.9,<3.13") covers a host's Python ("3.11"). */
export function pythonCovers(range: string, python: string): boolean {
  return range
    .split(',')
    .map((c) => c.trim())
    .filter(Boolean)
    .every((c) => {
      const m = /^(>=|<=|==|!=|~=|>|<)\s*([\d.]+)(\.\*)?$/.exec(c)
      if (!m) return true
      const d = compareVersions(`${python}.0`.split('.').slice(0, 3).join('.'), `${m[2]}.0`.split('.').slice(0, 3).join('.'))
      switch (m[1]) {
        case '>=':
        case '~=':
          return d >= 0
        case '>':
          return d > 0
        case '<':
          return d < 0
        case '<=':
          return d <= 0
        case '==':
          return m[3] ? python.startsWith(`${m[2]}.`) || python === m[2] : d === 0
        default:
          return d !== 0
      }
    })
}

/** How the older Synapse gets onto the homeserver's hosts: its lock and wheelhouse (pip), or the repository's Debian version (apt). */
export type OlderRelease =
  | { method: 'pip'; version: string; lock: SynapseLock; wheelhouse?: string; source: string }
  | { method: 'apt'; version: string; debVersion: string; source: string }

/**
 * Can the backup's older version run here? Read only, before anything changes: PostgreSQL new enough
 * for it; pip: its lock (and its wheelhouse beside the inventory's) and every host's Python in the
 * lock's range; apt: the repository offers it for this system. A refusal says what to do.
 */
export async function olderReleaseFits(o: {
  host: HostSpec
  version: string
  inventoryFile: string
  postgresMajor: number
  /** The homeserver's hosts (main and worker hosts), each with its connection. */
  hosts: { name: string; conn: Connection }[]
}): Promise<OlderRelease> {
  const { host, version } = o
  const v = host.vars.synapse
  const pgMin = minimumPostgresFor(version)
  if (o.postgresMajor < pgMin)
    throw new RestoreRefused(
      `the backup's Synapse ${version} needs PostgreSQL ${pgMin} or newer, the database host runs ${o.postgresMajor}: restore onto a host with PostgreSQL ${pgMin}+`,
    )
  if (v.install === 'apt') {
    const main = o.hosts.find((h) => h.name === host.name)!
    const c = aptCandidate(version, (await gatherFacts(main.conn, [aptSourceFact])).get(aptSourceFact))
    if (c.ok !== true)
      throw new RestoreRefused(
        `the backup was taken with Synapse ${version}, which ${host.name} cannot install with apt: ${c.reason}. Restore it onto a host (an older system) whose repository still offers ${version}, upgrade it there, back it up, and restore that backup here`,
      )
    return { method: 'apt', version, debVersion: c.debVersion, source: `matrix-synapse-py3=${c.debVersion} from the apt repository` }
  }
  let lock: SynapseLock
  try {
    lock = await readLock(v.lockDir, version, o.inventoryFile)
  } catch (error) {
    if (!(error instanceof LockError)) throw error
    throw new RestoreRefused(
      `the backup was taken with Synapse ${version}, restored onto ${version} first (then upgraded): ${error.file}: ${error.problem}. ${error.hint}, then restore again`,
    )
  }
  for (const h of o.hosts) {
    const py = (await gatherFacts(h.conn, [pythonVersion])).get(pythonVersion)
    if (!py || !pythonCovers(lock.python, py))
      throw new RestoreRefused(
        `the backup was taken with Synapse ${version}, whose lock ${lock.file} covers Python ${lock.python}; ${h.name} has ${py ? `Python ${py}` : 'no python3'}: ${version} cannot be installed there. Restore the backup onto a host whose Python fits (synapse.version "${version}"), upgrade it there, back it up, and restore that backup here`,
      )
  }
  if (!v.wheelhouse) return { method: 'pip', version, lock, source: `from the lock ${lock.file}` }
  // The inventory's wheelhouse was built by `provision lock --wheelhouse DIR`: the older version's is its sibling.
  const ours = readWheelhouseManifest(v.wheelhouse)
  const parent = dirname(v.wheelhouse)
  const dir = ours ? join(parent, wheelhouseDirName(version, ours.pythonVersion, ours.glibc, lock.digest)) : undefined
  if (!dir || readWheelhouseManifest(dir)?.lockDigest !== lock.digest)
    throw new RestoreRefused(
      `the backup was taken with Synapse ${version}; the hosts install from a wheelhouse (synapse.wheelhouse), and there is none of ${version} beside it: build it with provision lock --inventory ${o.inventoryFile} --synapse-version ${version} --wheelhouse ${parent} --python ${ours?.pythonVersion ?? 'X.Y'}, then restore again`,
    )
  return { method: 'pip', version, lock, wheelhouse: dir, source: `from the lock ${lock.file} and the wheelhouse ${dir}` }
}

/** The inventory with the homeserver pinned at the older release (its worker hosts follow their homeserver's settings). */
export function pinnedAt(inventory: Inventory, main: string, older: OlderRelease): Inventory {
  return {
    ...inventory,
    hosts: inventory.hosts.map((h) =>
      h.name !== main
        ? h
        : {
            ...h,
            vars: {
              ...h.vars,
              synapse: {
                ...h.vars.synapse,
                version: older.version,
                ...(older.method === 'pip' ? { lock: older.lock, wheelhouse: older.wheelhouse } : {}),
              },
            },
          },
    ),
  }
}

/**
 * pip: the older version's venv installed beside the running one while it serves, on main and on the
 * worker hosts (nothing running changes; a failed install stops the restore there). Two tasks, since
 * the engine runs a host's tasks by its roles: `synapse` on main, `workers` on a worker host only.
 */
export function installOlderTasks(older: Extract<OlderRelease, { method: 'pip' }>, indexUrl: string | undefined): Task[] {
  const venv = () =>
    pythonVirtualenv({
      path: versionedVenv(older.version),
      lock: older.lock,
      packageName: 'matrix-synapse',
      wheelhouse: older.wheelhouse,
      indexUrl,
    })
  const title = `Synapse ${older.version} side by side, for the restore`
  return [
    { name: 'synapse', title, resources: () => [venv()] },
    { name: 'workers', title, resources: (ctx) => (ctx.host.roles.includes('synapse') ? [] : [venv()]) },
  ]
}
