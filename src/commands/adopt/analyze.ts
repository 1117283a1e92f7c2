/**
 * From the files of a server built by hand (the guide's way) to the inventory's terms: what is kept,
 * which secrets are taken over, what maps to a setting, what today's form replaces, what has no name
 * in the inventory (kept verbatim in extraConfig), and what cannot be adopted safely (refusals).
 * Pure: the host's files and the inventory's host in, an Adoption out.
 */
import { parse } from 'yaml'
import type { AdoptedSettings } from '../../engine/host-state.js'
import type { AdoptionNote, NoteKind } from '../../engine/report-types.js'
import type { SecretValue } from '../../core/secret.js'
import type { HostSpec } from '../../inventory/types.js'
import { FEDERATION_ROUTES } from '../../synapse/routes.js'
import { workerInstances } from '../../inventory/workers.js'
import { RESERVED_SYNAPSE_KEYS } from '../../../tasks/synapse/templates/homeserver.js'
import { DELEGATION_SITE_PATH, ELEMENT_SITE_PATH, MATRIX_SITE_PATH } from '../../../tasks/apache/templates.js'
import type { HandBuiltFiles } from './host-files.js'
import {
  HOMESERVER_YAML,
  MEDIA_STORE_PATH,
  SIGNING_KEY_PATH,
  SYNAPSE_CONF_D,
  SYNAPSE_CONFIG_DIR,
  SYNAPSE_UNIT_DROP_IN_PATH,
  SYNAPSE_WORKERS_DIR,
  WORKER_UNIT_PATH,
} from '../../synapse/paths.js'

const CONF_D = `${SYNAPSE_CONF_D}/`
const WORKERS_DIR = `${SYNAPSE_WORKERS_DIR}/`
/** Our own drop-in of the apt method: not the admin's. */
const OWN_DROP_IN = SYNAPSE_UNIT_DROP_IN_PATH

export interface TakenSecret {
  /** Name in the host's secret store (the inventory's `{ generate: true }` name). */
  name: string
  value: string
  from: string
}

export interface Adoption {
  refusals: string[]
  secrets: TakenSecret[]
  adopted: AdoptedSettings
  notes: AdoptionNote[]
  /** Files the conversion takes out of service (moved into the backup): old vhost links, unit drop-ins. */
  retire: string[]
  /** Files copied into the backup before anything changes. */
  backup: string[]
}

type Yaml = Record<string, unknown>

const isMap = (v: unknown): v is Yaml => v !== null && typeof v === 'object' && !Array.isArray(v)
// A YAML value in a message: a string as it is, anything else as JSON (a map shows its keys, not '[object Object]').
const text = (v: unknown): string => (typeof v === 'string' ? v : (JSON.stringify(v) ?? 'undefined'))
const LOCAL_DB_HOSTS = new Set(['localhost', '127.0.0.1', '::1', '', '/var/run/postgresql', '/run/postgresql'])

function parseYaml(text: string, path: string, refusals: string[]): Yaml {
  try {
    const v = parse(text, { version: '1.1' }) as unknown
    if (v === null || v === undefined) return {}
    if (!isMap(v)) {
      refusals.push(`${path} is not a mapping of settings`)
      return {}
    }
    return v
  } catch (error) {
    refusals.push(`${path} does not parse as YAML: ${(error as Error).message.split('\n')[0]}`)
    return {}
  }
}

/** Names a listener by its port and resources: `listeners[8008: client, federation]`. */
function listenerResources(l: Yaml): string[] {
  const res = Array.isArray(l.resources) ? l.resources : []
  return res.flatMap((r) => (isMap(r) && Array.isArray(r.names) ? r.names.map(String) : []))
}

function bindOf(l: Yaml): string[] {
  const out = Array.isArray(l.bind_addresses) ? l.bind_addresses.map(String) : []
  if (typeof l.bind_address === 'string') out.push(l.bind_address)
  return out
}

/**
 * The adoption of one host. `inventorySecret` reveals a secret the inventory gives explicitly (env or
 * file); generated ones (`{ generate: true }`) take the host's value.
 */
