/**
 * Synapse's configuration as files: conf.d/*.yaml. Beside it: the log configuration (logging.ts), the
 * units and the pip method's empty homeserver.yaml (units.ts), the two debconf files (debconf.ts), the
 * keys of 40-workers.yaml that follow the worker set (workers-config.ts), PyYAML-safe YAML (yaml.ts).
 * Pure functions; secrets come in as plain strings through an explicit argument (the task resolves
 * them) and every file holding one is flagged `sensitive`.
 *
 * How the configuration is split, and why
 * ---------------------------------------
 * Synapse reads `--config-path=/etc/matrix-synapse/homeserver.yaml --config-path=/etc/matrix-synapse/conf.d/`
 * (the directory's *.yaml in sorted order) and merges them SHALLOWLY: a later top-level key replaces
 * an earlier one entirely. So every top-level key is written in exactly one of our files (a test
 * holds us to it), and homeserver.yaml is left to the package (apt) or kept empty (pip): upgrades of
 * the Debian package never prompt about a changed conffile, and both install methods converge to the
 * same conf.d/.
 *
 *   server_name.yaml   server_name      the Debian postinst writes exactly this file (debconf), byte for byte
 *   report_stats.yaml  report_stats     likewise
 *   10-server.yaml     public_baseurl, listeners (main http + replication + metrics: ONE list, since a
 *                      second `listeners` would replace the first), registration, paths, key servers,
 *                      federation CA list                                                  0644
 *   20-database.yaml   database (holds the Postgres password)                            0640 sensitive
 *   30-secrets.yaml    macaroon_secret_key, form_secret, registration_shared_secret      0640 sensitive
 *   40-workers.yaml    redis, instance_map, worker_replication_secret, federation_sender_instances
 *                      (sensitive when workers are on; `redis: {enabled: false}` when off, so turning
 *                      workers off converges without deleting a file)
 *   50-monitoring.yaml enable_metrics, caches (the guide's monitoring section: watch cache evictions,
 *                      raise the cache factor; factor 4 is roughly 3 GB of RAM)            0644
 *   90-extra.yaml      synapse.extraConfig, verbatim, merged last; always 0640 because nobody knows
 *                      whether it holds an SMTP password or an OIDC client secret       0640 sensitive
 *
 * Separate files keep secrets out of the world-readable ones (their diffs can be shown unmasked),
 * give the Debian maintainer scripts the two files they manage, and let the 90-extra.yaml override
 * the few defaults that are not tied to a setting.
 *
 * YAML: Synapse parses with PyYAML (`yaml.safe_load`, YAML 1.1). Every string is written as a JSON
 * double-quoted scalar, so `yes`, `on`, `1:20`, `0640`, `=` or `<<` stay strings, and `#`, `: `,
 * quotes and newlines in a password are harmless; the few characters PyYAML treats as line breaks or
 * refuses (U+0085, U+2028, U+2029, C1 controls) are escaped as \uXXXX. Keys are plain only when they
 * are plain identifiers that PyYAML cannot read as a boolean.
 */
import { isIP } from 'node:net'
import type { SecretValue } from '../../../src/core/secret.js'
import type { MatrixSettings } from '../../../src/inventory/types.js'
import { isSecret } from '../../../src/core/secret.js'
import { instancePorts, workerInstances } from '../../../src/inventory/workers.js'
import { sharedBind } from '../../../src/topology/instances.js'
import type { RenderedFile } from '../../common/rendered-file.js'
import {
  SYNAPSE_GROUP,
  SYNAPSE_CONF_D,
  SIGNING_KEY_PATH,
  MEDIA_STORE_PATH,
  PID_FILE,
  MAIN_PROCESS_LOG_NAME,
} from '../../../src/synapse/paths.js'
import { FILE_HEADER, renderYaml } from './yaml.js'
import { debconfReportStats, debconfServerName } from './debconf.js'
import { sharedWorkerConfig } from './workers-config.js'
import { logConfigPath } from './logging.js'

// ---------------------------------------------------------------------------------------------
// Paths and names

/** The signing key and media store of this host: the package layout's, or those an adopted server had. */
export const signingKeyPathOf = (vars: MatrixSettings) => vars.synapse.signingKeyPath ?? SIGNING_KEY_PATH
export const mediaStorePathOf = (vars: MatrixSettings) => vars.synapse.mediaStorePath ?? MEDIA_STORE_PATH

