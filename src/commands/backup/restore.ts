import { createReadStream, existsSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { acquireLock, type HostLock } from '../../engine/lock.js'
import type { RunReport } from '../../engine/report-types.js'
import type { HostSpec, Inventory } from '../../inventory/types.js'
import { sqlIdent, sqlLiteral } from '../../resources/postgres.js'
import { maskSecrets, Secret } from '../../core/secret.js'
import type { Connection } from '../../ssh/connection.js'
import { sh, type ShellCommand } from '../../core/shell.js'
import { spansHosts } from '../../inventory/workers.js'
import { workerHosts, workerUnits } from '../../topology/instances.js'
import { ageDecrypt, childDone } from './age.js'
import { AFTER_RESTORE_SQL, databaseRestoreCommand } from '../../synapse/backup/database-dump.js'
import {
  describeContents,
  holdsData,
  psqlRows,
  readDatabaseState,
  readInstalledSynapse,
  signingKeyIdentity,
} from '../../resources/homeserver-state.js'
import { MEDIA_PARTS, MEDIA_SIZE_COMMAND, MANIFEST_FILE, type BackupPart } from '../../synapse/backup/parts.js'
import { BackupInputError, readManifest, verifyBackupFiles, type Manifest } from './manifest.js'
import { formatBytes, type TransferProgress } from './transfer-progress.js'
import {
  SECRETS_DIR,
  STATE_DIR,
  MEDIA_STORE_PATH,
  SIGNING_KEY_PATH,
  SYNAPSE_DATA_DIR,
  SYNAPSE_GROUP,
  SYNAPSE_UNIT,
  SYNAPSE_USER,
} from '../../synapse/paths.js'

export interface RestoreOptions {
  host: HostSpec
  /** The whole inventory: the database host, and the host's worker set. */
  inventory: Inventory
  /** A backup directory, or a directory holding backups (the newest of this host is taken). */
  from: string
  force: boolean
  /** age identity file, for an encrypted backup. */
  identity?: string
  dryRun: boolean
  connect(host: HostSpec): Promise<Connection>
  /** Apply the inventory to the host (inside the held lock): renders config with the restored secrets, starts main, then the workers, runs the after-checks. */
  applyInventory(): Promise<RunReport>
  progress: TransferProgress
}

export interface RestoreStep {
  action: 'stop' | 'signing-key' | 'secrets' | 'database' | 'media' | 'apply'
  summary: string
  done: boolean
  /** How long the step took (when done). */
  durationMs?: number
}

export interface RestoreReport {
  command: 'restore'
  host: string
  from: string
  /** planned: the dry run; refused: bad input or a target that holds data, nothing changed. */
  status: 'planned' | 'restored' | 'refused' | 'failed'
  manifest?: Pick<Manifest, 'serverName' | 'createdAt' | 'synapse' | 'signingKey' | 'host'>
  /** What the restore replaces on the target, in words (what --force overrides). */
  replaces: string[]
  steps: RestoreStep[]
  apply?: RunReport
  error?: string
  durationMs: number
}

/** A refusal: the target is left as it was. */
export class RestoreRefused extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'RestoreRefused'
  }
}

/** `--from`: a backup directory, or a directory of backups (then the newest taken from this host). */
export async function findBackupDir(from: string, hostName: string): Promise<string> {
  const dir = resolve(from)
  if (!existsSync(dir)) throw new BackupInputError(`--from ${from}: no such directory`)
  if (existsSync(join(dir, MANIFEST_FILE))) return dir
  const entries = (await readdir(dir, { withFileTypes: true })).filter(
    (e) => e.isDirectory() && !e.name.startsWith('.') && existsSync(join(dir, e.name, MANIFEST_FILE)),
  )
  const own = entries
    .filter((e) => e.name.startsWith(`${hostName}-`))
    .map((e) => e.name)
    .sort()
  if (own.length) return join(dir, own[own.length - 1]!)
  if (entries.length)
    throw new BackupInputError(
      `--from ${from}: no backup of ${hostName} here (found ${entries.map((e) => e.name).join(', ')}); name the backup directory itself`,
    )
  throw new BackupInputError(
    `--from ${from}: no ${MANIFEST_FILE} here nor in a subdirectory; --from names a directory written by provision backup`,
  )
}

