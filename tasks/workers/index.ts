import type { AfterCheck, Task } from '../../src/engine/task.js'
import { directory, file } from '../../src/resources/file.js'
import type { Resource } from '../../src/resources/resource.js'
import { service } from '../../src/resources/systemd-service.js'
import { httpOnHost, portAvailable, unitActive } from '../common/checks.js'
import { VALIDATE_CONFIG } from '../synapse/index.js'
import { renderSynapseServiceDropIn, SYNAPSE_UNIT_DROP_IN_PATH, SYNAPSE_WORKERS_DIR } from '../synapse/templates.js'
import { renderSynapseTarget, renderWorkerFiles, renderWorkerUnit, SYNAPSE_TARGET_PATH, WORKER_NAMES, WORKER_UNIT_PATH, workerUnitName } from './templates.js'

/**
 * The guide's federation_reader and federation_sender, in today's form: generic_worker apps, Redis,
 * instance_map.main and federation_sender_instances (the shared part lives in the synapse task's conf.d).
 */
export const workersTask: Task = {
  name: 'workers',
  title: 'federation_reader and federation_sender workers (systemd template units)',
  before(ctx) {
    const w = ctx.host.vars.workers
    const own = ['python', 'synapse', 'matrix-synapse']
    return [
      portAvailable(w.replicationPort, own, 'the replication listener'),
      portAvailable(w.federationReader.port, own, 'the federation_reader'),
    ]
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
    const shared = ['/etc/matrix-synapse/conf.d/', '/etc/matrix-synapse/homeserver.yaml', 'pkg:matrix-synapse', 'pkg:matrix-synapse-py3', WORKER_UNIT_PATH]
    for (const name of [WORKER_NAMES.federationReader, WORKER_NAMES.federationSender]) {
      out.push(
        service({
          unit: workerUnitName(name),
          watch: [...shared, `${SYNAPSE_WORKERS_DIR}/${name}.yaml`, `/etc/matrix-synapse/${name}-log.yaml`],
          // Synapse parses the shared config plus the worker file, as the unit does, before any restart.
          validate: `${VALIDATE_CONFIG} --config-path=${SYNAPSE_WORKERS_DIR}/${name}.yaml`,
        }),
      )
    }
    out.push(service({ unit: 'matrix-synapse.target', running: true }))
    return out
  },
  after(ctx) {
    const w = ctx.host.vars.workers
    const checks: AfterCheck[] = [
      unitActive(workerUnitName(WORKER_NAMES.federationReader)),
      unitActive(workerUnitName(WORKER_NAMES.federationSender)),
      {
        name: 'federation_reader /health answers',
        run: (conn) => httpOnHost(conn, `http://127.0.0.1:${w.federationReader.port}/health`, { waitS: 90, expect: /OK/ }),
      },
    ]
    if (ctx.host.vars.monitoring.enableMetrics) {
      checks.push({
        name: 'federation_sender metrics answer (its liveness probe)',
        run: (conn) => httpOnHost(conn, `http://127.0.0.1:${w.federationSender.metricsPort}/_synapse/metrics`, { waitS: 90, expect: /python_info|process_cpu/ }),
      })
    }
    return checks
  },
}