export function analyzeHandBuilt(found: HandBuiltFiles, host: HostSpec, inventoryFile: string): Adoption {
  const v = host.vars
  const refusals: string[] = []
  const notes: AdoptionNote[] = []
  const secrets: TakenSecret[] = []
  const extraConfig: Record<string, unknown> = {}
  const backup: string[] = []
  const retire: string[] = []
  const note = (kind: NoteKind, f: string, becomes: string) => notes.push({ kind, found: f, becomes })

  const homeserverText = found.files.get(HOMESERVER_YAML)
  if (homeserverText === undefined) {
    return {
      refusals: [`no ${HOMESERVER_YAML} on this host: there is no Synapse to adopt (a plain run sets one up)`],
      secrets,
      adopted: { signingKeyPath: SIGNING_KEY_PATH, mediaStorePath: MEDIA_STORE_PATH, extraConfig },
      notes,
      retire,
      backup,
    }
  }
  // Synapse's own reading: homeserver.yaml, then conf.d/*.yaml in name order, top-level keys replaced.
  const sources: [string, Yaml][] = [[HOMESERVER_YAML, parseYaml(homeserverText, HOMESERVER_YAML, refusals)]]
  for (const path of [...found.files.keys()].filter((p) => p.startsWith(CONF_D)).sort())
    sources.push([path, parseYaml(found.files.get(path)!, path, refusals)])
  const config: Yaml = {}
  const origin = new Map<string, string>()
  for (const [path, body] of sources) {
    for (const [k, value] of Object.entries(body)) {
      config[k] = value
      origin.set(k, path.replace(`${SYNAPSE_CONFIG_DIR}/`, ''))
    }
  }
  backup.push(...sources.map(([p]) => p))
  const at = (key: string) => `${origin.get(key) ?? 'homeserver.yaml'}: ${key}`
  const handled = new Set<string>()
  const take = (key: string) => {
    handled.add(key)
    return config[key]
  }

  // Identity: server name, signing key, media.
  const serverName = take('server_name')
  if (serverName !== v.serverName) {
    refusals.push(
      serverName === undefined
        ? `${HOMESERVER_YAML} has no server_name; adopting needs the server's name to match serverName (${v.serverName})`
        : `the host's server_name is ${JSON.stringify(serverName)} but the inventory's serverName is ${JSON.stringify(v.serverName)}: user IDs and the federation identity hang on it and can never change. Set serverName: ${text(serverName)} for this host in ${inventoryFile}`,
    )
  } else note('kept', at('server_name'), `serverName ${v.serverName}`)

  const keyPath = typeof config.signing_key_path === 'string' ? config.signing_key_path : undefined
  take('signing_key_path')
  if (!keyPath)
    refusals.push(
      `${HOMESERVER_YAML} names no signing_key_path: the server's signing key cannot be found, and a new one is a new federation identity`,
    )
  else if (!found.signingKeys.includes(keyPath))
    refusals.push(
      `the signing key ${keyPath} named by signing_key_path does not exist on the host (found: ${found.signingKeys.join(', ') || 'none'})`,
    )
  else if (v.synapse.signingKeyPath && v.synapse.signingKeyPath !== keyPath)
    refusals.push(
      `the inventory's synapse.signingKeyPath is ${v.synapse.signingKeyPath} but the server signs with ${keyPath}: another key is another federation identity. Drop synapse.signingKeyPath or set it to ${keyPath}`,
    )
  else note('kept', at('signing_key_path'), `${keyPath}, its bytes unchanged (synapse.signingKeyPath)`)

  const mediaPath = typeof config.media_store_path === 'string' ? config.media_store_path : '/var/lib/matrix-synapse/media_store'
  take('media_store_path')
  if (v.synapse.mediaStorePath && v.synapse.mediaStorePath !== mediaPath)
    refusals.push(
      `the inventory's synapse.mediaStorePath is ${v.synapse.mediaStorePath} but the server's media are in ${mediaPath}: drop synapse.mediaStorePath or set it to ${mediaPath}`,
    )
  else
    note(
      'kept',
      config.media_store_path === undefined ? "media_store_path (Synapse's default)" : at('media_store_path'),
      `${mediaPath} (synapse.mediaStorePath)`,
    )

  // Database: Postgres only; name and user kept; the password taken over.
  const db = take('database')
  const dbArgs = isMap(db) && isMap(db.args) ? db.args : {}
  if (!isMap(db) || db.name === 'sqlite3' || db.name === undefined) {
    refusals.push(
      `the server uses SQLite (${text(dbArgs.database ?? '/var/lib/matrix-synapse/homeserver.db')}): matrix-provision runs Synapse on PostgreSQL only. Port the database first (synapse_port_db, see Synapse's docs/postgres.md), then adopt`,
    )
  } else if (db.name !== 'psycopg2') {
    refusals.push(`database.name is ${JSON.stringify(db.name)}: only psycopg2 (PostgreSQL) can be adopted`)
  } else {
    const dbName = text(dbArgs.dbname ?? dbArgs.database ?? '')
    const dbUser = text(dbArgs.user ?? '')
    const dbHost = text(dbArgs.host ?? '')
    if (dbName !== v.postgres.database)
      refusals.push(
        `the server's database is ${JSON.stringify(dbName)} but postgres.database is ${JSON.stringify(v.postgres.database)}: set postgres.database: ${dbName} in ${inventoryFile} (the data stays where it is)`,
      )
    if (dbUser !== v.postgres.user)
      refusals.push(
        `the server connects as ${JSON.stringify(dbUser)} but postgres.user is ${JSON.stringify(v.postgres.user)}: set postgres.user: ${dbUser} in ${inventoryFile}`,
      )
    const dbIsLocal = LOCAL_DB_HOSTS.has(dbHost)
    const inventoryLocal = !v.postgres.host || v.postgres.host === host.name
    if (dbIsLocal !== inventoryLocal)
      refusals.push(
        `the server's database is on ${dbHost || 'this host'} but the inventory puts Postgres on ${v.postgres.host}: adopting moves no database`,
      )
    if (refusals.length === 0)
      note(
        'kept',
        at('database'),
        `postgres.database ${dbName}, postgres.user ${dbUser} (psycopg2 on ${dbHost || 'the local socket'} -> 127.0.0.1:${v.postgres.port})`,
      )
    if (dbArgs.database !== undefined) note('replaced', `${at('database')}.args.database`, 'dbname (the current key)')
    if (typeof dbArgs.password === 'string')
      secrets.push({ name: 'postgres-password', value: dbArgs.password, from: `${at('database')}.args.password` })
    else
      refusals.push(
        `${at('database')} has no password: matrix-provision connects over TCP with a password (scram-sha-256); set one on the role and in the config first`,
      )
    const extraArgs = Object.keys(dbArgs).filter(
      (k) => !['user', 'password', 'database', 'dbname', 'host', 'port', 'cp_min', 'cp_max'].includes(k),
    )
    if (extraArgs.length)
      note('not mapped', `${at('database')}.args.${extraArgs.join(', ')}`, 'dropped: the database block is written from postgres.*')
  }

  // Secrets: taken over into the host's secret store, unless the inventory gives another value.
  for (const [key, name] of [
    ['macaroon_secret_key', 'macaroon-secret'],
    ['form_secret', 'form-secret'],
    ['registration_shared_secret', 'registration-shared-secret'],
    ['worker_replication_secret', 'replication-secret'],
  ] as const) {
    const value = take(key)
    if (typeof value === 'string' && value !== '') secrets.push({ name, value, from: at(key) })
  }
  if (config.registration_shared_secret_path !== undefined) {
    take('registration_shared_secret_path')
    note(
      'not mapped',
      at('registration_shared_secret_path'),
      'the file is not read; a new registration_shared_secret is generated unless the inventory gives one',
    )
  }
  const inventorySecrets: Record<string, SecretValue | undefined> = {
    'postgres-password': v.postgres.password,
    'macaroon-secret': v.synapse.macaroonSecret,
    'form-secret': v.synapse.formSecret,
    'registration-shared-secret': v.synapse.registrationSharedSecret,
    'replication-secret': v.workers.replicationSecret,
  }
  for (const s of secrets) {
    const given = inventorySecrets[s.name]
    if (given?.kind === 'value' && given.secret.reveal() !== s.value) {
      refusals.push(
        `the inventory gives ${s.name} (${given.secret.source}) but the server has another in ${s.from}: ${s.name === 'macaroon-secret' ? 'every access token would stop working' : s.name === 'postgres-password' ? 'the role password would change under the running server' : 'registration and forms would break'}. Use { generate: true } (the host's value is kept) or give the same value`,
      )
    } else note('secret', s.from, `secret store ${s.name} (value kept, masked)`)
  }
  if (!secrets.some((s) => s.name === 'replication-secret') && host.roles.includes('workers'))
    note('changes', 'no worker_replication_secret', 'one is generated: the replication listener gets authenticated')

  // Listeners -> ports.
  const listeners = (Array.isArray(take('listeners')) ? (config.listeners as unknown[]) : []).filter(isMap)
  for (const l of listeners) {
    const res = listenerResources(l)
    const port = Number(l.port)
    const where = `${at('listeners')}[${port}: ${l.type === 'metrics' ? 'metrics' : res.join(', ')}]`
    let setting: [string, number] | undefined
    if (l.type === 'metrics') setting = ['monitoring.mainMetricsPort', v.monitoring.mainMetricsPort]
    else if (res.includes('replication')) setting = ['workers.replicationPort', v.workers.replicationPort]
    else if (res.includes('client') || res.includes('federation')) setting = ['synapse.listenPort', v.synapse.listenPort]
    if (!setting) {
      note('not mapped', where, 'dropped: the inventory has no listener of this kind')
      continue
    }
    const binds = bindOf(l)
    const bindNote = binds.length && binds.join(',') !== '127.0.0.1' ? ` (bound to ${binds.join(', ')} -> 127.0.0.1)` : ''
    note(setting[1] === port ? 'mapped' : 'changes', where, `${setting[0]} ${setting[1]}${bindNote}`)
  }

  // Plain settings with an inventory name.
  const simple: [string, string, unknown][] = [
    ['report_stats', 'synapse.reportStats', v.synapse.reportStats],
    ['enable_registration', 'synapse.enableRegistration', v.synapse.enableRegistration],
    ['enable_metrics', 'monitoring.enableMetrics', v.monitoring.enableMetrics],
  ]
  for (const [key, setting, value] of simple) {
    if (config[key] === undefined) continue
    take(key)
    note(config[key] === value ? 'mapped' : 'changes', `${at(key)}: ${JSON.stringify(config[key])}`, `${setting} ${JSON.stringify(value)}`)
  }
  if (config.public_baseurl !== undefined) {
    take('public_baseurl')
    const want = v.publicBaseUrl.endsWith('/') ? v.publicBaseUrl : `${v.publicBaseUrl}/`
    note(
      config.public_baseurl === want ? 'mapped' : 'changes',
      `${at('public_baseurl')}: ${text(config.public_baseurl)}`,
      `publicBaseUrl ${want}`,
    )
  }
  const redis = take('redis')
  if (isMap(redis)) {
    const port = Number(redis.port ?? 6379)
    note(
      port === v.redis.port ? 'mapped' : 'changes',
      `${at('redis')}: enabled ${String(redis.enabled)}, port ${port}`,
      `redis.port ${v.redis.port}${host.roles.includes('workers') ? ' (enabled with the workers role)' : ''}`,
    )
    if (typeof redis.password === 'string' && !v.redis.password)
      note('changes', `${at('redis')}.password`, 'dropped: the inventory sets no redis.password')
  }
  const caches = config.caches
  if (isMap(caches) && Object.keys(caches).length === 1 && typeof caches.global_factor === 'number') {
    take('caches')
    note(
      caches.global_factor === v.synapse.cacheFactor ? 'mapped' : 'changes',
      `${at('caches')}.global_factor ${caches.global_factor}`,
      `synapse.cacheFactor ${v.synapse.cacheFactor}`,
    )
  }
  if (config.federation_custom_ca_list !== undefined) {
    take('federation_custom_ca_list')
    note('not mapped', at('federation_custom_ca_list'), 'dropped: give the CA files as synapse.federationCaFiles (controller paths)')
  }

  // The guide's worker-era settings of the main process: today's form replaces them.
  const replacedBy: Record<string, string> = {
    daemonize: 'systemd runs Synapse in the foreground (Type=notify units); the Type=forking drop-in goes too',
    worker_app: 'the main process needs none',
    send_federation: 'federation_sender_instances: [federation_sender]',
    pid_file: `${'/run/matrix-synapse/homeserver.pid'} (unused under systemd)`,
    log_config: '/etc/matrix-synapse/log.yaml (journald and /var/log/matrix-synapse/homeserver.log)',
    instance_map: 'instance_map.main from workers.replicationPort',
    federation_sender_instances: 'the workers role',
    worker_replication_host: 'instance_map.main (removed in Synapse 1.88)',
    worker_replication_http_port: 'instance_map.main (removed in Synapse 1.88)',
    start_pushers: 'the main process sends pushes',
  }
  for (const [key, by] of Object.entries(replacedBy)) {
    if (config[key] === undefined) continue
    take(key)
    note('replaced', `${at(key)}: ${typeof config[key] === 'object' ? '…' : text(config[key])}`, by)
  }
  // Defaults the tool writes itself: nothing to keep when the host has the same.
  const sameAsOurs: Record<string, unknown> = { trusted_key_servers: [{ server_name: 'matrix.org' }], suppress_key_server_warning: true }
  for (const [key, ours] of Object.entries(sameAsOurs)) {
    if (config[key] !== undefined && JSON.stringify(config[key]) === JSON.stringify(ours)) {
      take(key)
      note('mapped', at(key), 'the same default')
    }
  }
  // Everything else has no inventory name: kept verbatim (synapse.extraConfig, merged last).
  for (const [key, value] of Object.entries(config)) {
    if (handled.has(key)) continue
    if (RESERVED_SYNAPSE_KEYS[key] !== undefined) {
      note('not mapped', at(key), `dropped: ${RESERVED_SYNAPSE_KEYS[key]}`)
      continue
    }
    if (key in v.synapse.extraConfig) {
      note('mapped', at(key), 'synapse.extraConfig of the inventory (its value wins)')
      continue
    }
    extraConfig[key] = value
    note('extraConfig', at(key), 'kept verbatim (the host records it; synapse.extraConfig of the inventory wins)')
  }

  // Workers: the guide's two, by their app and listeners.
  const workerFiles = [...found.files.keys()].filter((p) => p.startsWith(WORKERS_DIR) && p.endsWith('.yaml')).sort()
  for (const path of workerFiles) {
    const w = parseYaml(found.files.get(path)!, path, refusals)
    backup.push(path)
    const file = path.replace(`${SYNAPSE_CONFIG_DIR}/`, '')
    const app = text(w.worker_app ?? '')
    const name = text(w.worker_name ?? path.slice(WORKERS_DIR.length, -'.yaml'.length))
    const wl = (Array.isArray(w.worker_listeners) ? w.worker_listeners : []).filter(isMap)
    const http = wl.find((l) => l.type === 'http' && listenerResources(l).includes('federation'))
    const metrics = wl.find((l) => l.type === 'metrics')
    const replication = w.worker_replication_host !== undefined || w.worker_replication_http_port !== undefined
    if (!host.roles.includes('workers')) {
      note('not mapped', `${file} (${app})`, 'the host has no workers role in the inventory: the worker is stopped and its unit left alone')
      continue
    }
    // The inventory's worker of the same job (the guide preset names them as the guide does).
    const instances = workerInstances(v)
    const sender = instances.find((i) => i.kind === 'federation_sender')
    const reader = instances.find((i) => i.kind === 'federation_reader' || i.kind === 'generic')
    if ((app === 'synapse.app.federation_sender' || name === 'federation_sender') && sender) {
      note(
        metrics && Number(metrics.port) !== sender.metricsPort ? 'changes' : 'mapped',
        `${file}: ${app}${metrics ? `, metrics ${String(metrics.port)}` : ''}`,
        `worker ${sender.name}: synapse.app.generic_worker in federation_sender_instances, metrics ${sender.metricsPort}`,
      )
    } else if (http && (app === 'synapse.app.generic_worker' || app === 'synapse.app.federation_reader') && reader) {
      note(
        Number(http.port) !== reader.port ? 'changes' : 'mapped',
        `${file}: ${app} ${name}, http ${String(http.port)}${metrics ? `, metrics ${String(metrics.port)}` : ''}`,
        `worker ${reader.name} (${reader.kind}): http ${reader.port}, metrics ${reader.metricsPort}`,
      )
    } else {
      note(
        'not mapped',
        `${file} (${app} ${name})`,
        `the inventory's workers (${instances.map((i) => i.name).join(', ') || 'none'}) have no counterpart: this file and its unit are left alone`,
      )
      continue
    }
    if (replication)
      note(
        'replaced',
        `${file}: worker_replication_host/_http_port`,
        'instance_map.main in conf.d/40-workers.yaml (a ConfigError since Synapse 1.88)',
      )
  }

  // Apache: the guide's vhosts for our names are retired (their link moved into the backup).
  const ours = new Set([MATRIX_SITE_PATH, DELEGATION_SITE_PATH, ELEMENT_SITE_PATH])
  const names = new Set([v.publicHost, v.serverName.replace(/:\d+$/, '')])
  for (const [link, target] of found.enabledSites) {
    if (ours.has(target)) continue
    const text = found.files.get(target) ?? ''
    const serves = [...text.matchAll(/^\s*Server(?:Name|Alias)\s+(.+)$/gim)]
      .flatMap((m) => m[1]!.trim().split(/\s+/))
      .filter((n) => names.has(n))
    if (serves.length === 0) continue
    backup.push(target)
    retire.push(link)
    const routes = [
      ...text.matchAll(/^\s*ProxyPass\s+"?(\/_matrix\/(?:federation|key)\/[^"\s]+)"?\s+"?http:\/\/127\.0\.0\.1:(\d+)/gim),
    ].filter((m) => Number(m[2]) !== v.synapse.listenPort)
    const dropped = routes
      .map((m) => m[1]!)
      .filter((p) => !FEDERATION_ROUTES.some((r) => new RegExp(r).test(p.endsWith('/') ? `${p}x` : p)))
    note(
      'retired',
      `${target} (${[...new Set(serves)].join(', ')}${routes.length ? `; ${routes.length} ProxyPass routes to the federation_reader` : ''})`,
      `disabled; ${MATRIX_SITE_PATH}${v.apache.delegation === 'well-known' ? ` and ${DELEGATION_SITE_PATH}` : ''} serve these names${routes.length ? ` with today's ${FEDERATION_ROUTES.length} federation_reader routes` : ''}${dropped.length ? ` (no longer routed to it: ${dropped.join(', ')})` : ''}`,
    )
  }

  // systemd: the admin's drop-ins of the main unit (the guide's daemonize needs Type=forking).
  for (const dropIn of found.unitDropIns) {
    if (dropIn === OWN_DROP_IN) continue
    backup.push(dropIn)
    retire.push(dropIn)
    note('retired', dropIn, 'moved into the backup: matrix-provision writes the unit whole (Type=notify, matrix-synapse.target)')
  }
  for (const path of [WORKER_UNIT_PATH, '/etc/redis/redis.conf']) if (found.files.has(path)) backup.push(path)

  return {
    refusals,
    secrets,
    adopted: { signingKeyPath: keyPath ?? SIGNING_KEY_PATH, mediaStorePath: mediaPath, extraConfig },
    notes,
    retire,
    backup,
  }
}