/**
 * The suffix under which --force keeps what it replaces: `_replaced_N`, the first N for which neither the
 * database `<database>_replaced_N` nor the media directory `media-replaced-N` exists. Read from the
 * target, not from the clock, so the dry run names exactly what the restore will create.
 */
async function replacedSuffix(conn: Connection, dbConn: Connection, database: string): Promise<string> {
  const prefix = `${database}_replaced_`
  const databases = new Set(
    (await psqlRows(dbConn, 'postgres', `SELECT datname FROM pg_database WHERE starts_with(datname, ${sqlLiteral(prefix)})`)).map(
      ([name]) => name,
    ),
  )
  const dirs = new Set((await conn.run(sh`ls -1A ${SYNAPSE_DATA_DIR}`, { allowFailure: true })).stdout.split('\n'))
  let n = 1
  while (databases.has(`${prefix}${n}`) || dirs.has(`media-replaced-${n}`)) n++
  return `_replaced_${n}`
}

/** A part of the backup as a stream: the file, decrypted by age when the backup is encrypted. */
function openPart(
  dir: string,
  manifest: Manifest,
  part: BackupPart,
  identity: string | undefined,
  onBytes: (n: number) => void,
): { stream: Readable; done: Promise<unknown> } {
  const entry = manifest.files.find((f) => f.part === part)!
  let read = 0
  const counted = createReadStream(join(dir, entry.name), { highWaterMark: 256 * 1024 }).pipe(
    new Transform({
      transform(chunk: Buffer, _e, cb) {
        read += chunk.length
        onBytes(read)
        cb(null, chunk)
      },
    }),
  )
  if (!manifest.encryption) return { stream: counted, done: Promise.resolve() }
  if (!identity)
    throw new BackupInputError('this backup is encrypted: pass --identity FILE (an age identity matching one of its recipients)')
  const age = ageDecrypt(identity)
  const done = Promise.all([pipeline(counted, age.stdin!), childDone(age, `age --decrypt of ${entry.name}`)])
  done.catch(() => undefined)
  return { stream: age.stdout!, done }
}

async function readPart(dir: string, manifest: Manifest, part: BackupPart, identity: string | undefined): Promise<Buffer> {
  const { stream, done } = openPart(dir, manifest, part, identity, () => undefined)
  const chunks: Buffer[] = []
  for await (const c of stream) chunks.push(c as Buffer)
  await done
  return Buffer.concat(chunks)
}

/**
 * Restore a backup onto a host provisioned from the inventory. Every check runs before anything changes:
 * the files against the manifest's hashes, the server name, the schema and Synapse version, and whether
 * the database already holds data (refused unless --force). Then, in order: stop the workers and the
 * main process, restore the signing key, the secrets, the database (into a new database, swapped in
 * whole) and the media, and apply the inventory, which renders the configuration with the restored
 * secrets, starts main, then the workers, and runs every after-check.
 */
