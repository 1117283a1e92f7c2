/**
 * The two workers of the guide, in today's form: federation_reader (inbound federation requests)
 * and federation_sender (outbound federation), both `synapse.app.generic_worker` with a
 * `worker_name` (the historical `synapse.app.federation_sender` app needs `send_federation: false`
 * and is "not recommended"; `worker_replication_host`/`_http_port` are a ConfigError since 1.88:
 * workers find the main process through `instance_map.main` in conf.d/40-workers.yaml).
 *
 * Files: /etc/matrix-synapse/workers/<name>.yaml (the path upstream's matrix-synapse-worker@.service
 * expects) and /etc/matrix-synapse/<name>-log.yaml. No secrets: the shared secrets are in conf.d/.
 *
 * Liveness: federation_reader's http listener answers /health. federation_sender has no http
 * listener (it only sends); its metrics listener (127.0.0.1:<metricsPort>/_synapse/metrics) is the
 * liveness probe instead of an extra `health` listener on a port the inventory does not have. With
 * metrics off it has no listener at all and systemd's state (Type=notify) is the only signal.
 */
import type { MatrixSettings } from '../../src/inventory/types.js'
import type { RenderedFile } from '../rendered-file.js'
import {
  SYNAPSE_CONF_D,
  SYNAPSE_GROUP,
  SYNAPSE_PYTHON,
  SYNAPSE_SANDBOX,
  SYNAPSE_USER,
  SYNAPSE_WORKERS_DIR,
  HOMESERVER_YAML,
  WORKER_NAMES,
  logConfigPath,
  renderLogConfig,
  renderYaml,
} from '../synapse/templates.js'

export { WORKER_NAMES }

export const WORKER_UNIT_PATH = '/etc/systemd/system/matrix-synapse-worker@.service'
export const SYNAPSE_TARGET_PATH = '/etc/systemd/system/matrix-synapse.target'

/** systemd unit instance of a worker: matrix-synapse-worker@federation_reader.service */
export const workerUnitName = (name: string) => `matrix-synapse-worker@${name}.service`

/**
 * Federation endpoints a generic_worker can serve (docs/workers.md, "synapse.app.generic_worker",
 * Federation requests + inbound transactions; Synapse 1.157). Compared with the guide (2022): adds
 * version, make_knock/send_knock, timestamp_to_event, hierarchy; drops get_groups_publicised
 * (groups/communities were removed from Synapse) and query_auth (no longer in workers.md);
 * v1|v2 pairs are one regex each.
 * `/_matrix/federation/v1/media/` is not here: it belongs to a media_repository worker.
 */
export const FEDERATION_READER_ROUTES: readonly string[] = [
  '^/_matrix/federation/v1/version$',
  '^/_matrix/federation/v1/event/',
  '^/_matrix/federation/v1/state/',
  '^/_matrix/federation/v1/state_ids/',
  '^/_matrix/federation/v1/backfill/',
  '^/_matrix/federation/v1/get_missing_events/',
  '^/_matrix/federation/v1/publicRooms',
  '^/_matrix/federation/v1/query/',
  '^/_matrix/federation/v1/make_join/',
  '^/_matrix/federation/v1/make_leave/',
  '^/_matrix/federation/(v1|v2)/send_join/',
  '^/_matrix/federation/(v1|v2)/send_leave/',
  '^/_matrix/federation/v1/make_knock/',
  '^/_matrix/federation/v1/send_knock/',
  '^/_matrix/federation/(v1|v2)/invite/',
  '^/_matrix/federation/v1/event_auth/',
  '^/_matrix/federation/v1/timestamp_to_event/',
  '^/_matrix/federation/v1/exchange_third_party_invite/',
  '^/_matrix/federation/v1/user/devices/',
  '^/_matrix/key/v2/query',
  '^/_matrix/federation/v1/hierarchy/',
  // Inbound federation transactions.
  '^/_matrix/federation/v1/send/',
]

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

const metricsListener = (port: number) => ({ type: 'metrics', port, bind_addresses: ['127.0.0.1'] })

/**
 * Worker configuration files and their log configurations. Metrics listeners exist only with
 * monitoring.enableMetrics (Synapse ignores them, with a warning, when enable_metrics is false).
 */
export function renderWorkerFiles(vars: MatrixSettings): RenderedFile[] {
  const { federationReader, federationSender } = vars.workers
  const metrics = vars.monitoring.enableMetrics
  const reader = WORKER_NAMES.federationReader
  const sender = WORKER_NAMES.federationSender

  const readerConfig = {
    worker_app: 'synapse.app.generic_worker',
    worker_name: reader,
    worker_listeners: [
      {
        type: 'http',
        port: federationReader.port,
        bind_addresses: ['127.0.0.1'],
        x_forwarded: true,
        // `federation` implies keys (/_matrix/key/v2/query) and media; `client` as the guide has it
        // (workers.md: the worker needs both), though Apache sends it federation paths only.
        resources: [{ names: ['client', 'federation'] }],
      },
      ...(metrics ? [metricsListener(federationReader.metricsPort)] : []),
    ],
    worker_log_config: logConfigPath(reader),
  }

  const senderConfig = {
    worker_app: 'synapse.app.generic_worker',
    worker_name: sender,
    worker_listeners: metrics ? [metricsListener(federationSender.metricsPort)] : [],
    worker_log_config: logConfigPath(sender),
  }

  return [
    workerFile(reader, readerConfig, '# Inbound federation requests (Apache routes FEDERATION_READER_ROUTES here).\n'),
    renderLogConfig(reader),
    workerFile(
      sender,
      senderConfig,
      '# Outbound federation (conf.d/40-workers.yaml: federation_sender_instances). No http listener:\n' +
        '# the metrics listener, when on, serves as its liveness probe.\n',
    ),
    renderLogConfig(sender),
  ]
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
