import { readFileSync } from 'node:fs'
import type { MatrixSettings } from '../../src/inventory/types.js'
import type { TaskContext } from '../../src/engine/task.js'
import { directory, file } from '../../src/resources/file.js'
import { pythonVirtualenv } from '../../src/resources/python-venv.js'
import type { Resource } from '../../src/resources/resource.js'
import { HOMESERVER_YAML, SYNAPSE_CONF_D, SYNAPSE_CONFIG_DIR } from '../../src/synapse/paths.js'
import { workerInstancesOnHost, workerUnits } from '../../src/topology/instances.js'
import { federationCaPath, pipHostBase, synapseConfigFiles, validateConfig } from './index.js'
import { workerHostRelease } from './release/worker-host-release.js'
import { signingKeyFromSecret } from './signing-key.js'
import { mediaStorePathOf, signingKeyPathOf } from './templates/homeserver.js'
import { renderBaseHomeserverYaml } from './templates/units.js'
import { stopWorkersBeforeSharedChange } from './worker-handover.js'

/**
 * What a worker host (workers role, no synapse role) needs of Synapse to run the workers placed on
 * it: the same release (a versioned venv from the homeserver's lock, linked as on main), the service
 * user and directories, the configuration the workers read (conf.d rendered from the homeserver's
 * settings, Postgres and Redis at their private addresses) and the signing key. No main process.
 * A version change, or a venv rebuilt beside a drifted one, switches the link and restarts this host's
 * workers (their units watch it).
 */
export function workerHostSynapse(ctx: TaskContext, home: MatrixSettings): Resource[] {
  if (home.synapse.install !== 'pip') throw new Error('a worker host installs Synapse with the pip method: set synapse.install: pip')
  const lock = home.synapse.lock
  if (!lock)
    throw new Error(
      'a worker host installs the Synapse lock of its homeserver, which the inventory loader reads: load the inventory with locks',
    )
  if (!home.synapse.signingKey) throw new Error('a worker host needs synapse.signingKey (the inventory loader asks for it)')
  const out: Resource[] = [
    ...pipHostBase(),
    // The lock's venv, linked; a drifted running venv is rebuilt beside it, never installed into.
    workerHostRelease({
      lock,
      installAt: (path) =>
        pythonVirtualenv({
          path,
          lock,
          packageName: 'matrix-synapse',
          wheelhouse: home.synapse.wheelhouse,
          indexUrl: home.synapse.pipIndexUrl,
        }),
      keepVenvs: home.synapse.keepVenvs,
      backupDir: home.synapse.backupDir,
      configChecks: (python) => workerInstancesOnHost(ctx.inventory, ctx.host.name).map((w) => validateConfig(python, w.name)),
      exec: {
        signingKey: signingKeyPathOf(home),
        postgresLocal: false,
        database: home.postgres.database,
        databaseOwner: home.postgres.user,
      },
    }),
    directory({ path: SYNAPSE_CONFIG_DIR, owner: 'matrix-synapse', group: 'matrix-synapse', mode: 0o755 }),
    directory({ path: SYNAPSE_CONF_D, mode: 0o755 }),
    directory({ path: '/var/lib/matrix-synapse', owner: 'matrix-synapse', group: 'matrix-synapse', mode: 0o750 }),
    directory({ path: mediaStorePathOf(home), owner: 'matrix-synapse', group: 'matrix-synapse', mode: 0o750 }),
    directory({ path: '/var/log/matrix-synapse', owner: 'matrix-synapse', group: 'matrix-synapse', mode: 0o750 }),
    file({ path: HOMESERVER_YAML, content: renderBaseHomeserverYaml(), group: 'matrix-synapse', mode: 0o640 }),
  ]
  home.synapse.federationCaFiles.forEach((f, i) => out.push(file({ path: federationCaPath(i), content: readFileSync(f), mode: 0o644 })))
  const configFiles = synapseConfigFiles(ctx, home)
  const shared = configFiles.find((f) => f.path.endsWith('/40-workers.yaml'))!
  // The synapse host stopped these already (through the run's connection); planned here too, so this
  // host's later service resources read the units' state again and start them.
  out.push(
    stopWorkersBeforeSharedChange({
      path: shared.path,
      content: shared.content,
      localUnits: workerUnits(ctx.inventory, ctx.host.name),
      remote: [],
    }),
  )
  for (const f of configFiles)
    out.push(file({ path: f.path, content: f.content, owner: f.owner, group: f.group, mode: f.mode, sensitive: f.sensitive }))
  out.push(
    signingKeyFromSecret({
      path: signingKeyPathOf(home),
      key: ctx.secret(home.synapse.signingKey),
      owner: 'matrix-synapse',
      group: 'matrix-synapse',
    }),
  )
  return out
}
