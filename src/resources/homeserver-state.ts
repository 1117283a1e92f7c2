import { createPrivateKey, createPublicKey } from 'node:crypto'
import type { Connection } from '../ssh/connection.js'
import { raw, sh } from '../core/shell.js'
import { sqlLiteral } from './postgres.js'
import { SYNAPSE_PYTHON } from '../synapse/paths.js'

/** The Synapse installed on a host: its version and the newest database schema it knows (SCHEMA_VERSION). */
export interface InstalledSynapse {
  version: string
  schemaVersion: number
  schemaCompatVersion: number
}

export async function readInstalledSynapse(conn: Connection): Promise<InstalledSynapse | undefined> {
  const py =
    'import synapse; from synapse.storage.schema import SCHEMA_VERSION as v, SCHEMA_COMPAT_VERSION as c; print(synapse.__version__, v, c)'
  const r = await conn.run(sh`cd / && [ -x ${SYNAPSE_PYTHON} ] && ${SYNAPSE_PYTHON} -c ${py}`, { allowFailure: true })
  const m = /^(\S+) (\d+) (\d+)$/m.exec(r.stdout.trim())
  if (r.code !== 0 || !m) return undefined
  return { version: m[1]!, schemaVersion: Number(m[2]), schemaCompatVersion: Number(m[3]) }
}

/** What a Synapse database holds: enough to say what a restore would replace. */
export interface DatabaseState {
  exists: boolean
  postgresVersion: string
  /** schema_version.version; undefined when Synapse never ran on it. */
  schemaVersion?: number
  schemaCompatVersion?: number
  counts?: { users: number; rooms: number; events: number; localMedia: number }
}

const PSQL = raw`cd / && runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -F "$(printf "\\t")"`

/** psql as the postgres superuser on the database host; rows split on tabs. */
export async function psqlRows(conn: Connection, database: string, sql: string): Promise<string[][]> {
  const r = await conn.run(sh`${PSQL} -d ${database} -f -`, { stdin: sql, what: `psql on ${database}` })
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\t'))
}

export async function readDatabaseState(conn: Connection, database: string): Promise<DatabaseState> {
  const [[version, exists] = []] = await psqlRows(
    conn,
    'postgres',
    `SELECT current_setting('server_version'), EXISTS (SELECT 1 FROM pg_database WHERE datname = ${sqlLiteral(database)})`,
  )
  if (exists !== 't') return { exists: false, postgresVersion: version ?? '?' }
  const [[hasSchema] = []] = await psqlRows(
    conn,
    database,
    `SELECT to_regclass('public.schema_version') IS NOT NULL AND to_regclass('public.users') IS NOT NULL`,
  )
  if (hasSchema !== 't') return { exists: true, postgresVersion: version! }
  const [[schema, compat, users, rooms, events, media] = []] = await psqlRows(
    conn,
    database,
    `SELECT (SELECT version FROM schema_version), (SELECT max(compat_version) FROM schema_compat_version), (SELECT count(*) FROM users), (SELECT count(*) FROM rooms), (SELECT count(*) FROM events), (SELECT count(*) FROM local_media_repository)`,
  )
  return {
    exists: true,
    postgresVersion: version!,
    schemaVersion: Number(schema),
    schemaCompatVersion: compat ? Number(compat) : undefined,
    counts: { users: Number(users), rooms: Number(rooms), events: Number(events), localMedia: Number(media) },
  }
}

export function holdsData(state: DatabaseState): boolean {
  const c = state.counts
  return c !== undefined && c.users + c.rooms + c.events + c.localMedia > 0
}

export function describeContents(state: DatabaseState): string {
  const c = state.counts
  if (!c) return state.exists ? 'no Synapse tables' : 'does not exist'
  return `${c.users} users, ${c.rooms} rooms, ${c.events} events, ${c.localMedia} local media, schema ${state.schemaVersion}`
}

/**
 * The public identity of a Synapse signing key file (`ed25519 <version> <base64 seed>`): `ed25519:<version>`
 * and the unpadded base64 public key, as /_matrix/key/v2/server publishes it. The seed never leaves here.
 */
export function signingKeyIdentity(fileContent: string): { id: string; publicKey: string } {
  const [alg, version, seed] = fileContent.trim().split('\n')[0]!.split(/\s+/)
  if (alg !== 'ed25519' || !version || !seed) throw new Error('the signing key file is not in Synapse\'s "ed25519 <version> <key>" form')
  const raw = Buffer.from(seed, 'base64')
  if (raw.length !== 32) throw new Error('the signing key file does not hold a 32-byte ed25519 seed')
  const pkcs8 = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), raw])
  const spki = createPublicKey(createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' })).export({ format: 'der', type: 'spki' })
  return { id: `ed25519:${version}`, publicKey: spki.subarray(-32).toString('base64').replace(/=+$/, '') }
}
