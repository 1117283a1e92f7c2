/** The restore's changes on the hosts: the signing key, the secrets, the database swap and the media swap. */
import type { Readable } from 'node:stream'
import { Secret } from '../../core/secret.js'
import { sh, type ShellCommand } from '../../core/shell.js'
import { createRestoringDatabase, swapInRestored } from '../../resources/database-swap.js'
import { psqlRows } from '../../resources/homeserver-state.js'
import { sqlLiteral } from '../../resources/postgres.js'
import type { Connection } from '../../ssh/connection.js'
import { databaseRestoreCommand } from '../../synapse/backup/database-dump.js'
import { MEDIA_PARTS } from '../../synapse/backup/parts.js'
import { MEDIA_STORE_PATH, SIGNING_KEY_PATH, STATE_DIR, SYNAPSE_DATA_DIR, SYNAPSE_GROUP, SYNAPSE_USER } from '../../synapse/paths.js'
import type { Manifest } from './manifest.js'
import { openPart, readPart } from './restore-input.js'
import type { TransferProgress } from './transfer-progress.js'

export interface RestoreTarget {
  host: string
  /** The homeserver's main host, its database host and the host of its media store. */
  conn: Connection
  dbConn: Connection
  mediaConn: Connection
  dir: string
  manifest: Manifest
  identity: string | undefined
  progress: TransferProgress
}

const exec = async (c: Connection, command: ShellCommand, what: string, stdin?: string | Buffer | Readable) =>
  await c.run(command, { stdin, timeoutMs: 0, secretOutput: true, what })

/**
 * The suffix under which --force keeps what it replaces: `_replaced_N`, the first N for which neither the
 * database `<database>_replaced_N` nor the media directory `media-replaced-N` exists. Read from the
 * targets, not from the clock, so the dry run names exactly what the restore will create.
 */
export async function replacedSuffix(t: RestoreTarget, database: string): Promise<string> {
  const prefix = `${database}_replaced_`
  const databases = new Set(
    (await psqlRows(t.dbConn, 'postgres', `SELECT datname FROM pg_database WHERE starts_with(datname, ${sqlLiteral(prefix)})`)).map(
      ([name]) => name,
    ),
  )
  const dirs = new Set((await t.mediaConn.run(sh`ls -1A ${SYNAPSE_DATA_DIR}`, { allowFailure: true })).stdout.split('\n'))
  let n = 1
  while (databases.has(`${prefix}${n}`) || dirs.has(`media-replaced-${n}`)) n++
  return `_replaced_${n}`
}

export async function writeSigningKey(t: RestoreTarget): Promise<void> {
  const key = await readPart(t.dir, t.manifest, 'signingKey', t.identity)
  await t.conn.writeFile({
    path: SIGNING_KEY_PATH,
    content: new Secret(key.toString('utf8'), 'restored signing key'),
    owner: SYNAPSE_USER,
    group: SYNAPSE_GROUP,
    mode: 0o600,
  })
}

export async function unpackSecrets(t: RestoreTarget): Promise<void> {
  const tar = await readPart(t.dir, t.manifest, 'secrets', t.identity)
  await exec(
    t.conn,
    sh`mkdir -p -m 0700 ${STATE_DIR} && tar -x -f - -C ${STATE_DIR} --same-owner --same-permissions`,
    'unpacking the secrets',
    tar,
  )
}

/** pg_restore of the dump into `<database>_restoring` on the database host, then swapped in whole. */
export async function restoreDatabase(t: RestoreTarget, o: { database: string; owner: string; exists: boolean; keepAs?: string }) {
  const restoring = await createRestoringDatabase(t.dbConn, o.database, o.owner)
  const entry = t.manifest.files.find((f) => f.part === 'database')!
  const t0 = Date.now()
  t.progress.start(t.host, entry.name, entry.bytes)
  const part = openPart(t.dir, t.manifest, 'database', t.identity, (n) => t.progress.update(t.host, n))
  await exec(t.dbConn, databaseRestoreCommand(restoring, o.owner), 'pg_restore', part.stream)
  await part.done
  t.progress.end(t.host, entry.name, entry.bytes, Date.now() - t0)
  await swapInRestored(t.dbConn, o)
}

/** The media unpacked beside the store, then renamed in part by part (old parts moved to `keepDir`, or removed). */
export async function restoreMedia(t: RestoreTarget, staging: string, keepDir: string | undefined): Promise<void> {
  const entry = t.manifest.files.find((f) => f.part === 'media')!
  const owner = `${SYNAPSE_USER}:${SYNAPSE_GROUP}`
  await exec(t.mediaConn, sh`rm -rf ${staging} && mkdir -m 0750 ${staging} && chown ${owner} ${staging}`, 'preparing the media directory')
  const t0 = Date.now()
  t.progress.start(t.host, entry.name, entry.bytes)
  const part = openPart(t.dir, t.manifest, 'media', t.identity, (n) => t.progress.update(t.host, n))
  await exec(t.mediaConn, sh`tar -x -f - -C ${staging} --same-owner --same-permissions`, 'unpacking the media', part.stream)
  await part.done
  t.progress.end(t.host, entry.name, entry.bytes, Date.now() - t0)
  // Renames, no copy.
  const prepare = keepDir ? sh`mkdir -p -m 0750 ${keepDir} && chown ${owner} ${keepDir} && ` : sh``
  const setAside = keepDir ? sh`mv "$media/$d" ${keepDir}/"$d"` : sh`rm -rf "$media/$d"`
  await exec(
    t.mediaConn,
    sh`set -eu; media=${MEDIA_STORE_PATH}; new=${staging}; ${prepare}for d in ${[...MEDIA_PARTS]}; do if [ -e "$media/$d" ]; then ${setAside}; fi; if [ -e "$new/$d" ]; then mv "$new/$d" "$media/$d"; fi; done; rmdir "$new"`,
    'swapping the media in',
  )
}