export async function restoreBackup(options: RestoreOptions): Promise<RestoreReport> {
  const started = Date.now()
  const { host, progress } = options
  const report: RestoreReport = {
    command: 'restore',
    host: host.name,
    from: resolve(options.from),
    status: 'failed',
    replaces: [],
    steps: [],
    durationMs: 0,
  }
  const connections: Connection[] = []
  const locks: HostLock[] = []
  try {
    if (spansHosts(host.vars)) {
      // Workers on other hosts would keep running (and writing) while the database is swapped, and the media belongs on the media repository's host.
      throw new RestoreRefused(
        `${host.name}'s workers run on other hosts (${workerHosts(options.inventory, host.name)
          .filter((h) => h !== host.name)
          .join(
            ', ',
          )}): restore supports a homeserver on one host. Remove workers.placement (and instance hosts) from the inventory, provision ${host.name}, restore, then spread the workers again`,
      )
    }
    const dir = await findBackupDir(options.from, host.name)
    report.from = dir
    const manifest = await readManifest(dir)
    report.manifest = {
      host: manifest.host,
      serverName: manifest.serverName,
      createdAt: manifest.createdAt,
      synapse: manifest.synapse,
      signingKey: manifest.signingKey,
    }
    if (manifest.serverName !== host.vars.serverName) {
      throw new RestoreRefused(
        `${dir} is a backup of ${manifest.serverName}, but ${host.name} serves ${host.vars.serverName}: a homeserver's data belongs to its server name (user IDs, room IDs, signatures); restore it onto a host whose serverName is ${manifest.serverName}`,
      )
    }
    if (manifest.encryption && !options.identity)
      throw new BackupInputError(
        `${dir} is encrypted to ${manifest.encryption.recipients.join(', ')}: pass --identity FILE with a matching age identity`,
      )
    progress.line(host.name, `checking ${manifest.files.length} files against ${join(dir, MANIFEST_FILE)}`)
    await verifyBackupFiles(dir, manifest)

    const conn = await options.connect(host)
    connections.push(conn)
    const dbHostName = host.vars.postgres.host ?? host.name
    let dbConn = conn
    if (dbHostName !== host.name) {
      const dbHost = options.inventory.hosts.find((h) => h.name === dbHostName)
      if (!dbHost) throw new Error(`postgres.host ${dbHostName} is not a host of the inventory`)
      dbConn = await options.connect(dbHost)
      connections.push(dbConn)
    }
    if (!options.dryRun) for (const c of connections) locks.push(await acquireLock(c))

    const installed = await readInstalledSynapse(conn)
    if (!installed)
      throw new RestoreRefused(
        `Synapse is not installed on ${host.name}: provision it from the inventory first (provision --inventory FILE --limit ${host.name}), then restore`,
      )
    if (manifest.synapse.schemaVersion > installed.schemaVersion) {
      throw new RestoreRefused(
        `the backup's database has schema version ${manifest.synapse.schemaVersion} (Synapse ${manifest.synapse.version}), newer than Synapse ${installed.version} on ${host.name} knows (${installed.schemaVersion}): it cannot run on it. Set synapse.version to "${manifest.synapse.version}" in the inventory, provision ${host.name}, then restore`,
      )
    }
    if (manifest.synapse.version !== installed.version) {
      throw new RestoreRefused(
        `the backup was taken with Synapse ${manifest.synapse.version}, ${host.name} runs ${installed.version}: restore onto the same version (set synapse.version to "${manifest.synapse.version}" in the inventory and provision ${host.name}), then upgrade`,
      )
    }
    const database = host.vars.postgres.database
    const db = await readDatabaseState(dbConn, database)
    const backupPgMajor = Number(manifest.database.postgresVersion.split('.')[0])
    const targetPgMajor = Number(db.postgresVersion.split('.')[0])
    if (backupPgMajor > targetPgMajor)
      throw new RestoreRefused(
        `the dump comes from PostgreSQL ${manifest.database.postgresVersion}; ${dbHostName} runs ${db.postgresVersion}, whose pg_restore cannot read it: restore onto PostgreSQL ${backupPgMajor} or newer`,
      )
    const mediaBytes = Number((await conn.run(MEDIA_SIZE_COMMAND)).stdout.trim()) || 0
    const keyNow = await conn.run(sh`cat ${SIGNING_KEY_PATH}`, { secretOutput: true, allowFailure: true })
    const currentKey = keyNow.code === 0 ? signingKeyIdentity(new Secret(keyNow.stdout, 'signing key').reveal()) : undefined
    const occupied = holdsData(db)
    const keep = occupied ? await replacedSuffix(conn, dbConn, database) : undefined
    report.replaces = [
      `database ${database} on ${dbHostName}: ${describeContents(db)}${keep ? ` (kept as ${database}${keep}; drop it when satisfied)` : ' (no Synapse data: dropped)'}`,
      `media store ${MEDIA_STORE_PATH}: ${formatBytes(mediaBytes)} in ${MEDIA_PARTS.join(', ')}${keep && mediaBytes ? ` (kept in ${SYNAPSE_DATA_DIR}/media${keep.replace(/_/g, '-')})` : ''}`,
      `signing key ${SIGNING_KEY_PATH}: ${currentKey ? `${currentKey.id} ${currentKey.publicKey}` : 'none'} -> ${manifest.signingKey.id} ${manifest.signingKey.publicKey}`,
      `generated secrets in ${SECRETS_DIR} (the configuration is rendered again from them)`,
    ]
    if (occupied && !options.force) {
      throw new RestoreRefused(
        `database ${database} on ${dbHostName} already holds Synapse data (${describeContents(db)}): a restore would replace it and everything listed under "replaces". Run again with --force to replace it (the old database and media are kept under the names given there)`,
      )
    }

    const workers = workerUnits(options.inventory, host.name)
    const steps: { step: RestoreStep; run: () => Promise<void> }[] = []
    const add = (action: RestoreStep['action'], summary: string, run: () => Promise<void>) =>
      steps.push({ step: { action, summary, done: false }, run })
    const exec = async (c: Connection, command: ShellCommand, what: string, stdin?: string | Buffer | Readable) =>
      await c.run(command, { stdin, timeoutMs: 0, secretOutput: true, what })

    add('stop', `stop ${[...workers, SYNAPSE_UNIT].join(', ')} (workers first)`, async () => {
      if (workers.length) await exec(conn, sh`systemctl stop ${workers}`, 'stopping the workers')
      await exec(conn, sh`systemctl stop ${SYNAPSE_UNIT}`, 'stopping Synapse')
    })
    add('signing-key', `write ${SIGNING_KEY_PATH} (${manifest.signingKey.id}, ${SYNAPSE_USER} 0600)`, async () => {
      const key = await readPart(dir, manifest, 'signingKey', options.identity)
      await conn.writeFile({
        path: SIGNING_KEY_PATH,
        content: new Secret(key.toString('utf8'), 'restored signing key'),
        owner: SYNAPSE_USER,
        group: SYNAPSE_GROUP,
        mode: 0o600,
      })
    })
    add('secrets', `unpack the generated secrets into ${SECRETS_DIR} (root 0600)`, async () => {
      const tar = await readPart(dir, manifest, 'secrets', options.identity)
      await exec(
        conn,
        sh`mkdir -p -m 0700 ${STATE_DIR} && tar -x -f - -C ${STATE_DIR} --same-owner --same-permissions`,
        'unpacking the secrets',
        tar,
      )
    })
    const restoring = `${database}_restoring`
    add(
      'database',
      `restore ${database} on ${dbHostName} into ${restoring} (pg_restore as ${host.vars.postgres.user}), truncate e2e_one_time_keys_json, then swap it in${keep ? ` (old one renamed ${database}${keep})` : ' (the empty one dropped)'}`,
      async () => {
        const psql = (db: string, sql: string) => psqlRows(dbConn, db, sql)
        await psql(
          'postgres',
          `DROP DATABASE IF EXISTS ${sqlIdent(restoring)};\nCREATE DATABASE ${sqlIdent(restoring)} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0 OWNER ${sqlIdent(host.vars.postgres.user)};`,
        )
        const entry = manifest.files.find((f) => f.part === 'database')!
        const t0 = Date.now()
        progress.start(host.name, entry.name, entry.bytes)
        const part = openPart(dir, manifest, 'database', options.identity, (n) => progress.update(host.name, n))
        await exec(dbConn, databaseRestoreCommand(restoring, host.vars.postgres.user), 'pg_restore', part.stream)
        await part.done
        progress.end(host.name, entry.name, entry.bytes, Date.now() - t0)
        await psql(restoring, AFTER_RESTORE_SQL)
        const old = sqlIdent(database)
        await psql(
          'postgres',
          [
            // Synapse is stopped; anything else still connected (a psql session) is ended, and waited for.
            `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ${sqlLiteral(database)} AND pid <> pg_backend_pid();`,
            `DO $$ BEGIN FOR i IN 1..50 LOOP EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = ${sqlLiteral(database)}); PERFORM pg_sleep(0.1); END LOOP; END $$;`,
            db.exists ? (keep ? `ALTER DATABASE ${old} RENAME TO ${sqlIdent(database + keep)};` : `DROP DATABASE ${old};`) : '',
            `ALTER DATABASE ${sqlIdent(restoring)} RENAME TO ${old};`,
          ].join('\n'),
        )
      },
    )
    const mediaNew = `${SYNAPSE_DATA_DIR}/.media-restoring`
    const mediaOld = `${SYNAPSE_DATA_DIR}/media${(keep ?? '').replace(/_/g, '-')}`
    add(
      'media',
      `unpack the media into ${mediaNew}, then swap ${MEDIA_PARTS.join(', ')} into ${MEDIA_STORE_PATH}${keep ? ` (old ones moved to ${mediaOld})` : ''}`,
      async () => {
        const entry = manifest.files.find((f) => f.part === 'media')!
        await exec(
          conn,
          sh`rm -rf ${mediaNew} && mkdir -m 0750 ${mediaNew} && chown ${`${SYNAPSE_USER}:${SYNAPSE_GROUP}`} ${mediaNew}`,
          'preparing the media directory',
        )
        const t0 = Date.now()
        progress.start(host.name, entry.name, entry.bytes)
        const part = openPart(dir, manifest, 'media', options.identity, (n) => progress.update(host.name, n))
        await exec(conn, sh`tar -x -f - -C ${mediaNew} --same-owner --same-permissions`, 'unpacking the media', part.stream)
        await part.done
        progress.end(host.name, entry.name, entry.bytes, Date.now() - t0)
        // Old media moved aside (kept when the target held data), new moved in: renames, no copy.
        const prepare = keep ? sh`mkdir -p -m 0750 ${mediaOld} && chown ${`${SYNAPSE_USER}:${SYNAPSE_GROUP}`} ${mediaOld} && ` : sh``
        const setAside = keep ? sh`mv "$media/$d" ${mediaOld}/"$d"` : sh`rm -rf "$media/$d"`
        await exec(
          conn,
          sh`set -eu; media=${MEDIA_STORE_PATH}; new=${mediaNew}; ${prepare}for d in ${[...MEDIA_PARTS]}; do if [ -e "$media/$d" ]; then ${setAside}; fi; if [ -e "$new/$d" ]; then mv "$new/$d" "$media/$d"; fi; done; rmdir "$new"`,
          'swapping the media in',
        )
      },
    )
    add(
      'apply',
      `apply the inventory to ${host.name}: configuration from the restored secrets, start matrix-synapse, then ${workers.length ? workers.join(', ') : 'no workers'}, after-checks`,
      async () => {
        const applied = await options.applyInventory()
        report.apply = applied
        const h = applied.hosts[0]
        if (!h || h.status === 'failed') throw new Error(`applying the inventory after the restore failed: ${h?.error ?? 'no report'}`)
        const key = await conn.run(sh`cat ${SIGNING_KEY_PATH}`, { secretOutput: true })
        const now = signingKeyIdentity(new Secret(key.stdout, 'signing key').reveal())
        if (now.publicKey !== manifest.signingKey.publicKey)
          throw new Error(`after the restore ${SIGNING_KEY_PATH} is ${now.id} ${now.publicKey}, not the backup's ${manifest.signingKey.id}`)
      },
    )

    report.steps = steps.map((s) => s.step)
    if (options.dryRun) {
      report.status = 'planned'
      return report
    }
    for (const s of steps) {
      progress.line(host.name, s.step.summary)
      const t0 = Date.now()
      await s.run()
      s.step.done = true
      s.step.durationMs = Date.now() - t0
    }
    report.status = 'restored'
    return report
  } catch (error) {
    report.error = maskSecrets(error instanceof Error ? error.message : String(error))
    report.status = error instanceof RestoreRefused || error instanceof BackupInputError ? 'refused' : 'failed'
    return report
  } finally {
    for (const l of locks) await l.release().catch(() => undefined)
    for (const c of connections) await c.close().catch(() => undefined)
    report.durationMs = Date.now() - started
  }
}