/**
 * Top-level keys synapse.extraConfig may not set: each is produced from a setting of its own (use
 * that setting), is load-bearing for the worker setup, or was removed from Synapse (a ConfigError).
 */
export const RESERVED_SYNAPSE_KEYS: Readonly<Record<string, string>> = {
  server_name: 'serverName',
  report_stats: 'synapse.reportStats',
  public_baseurl: 'publicBaseUrl',
  listeners: 'synapse.listenPort, workers.replicationPort and monitoring.mainMetricsPort',
  database: 'postgres.*',
  enable_registration: 'synapse.enableRegistration',
  macaroon_secret_key: 'synapse.macaroonSecret',
  form_secret: 'synapse.formSecret',
  registration_shared_secret: 'synapse.registrationSharedSecret',
  registration_shared_secret_path: 'synapse.registrationSharedSecret',
  enable_metrics: 'monitoring.enableMetrics',
  redis: 'redis.* (enabled with workers)',
  instance_map: 'workers.replicationPort and the worker set',
  worker_replication_secret: 'workers.replicationSecret',
  federation_sender_instances: 'workers.preset or workers.instances (kind federation_sender)',
  stream_writers: 'workers.preset or workers.instances (the stream writer kinds)',
  pusher_instances: 'workers.preset or workers.instances (kind pusher)',
  notify_appservices_from_worker: 'workers.preset or workers.instances (kind appservice)',
  update_user_directory_from_worker: 'workers.preset or workers.instances (kind user_dir)',
  run_background_tasks_on: 'workers.preset or workers.instances (kind background)',
  media_instance_running_background_jobs: 'workers.preset or workers.instances (kind media_repository)',
  enable_media_repo: 'workers.preset or workers.instances (kind media_repository)',
  start_pushers: 'nothing: pusher_instances replaces it',
  notify_appservices: 'nothing: notify_appservices_from_worker replaces it',
  update_user_directory: 'nothing: update_user_directory_from_worker replaces it',
  federation_custom_ca_list: 'synapse.federationCaFiles',
  signing_key_path: 'nothing (fixed by the package layout)',
  log_config: 'nothing (fixed by the package layout)',
  send_federation: 'nothing: federation_sender_instances replaces it',
  worker_replication_host: 'nothing: removed in Synapse 1.88, use instance_map.main',
  worker_replication_http_port: 'nothing: removed in Synapse 1.88, use instance_map.main',
  worker_replication_http_tls: 'nothing: removed in Synapse 1.88, use instance_map.main',
  daemonize: 'nothing: systemd runs Synapse in the foreground',
  worker_app: 'nothing: worker files are rendered by the workers task',
  worker_name: 'nothing: worker files are rendered by the workers task',
  worker_listeners: 'nothing: worker files are rendered by the workers task',
  worker_log_config: 'nothing: worker files are rendered by the workers task',
}

// ---------------------------------------------------------------------------------------------
// conf.d/

export interface SynapseSecrets {
  postgresPassword: string
  macaroonSecret: string
  formSecret: string
  registrationSharedSecret: string
  replicationSecret: string
  redisPassword?: string
}

export interface SynapseConfigContext {
  /** Address Synapse connects to for Postgres (127.0.0.1, or the database host's private address). */
  postgresHost: string
  /** Address Synapse and the workers connect to for Redis. */
  redisHost: string
  secrets: SynapseSecrets
  /**
   * CA certificate file(s) on the host for federation_custom_ca_list. Synapse reads only the FIRST
   * certificate of each file (Certificate.loadPEM) and the list REPLACES the system CAs for
   * federation: one file per CA, and only for private federations.
   */
  federationCaPath?: string
  federationCaPaths?: string[]
  /** The Synapse release installed (pinned, or the wheelhouse's): picks the streams it knows. */
  synapseVersion?: string
}

function confD(name: string, body: Record<string, unknown>, sensitive: boolean, comment: string): RenderedFile {
  return {
    path: `${SYNAPSE_CONF_D}/${name}`,
    content: FILE_HEADER + comment + (Object.keys(body).length === 0 ? '{}\n' : renderYaml(body)),
    mode: sensitive ? 0o640 : 0o644,
    owner: 'root',
    group: SYNAPSE_GROUP,
    sensitive,
  }
}

