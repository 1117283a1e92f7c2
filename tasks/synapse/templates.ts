/**
 * Synapse's configuration as files: conf.d/*.yaml, the log configuration, the systemd unit of the
 * pip install method and its minimal homeserver.yaml. Pure functions; secrets come in as plain
 * strings through an explicit argument (the task resolves them) and every file holding one is
 * flagged `sensitive`.
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
import { Document, isScalar, visit } from 'yaml'
import type { SecretValue } from '../../src/core/secret.js'
import type { MatrixSettings } from '../../src/inventory/types.js'
import { isSecret } from '../../src/core/secret.js'
import { instancePorts, workerInstances } from '../../src/inventory/workers.js'
import { reachAddress, sharedBind, streamWriters } from '../../src/topology/instances.js'
import { KINDS, type Duty } from '../../src/synapse/worker-kinds.js'
import { routeTable } from '../../src/synapse/routes.js'
import type { RenderedFile } from '../common/rendered-file.js'
import { SYNAPSE_USER, SYNAPSE_GROUP, SYNAPSE_CONFIG_DIR, SYNAPSE_CONF_D, HOMESERVER_YAML, SIGNING_KEY_PATH, SYNAPSE_DATA_DIR, MEDIA_STORE_PATH, SYNAPSE_LOG_DIR, PID_FILE, SYNAPSE_PYTHON, MAIN_PROCESS_LOG_NAME } from '../../src/synapse/paths.js'

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

const FILE_HEADER = '# Managed by matrix-provision: changes here are overwritten on the next run.\n'

// ---------------------------------------------------------------------------------------------
// YAML that PyYAML reads back exactly

/** Characters PyYAML treats as line breaks or refuses outright, which JSON.stringify leaves raw. */
const PYYAML_UNSAFE_RAW = /[\u007f-\u009f\u2028\u2029\ufeff\ufffe\uffff]/g
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/
/** A key written plain: an identifier PyYAML (YAML 1.1) cannot read as a boolean or null. */
const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/
const YAML11_WORDS = /^(?:y|n|yes|no|on|off|true|false|null)$/i

function checkYamlValue(value: unknown, path: string): void {
  if (typeof value === 'string') {
    if (LONE_SURROGATE.test(value)) throw new Error(`${path}: the text holds an unpaired UTF-16 surrogate, which is not valid Unicode`)
  } else if (typeof value === 'number') {
    // PyYAML (YAML 1.1) reads 1e+21 as a string and has no NaN/Infinity from JSON-ish output.
    if (!Number.isFinite(value) || /e/i.test(JSON.stringify(value))) {
      throw new Error(`${path}: the number ${String(value)} cannot be written so that PyYAML reads it back as a number`)
    }
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => checkYamlValue(item, `${path}[${i}]`))
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      checkYamlValue(k, `${path}.${k}`)
      checkYamlValue(v, `${path}.${k}`)
    }
  } else if (value !== null && value !== undefined && typeof value !== 'boolean') {
    throw new Error(`${path}: a ${typeof value} cannot be written to YAML`)
  }
}

/**
 * YAML for Synapse (PyYAML) and other YAML 1.1 readers: strings are JSON double-quoted scalars,
 * simple keys plain, no line folding. Throws for values that cannot round-trip (NaN, 1e21, lone
 * surrogates, functions).
 */
