/**
 * Worker files for the worker set (src/topology: a preset such as the guide's federation_reader
 * and federation_sender, or an explicit list). Every worker is `synapse.app.generic_worker` with a
 * `worker_name` (the historical apps are deprecated; `worker_replication_host`/`_http_port` are a
 * ConfigError since 1.88: workers find the main process and the stream writers through
 * `instance_map` in conf.d/40-workers.yaml). A worker gets a public http listener when Apache sends
 * it requests, a separate replication listener when it writes a stream (docs: never expose that
 * one), and a metrics listener.
 *
 * Files: /etc/matrix-synapse/workers/<name>.yaml (the path upstream's matrix-synapse-worker@.service
 * expects) and /etc/matrix-synapse/<name>-log.yaml. No secrets: the shared secrets are in conf.d/.
 *
 * Liveness: a worker with an http listener answers /health there; one without (federation_sender,
 * pusher, background, ...) is probed on its metrics listener. With metrics off systemd's state
 * (Type=notify) is the only signal for those.
 */
import type { MatrixSettings } from '../../src/inventory/types.js'
import { instancesOn, workerInstances as workerInstancesOf, type WorkerInstance } from '../../src/inventory/workers.js'
import { sharedBind } from '../../src/topology/instances.js'
import { KINDS, type WorkerKindName } from '../../src/synapse/worker-kinds.js'
import type { RenderedFile } from '../common/rendered-file.js'
import { logConfigPath, renderLogConfig } from '../synapse/templates/logging.js'
import { SYNAPSE_SANDBOX } from '../synapse/templates/units.js'
import { renderYaml } from '../synapse/templates/yaml.js'
import {
  SYNAPSE_CONF_D,
  SYNAPSE_GROUP,
  SYNAPSE_PYTHON,
  SYNAPSE_USER,
  SYNAPSE_WORKERS_DIR,
  HOMESERVER_YAML,
} from '../../src/synapse/paths.js'

function workerFile(name: string, config: Record<string, unknown>, comment: string): RenderedFile {
  return {
    path: `${SYNAPSE_WORKERS_DIR}/${name}.yaml`,
    content: '# Managed by matrix-provision: changes here are overwritten on the next run.\n' + comment + renderYaml(config),
    mode: 0o644,
    owner: 'root',
    group: SYNAPSE_GROUP,
    sensitive: false,
  }
}

const LOOPBACK = ['127.0.0.1']

/** The resources of a worker's public http listener (client/federation as the docs pair them; media alone). */
function httpResources(kind: WorkerKindName): string[] {
  if (kind === 'media_repository') return ['media']
  if (KINDS[kind].serves.includes('federation')) return ['client', 'federation']
  return ['client']
}

/** What the comment at the top of a worker file says. */
const WORKER_FILE_COMMENTS: Partial<Record<WorkerKindName, string>> = {
  federation_reader: '# Inbound federation requests (Apache routes FEDERATION_ROUTES here).\n',
  federation_sender:
    '# Outbound federation (conf.d/40-workers.yaml: federation_sender_instances). No http listener:\n' +
    '# the metrics listener, when on, serves as its liveness probe.\n',
}

/**
 * One worker's configuration: its listeners (public http, replication, metrics) and log config.
 * `shared`: where listeners other hosts reach bind (loopback, plus the private address when the
 * homeserver spans hosts): the replication listener always, http and metrics when the worker runs
 * away from Apache and Prometheus (on main's host); the rest stay on loopback.
 */
export function renderWorkerConfig(w: WorkerInstance, metrics: boolean, shared: string[] = LOOPBACK): Record<string, unknown> {
  const listeners: Record<string, unknown>[] = []
  const remote = w.remote ? shared : LOOPBACK
  if (w.port !== undefined) {
    listeners.push({ type: 'http', port: w.port, bind_addresses: remote, x_forwarded: true, resources: [{ names: httpResources(w.kind) }] })
  }
  // Its own port: the replication listener is never one Apache sends requests to.
  if (w.replicationPort !== undefined)
    listeners.push({ type: 'http', port: w.replicationPort, bind_addresses: shared, resources: [{ names: ['replication'] }] })
  if (metrics) listeners.push({ type: 'metrics', port: w.metricsPort, bind_addresses: remote })
  return {
    worker_app: 'synapse.app.generic_worker',
    worker_name: w.name,
    worker_listeners: listeners,
    worker_log_config: logConfigPath(w.name),
    // conf.d turns the media repository off for every other process (40-workers.yaml).
    ...(w.kind === 'media_repository' ? { enable_media_repo: true } : {}),
  }
}

/**
 * Worker configuration files and their log configurations, for every worker of the set. Metrics
 * listeners exist only with monitoring.enableMetrics (Synapse ignores them, with a warning, when
 * enable_metrics is false).
 */
export function renderWorkerFiles(vars: MatrixSettings, hostName?: string): RenderedFile[] {
  const metrics = vars.monitoring.enableMetrics
  const instances = hostName === undefined ? workerInstancesOf(vars) : instancesOn(vars, hostName)
  return instances.flatMap((w) => [
    workerFile(
      w.name,
      renderWorkerConfig(w, metrics, sharedBind(vars, w.host)),
      WORKER_FILE_COMMENTS[w.kind] ?? `# ${w.kind}: ${KINDS[w.kind].summary}.\n`,
    ),
    renderLogConfig(w.name),
  ])
}

/**
 * /etc/systemd/system/matrix-synapse-worker@.service: upstream's template (docs/systemd-with-workers)
 * with the optional EnvironmentFile (the pip method has no /etc/default/matrix-synapse).
 */
export function renderWorkerUnit(): string {
  return `# Managed by matrix-provision: changes here are overwritten on the next run.
[Unit]
Description=Synapse %i
AssertPathExists=${SYNAPSE_WORKERS_DIR}/%i.yaml

# This service should be restarted when the synapse target is restarted.
PartOf=matrix-synapse.target
ReloadPropagatedFrom=matrix-synapse.target

# If this is started at the same time as the main process, let the main process start first
# (it initialises the database schema).
After=matrix-synapse.service

[Service]
Type=notify
NotifyAccess=main
User=${SYNAPSE_USER}
WorkingDirectory=/var/lib/matrix-synapse
EnvironmentFile=-/etc/default/matrix-synapse
ExecStart=${SYNAPSE_PYTHON} -m synapse.app.generic_worker --config-path=${HOMESERVER_YAML} --config-path=${SYNAPSE_CONF_D}/ --config-path=${SYNAPSE_WORKERS_DIR}/%i.yaml
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=3
# Workers start side by side (one systemctl start for the set): a dozen Python processes importing
# Synapse at once on a small host take longer than systemd's default 90 s to report ready.
TimeoutStartSec=300
SyslogIdentifier=matrix-synapse-%i

${SYNAPSE_SANDBOX}
[Install]
WantedBy=matrix-synapse.target
`
}

/** /etc/systemd/system/matrix-synapse.target: groups the main process and the workers. */
export function renderSynapseTarget(): string {
  return `# Managed by matrix-provision: changes here are overwritten on the next run.
[Unit]
Description=Synapse parent target
After=network.target
AllowIsolate=no

[Install]
WantedBy=multi-user.target
`
}