function requireText(value: string | undefined, what: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new Error(`${what} is empty: it must be resolved before rendering`)
  return value
}

function requirePort(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 1 || value > 65535) throw new Error(`${what} must be a TCP port (1-65535), got ${String(value)}`)
  return value
}

/** Ports bound on the Synapse host: any two equal would make one process fail to start. */
function checkDistinctPorts(ports: [string, number][]): void {
  const seen = new Map<number, string>()
  for (const [what, port] of ports) {
    requirePort(port, what)
    const other = seen.get(port)
    if (other) throw new Error(`${what} and ${other} are both ${port}: each listener needs its own port`)
    seen.set(port, what)
  }
}

/** Ports the Synapse host listens on for these settings (main, replication, metrics, workers). */
export function synapsePorts(vars: MatrixSettings): [string, number][] {
  const ports: [string, number][] = [['synapse.listenPort', vars.synapse.listenPort]]
  if (vars.workers.enabled) ports.push(['workers.replicationPort', vars.workers.replicationPort])
  if (vars.monitoring.enableMetrics) ports.push(['monitoring.mainMetricsPort', vars.monitoring.mainMetricsPort])
  for (const w of workerInstances(vars)) {
    for (const p of instancePorts(w, vars.monitoring.enableMetrics)) ports.push([p.label, p.port])
  }
  return ports
}

function checkHostAddress(value: string, what: string): string {
  // An IP or a DNS name: these end up unquoted in nothing, but a newline here would still be a bug.
  if (isIP(value) === 0 && !/^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(value)) {
    throw new Error(`${what} must be an IP address or a host name, got ${JSON.stringify(value)}`)
  }
  return value
}

/** extraConfig with Secret values revealed (they are written to a 0640 file). */
function resolveExtraValue(value: unknown, path: string): unknown {
  if (isSecret(value)) return value.reveal()
  if (Array.isArray(value)) return value.map((v, i) => resolveExtraValue(v, `${path}[${i}]`))
  if (value !== null && typeof value === 'object') {
    const maybeSecretValue = value as Partial<SecretValue> & { secret?: unknown }
    if (maybeSecretValue.kind === 'value' && isSecret(maybeSecretValue.secret)) return maybeSecretValue.secret.reveal()
    if (maybeSecretValue.kind === 'generate') throw new Error(`${path}: a generated secret must be resolved before rendering`)
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolveExtraValue(v, `${path}.${k}`)]))
  }
  return value
}

const withTrailingSlash = (url: string) => (url.endsWith('/') ? url : `${url}/`)

/**
 * The files of /etc/matrix-synapse/conf.d/ for one host. Owner root, group matrix-synapse, 0640
 * when sensitive, else 0644. See the header of this file for the split.
 */