export function renderYaml(value: unknown): string {
  checkYamlValue(value, '$')
  // No anchors/aliases for objects that appear twice (e.g. shared by an inventory merge).
  const doc = new Document(value, { aliasDuplicateObjects: false })
  visit(doc, {
    Pair(_, pair) {
      if (isScalar(pair.key) && typeof pair.key.value === 'string') {
        pair.key.type = PLAIN_KEY.test(pair.key.value) && !YAML11_WORDS.test(pair.key.value) ? 'PLAIN' : 'QUOTE_DOUBLE'
      }
    },
    Scalar(key, node) {
      if (key !== 'key' && typeof node.value === 'string') node.type = 'QUOTE_DOUBLE'
    },
  })
  const text = doc.toString({ doubleQuotedAsJSON: true, lineWidth: 0, indentSeq: true })
  // Only double-quoted scalars can hold these characters (keys holding them are quoted too), so
  // a \uXXXX escape is read back as the same character.
  return text.replace(PYYAML_UNSAFE_RAW, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`)
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

/**
 * server_name.yaml exactly as the Debian postinst writes it after debconf filled it in. The
 * package's manage_debconf.pl reads `server_name: X` back (stripping quotes) and rewrites the line
 * when it differs from the raw text, so a plain value keeps both install methods byte-identical.
 */
function debconfServerName(serverName: string): RenderedFile {
  // Plain only where PyYAML 1.1 reads it back as the same string: starts with a letter (no
  // int/float/sexagesimal/timestamp), no YAML word. Otherwise quoted (valid, but debconf rewrites it).
  const plain = /^[a-z][a-z0-9.-]*(?::\d{1,5})?$/i.test(serverName) && !YAML11_WORDS.test(serverName)
  const value = plain ? serverName : JSON.stringify(serverName)
  return {
    path: `${SYNAPSE_CONF_D}/server_name.yaml`,
    content:
      '# This file is autogenerated, and will be recreated on upgrade if it is deleted.\n' +
      '# Any changes you make will be preserved.\n' +
      '\n' +
      '# The domain name of the server, with optional explicit port.\n' +
      '# This is used by remote servers to connect to this server,\n' +
      '# e.g. matrix.org, localhost:8080, etc.\n' +
      '# This is also the last part of your UserID.\n' +
      '#\n' +
      `server_name: ${value}\n`,
    mode: 0o644,
    owner: 'root',
    group: SYNAPSE_GROUP,
    sensitive: false,
  }
}

function debconfReportStats(reportStats: boolean): RenderedFile {
  return {
    path: `${SYNAPSE_CONF_D}/report_stats.yaml`,
    content:
      '# This file is autogenerated, and will be recreated on upgrade if it is deleted.\n' +
      '# Any changes you make will be preserved.\n' +
      '\n' +
      '# Whether to report anonymized homeserver usage statistics.\n' +
      `report_stats: ${reportStats ? 'true' : 'false'}\n`,
    mode: 0o644,
    owner: 'root',
    group: SYNAPSE_GROUP,
    sensitive: false,
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
    enable_registration: synapse.enableRegistration,
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
    confD('50-monitoring.yaml', monitoringConfig, false, '# Metrics, and the cache factor to tune by watching cache evictions (4 is about 3 GB of RAM).\n'),
    confD('90-extra.yaml', extra, true, '# synapse.extraConfig from the inventory, verbatim (loaded last).\n'),
  ]
}

/**
 * The keys of 40-workers.yaml that follow the worker set. Each duty is named only when a worker
 * takes it (absent means the main process does it): instance_map lists main and every stream
 * writer (their replication listeners), stream_writers the streams moved off main,
 * federation_sender_instances / pusher_instances the senders, and the media repository is switched
 * off for every process but the media workers (their own files switch it back on).
 */
export function sharedWorkerConfig(vars: MatrixSettings, replicationSecret: string, synapseVersion?: string): Record<string, unknown> {
  const instances = workerInstances(vars)
  const table = routeTable(synapseVersion ?? vars.synapse.version)
  const instanceMap: Record<string, unknown> = { main: { host: reachAddress(vars), port: vars.workers.replicationPort } }
  for (const w of instances) if (w.replicationPort !== undefined) instanceMap[w.name] = { host: w.address, port: w.replicationPort }
  const names = (duty: Duty) => instances.filter((w) => KINDS[w.kind].duty === duty).map((w) => w.name)
  const config: Record<string, unknown> = {
    // Since 1.88 workers find the main process here (worker_replication_host/_http_port are gone).
    instance_map: instanceMap,
    worker_replication_secret: replicationSecret,
  }
  // Outgoing federation leaves the main process (no send_federation: this replaces it).
  const senders = names('federation_sender_instances')
  if (senders.length > 0) config.federation_sender_instances = senders
  const writers = streamWriters(instances, table.knownStreams)
  if (Object.keys(writers).length > 0) config.stream_writers = writers
  const pushers = names('pusher_instances')
  if (pushers.length > 0) config.pusher_instances = pushers
  for (const duty of ['notify_appservices_from_worker', 'update_user_directory_from_worker', 'run_background_tasks_on', 'media_instance_running_background_jobs'] as const) {
    const [first] = names(duty)
    if (first !== undefined) config[duty] = first
  }
  if (names('media_instance_running_background_jobs').length > 0) config.enable_media_repo = false
  return config
}

// ---------------------------------------------------------------------------------------------
// Logging

const LOG_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/

/** /etc/matrix-synapse/log.yaml for the main process, /etc/matrix-synapse/<worker>-log.yaml for a worker. */
export function logConfigPath(name: string): string {
  if (!LOG_NAME.test(name)) throw new Error(`log name must be lowercase letters, digits, "_" or "-", got ${JSON.stringify(name)}`)
  return name === MAIN_PROCESS_LOG_NAME ? `${SYNAPSE_CONFIG_DIR}/log.yaml` : `${SYNAPSE_CONFIG_DIR}/${name}-log.yaml`
}

export function logFilePath(name: string): string {
  logConfigPath(name)
  return `${SYNAPSE_LOG_DIR}/${name}.log`
}

/**
 * Python logging configuration: every record goes to stdout (journald adds the time and unit) and
 * to /var/log/matrix-synapse/<name>.log, unbuffered (Debian's default buffers INFO lines for up to
 * 5 s, which makes "is the request in the log yet" checks flaky). Request lines come from
 * synapse.access.http.<port> at INFO.
 */
export function renderLogConfig(name: string): RenderedFile {
  const config = {
    version: 1,
    formatters: {
      precise: { format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s' },
      journal: { format: '%(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s' },
    },
    handlers: {
      file: {
        class: 'logging.handlers.TimedRotatingFileHandler',
        formatter: 'precise',
        filename: logFilePath(name),
        when: 'midnight',
        backupCount: 3,
        encoding: 'utf8',
      },
      console: { class: 'logging.StreamHandler', formatter: 'journal', stream: 'ext://sys.stdout' },
    },
    loggers: {
      // Request lines ("Processed request ..."): the e2e tests look for them.
      'synapse.access.http': { level: 'INFO' },
      // DEBUG here would log access tokens.
      'synapse.storage.SQL': { level: 'INFO' },
    },
    root: { level: 'INFO', handlers: ['file', 'console'] },
    disable_existing_loggers: false,
  }
  return {
    path: logConfigPath(name),
    content: FILE_HEADER + `# Logging of ${name}: stdout (journald) and ${logFilePath(name)}.\n` + renderYaml(config),
    mode: 0o644,
    owner: 'root',
    group: SYNAPSE_GROUP,
    sensitive: false,
  }
}

