import type { BeforeCheck, Task } from '../../src/engine/task.js'
import { directory, file } from '../../src/resources/file.js'
import type { Resource } from '../../src/resources/resource.js'
import { service } from '../../src/resources/systemd-service.js'
import { sh } from '../../src/core/shell.js'
import { instancesOn, spansHosts, type WorkerInstance } from '../../src/inventory/workers.js'
import { workerUnitName } from '../../src/synapse/worker-kinds.js'
import type { MatrixSettings } from '../../src/inventory/types.js'
import { portAvailable, supportedTarget } from '../common/checks.js'
import { firewallResources } from '../common/firewall.js'
import { workerAfterChecks } from '../common/worker-checks.js'
import { retiredWorkers, VALIDATE_CONFIG } from '../synapse/index.js'
import { runningVenvHoldsLock } from '../synapse/venv-lock-check.js'
import { workerHostSynapse } from '../synapse/worker-host.js'
import { workerUnits } from '../../src/topology/instances.js'
import { renderSynapseTarget, renderWorkerFiles, renderWorkerUnit } from './templates.js'
import {
  HOMESERVER_YAML,
  SYNAPSE_CONF_D,
  SYNAPSE_WORKERS_DIR,
  SYNAPSE_TARGET_PATH,
  VENV_LINK,
  WORKER_UNIT_PATH,
} from '../../src/synapse/paths.js'

const OWN_PROCESSES = ['python', 'synapse', 'matrix-synapse']

/**
 * The worker set of the inventory (src/topology: a preset or an explicit list) as systemd template
 * instances. The shared part (Redis, instance_map, stream_writers, who sends federation and pushes)
 * lives in the synapse task's conf.d/40-workers.yaml; workers that left the set are stopped and
 * their files removed by the synapse task before that file changes (retiredWorkers).
 */
/** Ports of this host that other hosts of a spread homeserver reach (main's and writers' replication, a remote worker's http and metrics). */
export function sharedPorts(vars: MatrixSettings, here: readonly WorkerInstance[], main: boolean): number[] {
  const ports = main ? [vars.workers.replicationPort] : []
  for (const w of here) {
    if (w.replicationPort !== undefined) ports.push(w.replicationPort)
    if (w.remote && w.port !== undefined) ports.push(w.port)
    if (w.remote && vars.monitoring.enableMetrics) ports.push(w.metricsPort)
  }
  return ports
}

export const workersTask: Task = {
  name: 'workers',
  title: 'Synapse workers of the configured set (systemd template units)',
  // A worker host starts its workers once the main process has set up the database and its listeners.
  needs(ctx) {
    const main = ctx.host.vars.workers.homeserverHost
    return main !== undefined && main !== ctx.host.name ? [{ host: main, task: 'synapse' as const }] : []
  },
  before(ctx) {
    const main = ctx.host.roles.includes('synapse')
    const checks: BeforeCheck[] = main
      ? [portAvailable(ctx.host.vars.workers.replicationPort, OWN_PROCESSES, 'the replication listener')]
      : [supportedTarget]
    for (const w of instancesOn(ctx.host.vars, ctx.host.name)) {
      if (w.port !== undefined) checks.push(portAvailable(w.port, OWN_PROCESSES, `worker ${w.name}`))
      if (w.replicationPort !== undefined)
        checks.push(portAvailable(w.replicationPort, OWN_PROCESSES, `worker ${w.name}'s replication listener`))
    }
    return checks
  },
  resources(ctx) {
    const v = ctx.host.vars
    const main = ctx.host.roles.includes('synapse')
    const here = instancesOn(v, ctx.host.name)
    // A worker host: Synapse, the shared configuration and the signing key, as the homeserver has them.
    const home = main ? v : ctx.hostByName(v.workers.homeserverHost!).vars
    const out: Resource[] = main ? [] : workerHostSynapse(ctx, home)
    out.push(
      directory({ path: SYNAPSE_WORKERS_DIR, mode: 0o755 }),
      file({ path: WORKER_UNIT_PATH, content: renderWorkerUnit() }),
      file({ path: SYNAPSE_TARGET_PATH, content: renderSynapseTarget() }),
    )
    // On main's host the synapse task retires workers before the shared config changes; here, this task.
    if (!main) out.push(retiredWorkers(here.map((w) => w.name)))
    for (const f of renderWorkerFiles(v, ctx.host.name))
      out.push(file({ path: f.path, content: f.content, owner: f.owner, group: f.group, mode: f.mode, sensitive: f.sensitive }))
    // Every worker reads the shared config: a change there (stream writers, federation senders,
    // pushers) restarts them all, as Synapse's docs ask; a new worker's own file restarts nobody else.
    // A worker host has no release procedure: its workers restart when the venv link moves.
    const shared = [
      `${SYNAPSE_CONF_D}/`,
      HOMESERVER_YAML,
      'pkg:matrix-synapse',
      'pkg:matrix-synapse-py3',
      WORKER_UNIT_PATH,
      ...(main ? [] : [VENV_LINK]),
    ]
    for (const w of here) {
      out.push(
        service({
          unit: workerUnitName(w.name),
          watch: [...shared, `${SYNAPSE_WORKERS_DIR}/${w.name}.yaml`, `/etc/matrix-synapse/${w.name}-log.yaml`],
          // Synapse parses the shared config plus the worker file, as the unit does, before any restart.
          validate: sh`${VALIDATE_CONFIG} ${`--config-path=${SYNAPSE_WORKERS_DIR}/${w.name}.yaml`}`,
        }),
      )
    }
    out.push(service({ unit: 'matrix-synapse.target', running: true }))
    // Spread over hosts: only the homeserver's hosts reach the listeners bound to the private address.
    if (spansHosts(v)) {
      const ports = sharedPorts(v, here, main)
      if (ports.length) out.push(...firewallResources('synapse', ports, Object.values(v.workers.addresses ?? {})))
    }
    return out
  },
  after(ctx) {
    const checks = workerAfterChecks(ctx.host.vars, ctx.host.name)
    if (ctx.host.roles.includes('synapse')) return checks
    // No main here to carry the synapse task's lock check: a drifted venv fails check on this host too.
    const lock = ctx.hostByName(ctx.host.vars.workers.homeserverHost!).vars.synapse.lock
    return lock ? [...checks, runningVenvHoldsLock(lock, workerUnits(ctx.inventory, ctx.host.name))] : checks
  },
}