export function renderSynapseConfig(vars: MatrixSettings, ctx: SynapseConfigContext): RenderedFile[] {
  const { synapse, workers, monitoring } = vars
  checkDistinctPorts(synapsePorts(vars))
  const secrets = ctx.secrets
  const extra = (resolveExtraValue(synapse.extraConfig ?? {}, 'synapse.extraConfig') ?? {}) as Record<string, unknown>
  for (const key of Object.keys(extra)) {
    const setting = RESERVED_SYNAPSE_KEYS[key]
    if (setting !== undefined) throw new Error(`synapse.extraConfig may not set "${key}": use ${setting}`)
  }
  /** Defaults that extraConfig may replace: the key then lives in 90-extra.yaml only. */
  const unlessExtra = (body: Record<string, unknown>) => Object.fromEntries(Object.entries(body).filter(([k]) => !(k in extra)))

  // One list: main http listener, replication listener (workers), metrics listener (metrics).
  const listeners: Record<string, unknown>[] = [
    {
      port: synapse.listenPort,
      type: 'http',
      tls: false,
      bind_addresses: ['127.0.0.1'],
      x_forwarded: true,
      resources: [{ names: ['client', 'federation'], compress: false }],
    },
  ]
  if (workers.enabled) {
    // Workers on other hosts reach it at the private address (behind our nftables table); else loopback only.
    listeners.push({
      port: workers.replicationPort,
      type: 'http',
      bind_addresses: sharedBind(vars),
      resources: [{ names: ['replication'] }],
    })
  }
  if (monitoring.enableMetrics) {
    // A metrics listener without bind_addresses listens on 0.0.0.0.
    listeners.push({ port: monitoring.mainMetricsPort, type: 'metrics', bind_addresses: ['127.0.0.1'] })
  }

  const caPaths = [...(ctx.federationCaPath ? [ctx.federationCaPath] : []), ...(ctx.federationCaPaths ?? [])]
  const server: Record<string, unknown> = {
    public_baseurl: withTrailingSlash(vars.publicBaseUrl),
    listeners,
    // true needs a verification method (extraConfig: registration_requires_token, email, captcha)
    // or an explicit enable_registration_without_verification, or Synapse refuses to start.
    enable_registration: vars.mas.enabled ? false : synapse.enableRegistration, // with MAS it is MAS's (Synapse refuses both)
    signing_key_path: signingKeyPathOf(vars),
    log_config: logConfigPath(MAIN_PROCESS_LOG_NAME),
    ...unlessExtra({
      media_store_path: mediaStorePathOf(vars),
      pid_file: PID_FILE,
      trusted_key_servers: [{ server_name: 'matrix.org' }],
      suppress_key_server_warning: true,
    }),
    ...(caPaths.length > 0 ? { federation_custom_ca_list: caPaths } : {}),
  }

  const database = {
    database: {
      name: 'psycopg2',
      args: {
        user: vars.postgres.user,
        password: requireText(secrets.postgresPassword, 'postgres.password'),
        dbname: vars.postgres.database,
        host: checkHostAddress(ctx.postgresHost, 'postgresHost'),
        port: requirePort(vars.postgres.port, 'postgres.port'),
        cp_min: 5,
        cp_max: 10,
      },
    },
  }

  const secretKeys = {
    macaroon_secret_key: requireText(secrets.macaroonSecret, 'synapse.macaroonSecret'),
    form_secret: requireText(secrets.formSecret, 'synapse.formSecret'),
    registration_shared_secret: requireText(secrets.registrationSharedSecret, 'synapse.registrationSharedSecret'),
  }

  let workerConfig: Record<string, unknown>
  if (workers.enabled) {
    const redis: Record<string, unknown> = {
      enabled: true,
      host: checkHostAddress(ctx.redisHost, 'redisHost'),
      port: requirePort(vars.redis.port, 'redis.port'),
    }
    if (secrets.redisPassword !== undefined && secrets.redisPassword !== '') redis.password = secrets.redisPassword
    workerConfig = {
      // Redis is the only replication transport since Synapse 1.67.
      redis,
      ...sharedWorkerConfig(vars, requireText(secrets.replicationSecret, 'workers.replicationSecret'), ctx.synapseVersion),
    }
  } else {
    // Explicitly off, so that turning workers off converges. No federation_sender_instances: an
    // empty list would mean "nobody sends"; absent means the main process sends.
    workerConfig = { redis: { enabled: false } }
  }

  const monitoringConfig = {
    enable_metrics: monitoring.enableMetrics,
    ...unlessExtra({ caches: { global_factor: synapse.cacheFactor } }),
  }

  return [
    debconfServerName(vars.serverName),
    debconfReportStats(synapse.reportStats),
    confD('10-server.yaml', server, false, '# Public URL, listeners (all of them: Synapse does not merge lists across files), paths.\n'),
    confD('20-database.yaml', database, true, '# PostgreSQL connection (holds the password).\n'),
    confD('30-secrets.yaml', secretKeys, true, '# Secrets: macaroon and form keys, the shared secret of register_new_matrix_user.\n'),
    confD(
      '40-workers.yaml',
      workerConfig,
      workers.enabled,
      workers.enabled
        ? '# Workers: Redis replication, where the main process is, who sends federation.\n'
        : '# Workers are off: the main process does everything.\n',
    ),
    confD(
      '50-monitoring.yaml',
      monitoringConfig,
      false,
      '# Metrics, and the cache factor to tune by watching cache evictions (4 is about 3 GB of RAM).\n',
    ),
    confD('90-extra.yaml', extra, true, '# synapse.extraConfig from the inventory, verbatim (loaded last).\n'),
  ]
}