// ---------------------------------------------------------------------------------------------
// pip install method: unit and homeserver.yaml

const CONFIG_ARGS = `--config-path=${HOMESERVER_YAML} --config-path=${SYNAPSE_CONF_D}/`

/**
 * The systemd sandbox of upstream's units (docs/systemd-with-workers). Shared by the main unit
 * (pip) and the worker template.
 */
const SANDBOX = `# The following directives give the synapse service R/W access to:
# - /run/matrix-synapse
# - /var/lib/matrix-synapse
# - /var/log/matrix-synapse

RuntimeDirectory=matrix-synapse
# Shared by main and every worker: without this, one unit's stop removes /run/matrix-synapse while
# another sets up its mount namespace, which then fails with 226/NAMESPACE (3 of 12 restarts, reproduced).
RuntimeDirectoryPreserve=yes
StateDirectory=matrix-synapse
StateDirectoryMode=0750
LogsDirectory=matrix-synapse
LogsDirectoryMode=0750

######################
## Security Sandbox ##
######################

PrivateTmp=true
PrivateDevices=true
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectControlGroups=true
ProtectClock=true
ProtectHostname=true
ProtectHome=tmpfs
ProtectKernelLogs=true
ProtectProc=invisible
ProcSubset=pid
PrivateNetwork=false
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
IPAddressAllow=any
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources @obsolete
RestrictSUIDSGID=true
RemoveIPC=true
NoNewPrivileges=true
RestrictRealtime=true
RestrictNamespaces=true
LockPersonality=true
PrivateUsers=true
# Python needs writable and executable memory.
MemoryDenyWriteExecute=false
`

/** The systemd sandbox, for the worker template (tasks/workers). */
export const SYNAPSE_SANDBOX = SANDBOX

/**
 * /etc/systemd/system/matrix-synapse.service for the pip install method: the Debian package's unit
 * in upstream's systemd-with-workers form (PartOf/WantedBy matrix-synapse.target), without the
 * package's `ExecStartPre=... --generate-keys`: the signing-key resource (signing-key.ts) has Synapse
 * generate the key before the first start, so that second interpreter (Synapse's imports and config
 * load, 1-3 s) only lengthened every start, the upgrade's client-API gap included. A key deleted by
 * hand then stops the start instead of silently giving the server a new identity. ProtectSystem=strict
 * keeps /etc (the key and config) read-only to the service.
 */
export function renderSynapseUnit(): string {
  return `# Managed by matrix-provision: changes here are overwritten on the next run.
[Unit]
Description=Synapse Matrix homeserver
# Restarted and reloaded with matrix-synapse.target (which the workers are part of too).
PartOf=matrix-synapse.target
ReloadPropagatedFrom=matrix-synapse.target

[Service]
Type=notify
NotifyAccess=main
User=${SYNAPSE_USER}
WorkingDirectory=${SYNAPSE_DATA_DIR}
EnvironmentFile=-/etc/default/matrix-synapse
ExecStart=${SYNAPSE_PYTHON} -m synapse.app.homeserver ${CONFIG_ARGS}
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=3
SyslogIdentifier=matrix-synapse

${SANDBOX}
[Install]
WantedBy=matrix-synapse.target
`
}

/**
 * apt install method: a drop-in that makes the package's own matrix-synapse.service part of
 * matrix-synapse.target, so `systemctl restart matrix-synapse.target` restarts the main process
 * with the workers. (The package unit keeps WantedBy=multi-user.target; [Install] cannot be changed
 * from a drop-in.)
 */
export function renderSynapseServiceDropIn(): string {
  return `# Managed by matrix-provision: changes here are overwritten on the next run.
[Unit]
PartOf=matrix-synapse.target
ReloadPropagatedFrom=matrix-synapse.target
`
}

/**
 * /etc/matrix-synapse/homeserver.yaml for the pip install method: everything is in conf.d/, so this
 * holds no key at all. It is `{}` rather than empty because Synapse prints "File ... is empty or
 * doesn't parse into a key-value map. IGNORING." for an empty file.
 */
export function renderBaseHomeserverYaml(): string {
  return `${FILE_HEADER}#
# Synapse reads this file first, then ${SYNAPSE_CONF_D}/*.yaml in name order (later
# top-level keys replace earlier ones). Every setting lives in conf.d/, as with the Debian
# package, so this file holds none: an empty mapping.
{}
`
}
