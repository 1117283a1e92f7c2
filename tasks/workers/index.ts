import type { BeforeCheck, Task } from '../../src/engine/task.js'
import { directory, file } from '../../src/resources/file.js'
import type { Resource } from '../../src/resources/resource.js'
import { service } from '../../src/resources/systemd-service.js'
import { sh } from '../../src/ssh/shell.js'
import { workerInstances } from '../../src/topology/instances.js'
import { portAvailable } from '../common/checks.js'
import { workerAfterChecks } from './checks.js'
import { VALIDATE_CONFIG } from '../synapse/index.js'
import { renderSynapseServiceDropIn, SYNAPSE_UNIT_DROP_IN_PATH, SYNAPSE_WORKERS_DIR } from '../synapse/templates.js'
import { renderSynapseTarget, renderWorkerFiles, renderWorkerUnit, SYNAPSE_TARGET_PATH, WORKER_UNIT_PATH, workerUnitName } from './templates.js'

const OWN_PROCESSES = ['python', 'synapse', 'matrix-synapse']

/**
 * The worker set of the inventory (src/topology: a preset or an explicit list) as systemd template
 * instances. The shared part (Redis, instance_map, stream_writers, who sends federation and pushes)
 * lives in the synapse task's conf.d/40-workers.yaml; workers that left the set are stopped and
 * their files removed by the synapse task before that file changes (retiredWorkers).
 */
export const workersTask: Task = {
  name: 'workers',
  title: 'Synapse workers of the configured set (systemd template units)',
  before(ctx) {
    const checks: BeforeCheck[] = [portAvailable(ctx.host.vars.workers.replicationPort, OWN_PROCESSES, 'the replication listener')]
    for (const w of workerInstances(ctx.host.vars)) {
      if (w.port !== undefined) checks.push(portAvailable(w.port, OWN_PROCESSES, `worker ${w.name}`))
      if (w.replicationPort !== undefined) checks.push(portAvailable(w.replicationPort, OWN_PROCESSES, `worker ${w.name}'s replication listener`))
    }
    return checks
  },
  resources(ctx) {
    const v = ctx.host.vars
    const out: Resource[] = [
      directory({ path: SYNAPSE_WORKERS_DIR, mode: 0o755 }),
      file({ path: WORKER_UNIT_PATH, content: renderWorkerUnit() }),
      file({ path: SYNAPSE_TARGET_PATH, content: renderSynapseTarget() }),
    ]
    if (v.synapse.install === 'apt') {
      out.push(directory({ path: SYNAPSE_UNIT_DROP_IN_PATH.replace(/\/[^/]+$/, '') }), file({ path: SYNAPSE_UNIT_DROP_IN_PATH, content: renderSynapseServiceDropIn() }))
    }
    for (const f of renderWorkerFiles(v)) out.push(file({ path: f.path, content: f.content, owner: f.owner, group: f.group, mode: f.mode, sensitive: f.sensitive }))
    // Every worker reads the shared config: a change there (stream writers, federation senders,
    // pushers) restarts them all, as Synapse's docs ask; a new worker's own file restarts nobody else.
    const shared = ['/etc/matrix-synapse/conf.d/', '/etc/matrix-synapse/homeserver.yaml', 'pkg:matrix-synapse', 'pkg:matrix-synapse-py3', WORKER_UNIT_PATH]
    for (const w of workerInstances(v)) {
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
    return out
  },
  after: (ctx) => workerAfterChecks(ctx.host.vars),
}
