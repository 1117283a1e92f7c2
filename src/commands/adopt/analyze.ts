/**
 * From the files of a server built by hand (the guide's way) to the inventory's terms: what is kept,
 * which secrets are taken over, what maps to a setting, what today's form replaces, what has no name
 * in the inventory (kept verbatim in extraConfig), and what cannot be adopted safely (refusals).
 * Pure: the host's files and the inventory's host in, an Adoption out. Here: Synapse's merged configuration,
 * identity, database and secrets; analyze-settings.ts and analyze-host.ts read the rest.
 */
import type { AdoptionNote, NoteKind } from '../../engine/report-types.js'
import type { SecretValue } from '../../core/secret.js'
import type { HostSpec } from '../../inventory/types.js'
import type { HandBuiltFiles } from './host-files.js'
import { HOMESERVER_YAML, MEDIA_STORE_PATH, SIGNING_KEY_PATH, SYNAPSE_CONF_D, SYNAPSE_CONFIG_DIR } from '../../synapse/paths.js'
import { analyzeHostFiles } from './analyze-host.js'
import { analyzeSettings } from './analyze-settings.js'
import { isMap, parseYaml, text, type Adoption, type Reading, type TakenSecret, type Yaml } from './reading.js'

const CONF_D = `${SYNAPSE_CONF_D}/`
const LOCAL_DB_HOSTS = new Set(['localhost', '127.0.0.1', '::1', '', '/var/run/postgresql', '/run/postgresql'])

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

  const r: Reading = { found, host, v, inventoryFile, refusals, notes, secrets, extraConfig, backup, retire, note }

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
  // Unset, Synapse keys its macaroons with registration_shared_secret, else with a hash of the signing key.
  const shared = secrets.find((s) => s.name === 'registration-shared-secret')
  if (!secrets.some((s) => s.name === 'macaroon-secret')) {
    if (shared)
      secrets.push({
        name: 'macaroon-secret',
        value: shared.value,
        from: `${shared.from} (Synapse's macaroon key, no macaroon_secret_key is set)`,
      })
    else
      note(
        'changes',
        'no macaroon_secret_key (Synapse derives one from the signing key)',
        'one is generated: access tokens (looked up in the database) keep working; guest tokens and login tokens issued before (valid for minutes) do not',
      )
  }
  for (const [key, name] of [
    ['form_secret', 'form-secret'],
    ['registration_shared_secret', 'registration-shared-secret'],
  ] as const)
    if (!secrets.some((s) => s.name === name) && config[`${key}_path`] === undefined)
      note('changes', `no ${key}`, `one is generated (secret store ${name}, in conf.d/30-secrets.yaml, 0640)`)
  if (isMap(db) && db.name === 'psycopg2')
    for (const f of found.sqliteFiles)
      note(
        'kept',
        `${f.path} (SQLite, ${Math.ceil(f.bytes / 1024)} KiB)`,
        'left in place, unused: the database is PostgreSQL (the package starts Synapse once on its SQLite default when installed); remove it by hand when you are sure',
      )
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

  // The rest of the configuration (analyze-settings.ts), then workers, vhosts and unit drop-ins (analyze-host.ts).
  analyzeSettings(r, { config, at, take, handled })
  analyzeHostFiles(r)

  return {
    refusals,
    secrets,
    adopted: { signingKeyPath: keyPath ?? SIGNING_KEY_PATH, mediaStorePath: mediaPath, extraConfig },
    notes,
    retire,
    backup,
  }
}
