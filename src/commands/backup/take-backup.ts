import { mkdir, rename, rm, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { acquireLock, type HostLock } from '../../engine/lock.js'
import type { HostSpec } from '../../inventory/types.js'
import { maskSecrets, Secret } from '../../core/secret.js'
import { RemoteCommandError, type Connection } from '../../ssh/connection.js'
import { AGE_SUFFIX } from './age.js'
import { readDatabaseState, readInstalledSynapse, signingKeyIdentity, psqlRows } from '../../resources/homeserver-state.js'
import {
  MEDIA_SIZE_COMMAND,
  partCommand,
  BACKUP_PARTS,
  MANIFEST_FILE,
  MANIFEST_FORMAT,
  PART_NAMES,
  type BackupPart,
} from '../../synapse/backup/parts.js'
import { type Manifest } from './manifest.js'
import { BackupFileWriter } from './stored-file.js'
import type { TransferProgress } from './transfer-progress.js'
import { sqlLiteral } from '../../resources/postgres.js'
import { mediaStoreHost } from '../../inventory/workers.js'
import { SIGNING_KEY_PATH } from '../../synapse/paths.js'

export interface BackupOptions {
  /** The homeservers to back up (hosts with the synapse role). */
  hosts: HostSpec[]
  /** Every host of the inventory: the database may live on one left out by --limit. */
  allHosts: HostSpec[]
  /** Directory on this machine; each backup is a new subdirectory <host>-<UTC time>. */
  to: string
  /** age recipients: encrypt every file to them (public keys only). */
  recipients?: string[]
  connect(host: HostSpec): Promise<Connection>
  progress: TransferProgress
}

export interface HostBackup {
  host: string
  status: 'ok' | 'failed'
  /** The backup directory (absolute). */
  dir?: string
  manifest?: Manifest
  error?: string
  durationMs: number
}

export interface BackupReport {
  command: 'backup'
  to: string
  hosts: HostBackup[]
  durationMs: number
}

/** Back up every homeserver, one after another (each streams over its own connection). */
export async function takeBackups(options: BackupOptions): Promise<BackupReport> {
  const started = Date.now()
  const to = resolve(options.to)
  const hosts: HostBackup[] = []
  for (const host of options.hosts) hosts.push(await backupHost(host, to, options))
  return { command: 'backup', to, hosts, durationMs: Date.now() - started }
}

const stampOf = (d: Date) =>
  d
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')

async function backupHost(host: HostSpec, to: string, options: BackupOptions): Promise<HostBackup> {
  const started = Date.now()
  const createdAt = new Date()
  const name = `${host.name}-${stampOf(createdAt)}`
  const dir = join(to, name)
  // Written under a hidden name and renamed when whole: a directory without `.partial` is a complete backup.
  const work = join(to, `.${name}.partial`)
  const connections: Connection[] = []
  const locks: HostLock[] = []
  const { progress } = options
  try {
    const conn = await options.connect(host)
    connections.push(conn)
    const dbHostName = host.vars.postgres.host ?? host.name
    let dbConn = conn
    if (dbHostName !== host.name) {
      const dbHost = options.allHosts.find((h) => h.name === dbHostName)
      if (!dbHost) throw new Error(`postgres.host ${dbHostName} is not a host of the inventory`)
      dbConn = await options.connect(dbHost)
      connections.push(dbConn)
    }
    // The media store is where the media repository runs: a media_repository worker on another host holds it.
    let mediaConn = conn
    const mediaHostName = mediaStoreHost(host)
    if (mediaHostName !== host.name) {
      const mediaHost = options.allHosts.find((h) => h.name === mediaHostName)
      if (!mediaHost) throw new Error(`the media repository of ${host.name} runs on ${mediaHostName}, which is not a host of the inventory`)
      mediaConn = mediaHostName === dbHostName ? dbConn : await options.connect(mediaHost)
      if (mediaConn !== dbConn) connections.push(mediaConn)
    }
    // The same lock as apply: no run changes the host while its state is copied.
    for (const c of connections) locks.push(await acquireLock(c))
    const installed = await readInstalledSynapse(conn)
    if (!installed)
      throw new Error(`Synapse is not installed on ${host.name} (${SIGNING_KEY_PATH} and the virtualenv are missing): nothing to back up`)
    const database = host.vars.postgres.database
    const db = await readDatabaseState(dbConn, database)
    if (db.schemaVersion === undefined) throw new Error(`database ${database} on ${dbHostName} holds no Synapse schema: nothing to back up`)
    const keyText = await conn.run(partCommand('signingKey', database), { secretOutput: true, allowFailure: true })
    if (keyText.code !== 0) throw new RemoteCommandError(host.name, keyText, 'reading the signing key')
    const signingKey = signingKeyIdentity(new Secret(keyText.stdout, 'signing key').reveal())

    const expected: Partial<Record<BackupPart, number>> = {}
    const [[dbBytes] = []] = await psqlRows(dbConn, 'postgres', `SELECT pg_database_size(${sqlLiteral(database)})`)
    expected.database = Number(dbBytes)
    expected.media = Number((await mediaConn.run(MEDIA_SIZE_COMMAND)).stdout.trim()) || undefined

    await mkdir(to, { recursive: true, mode: 0o700 })
    await mkdir(work, { mode: 0o700 })
    const files: Manifest['files'] = []
    // The database first: media uploaded after the dump are then orphans, never missing files.
    for (const part of PART_NAMES) {
      const source = part === 'database' ? dbConn : part === 'media' ? mediaConn : conn
      const fileName = BACKUP_PARTS[part].file + (options.recipients?.length ? AGE_SUFFIX : '')
      const writer = new BackupFileWriter(join(work, fileName), {
        recipients: options.recipients,
        onReceived: (b) => progress.update(host.name, b),
      })
      const t0 = Date.now()
      progress.start(host.name, fileName, expected[part])
      const r = await source.run(partCommand(part, database), {
        stdoutTo: writer.input,
        timeoutMs: 0,
        secretOutput: true,
        allowFailure: true,
      })
      if (r.code !== 0) {
        writer.abort(new Error('the remote command failed'))
        throw new RemoteCommandError(source.host, r, `taking ${part}`)
      }
      const stored = await writer.finish()
      progress.end(host.name, fileName, writer.received, Date.now() - t0)
      files.push({ part, name: fileName, what: BACKUP_PARTS[part].what, bytes: stored.bytes, sha256: stored.sha256 })
    }
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      host: host.name,
      serverName: host.vars.serverName,
      createdAt: createdAt.toISOString(),
      synapse: { version: installed.version, schemaVersion: db.schemaVersion, schemaCompatVersion: db.schemaCompatVersion ?? null },
      database: { host: dbHostName, name: database, postgresVersion: db.postgresVersion },
      signingKey,
      encryption: options.recipients?.length ? { tool: 'age', recipients: options.recipients } : null,
      files,
      durationMs: Date.now() - started,
    }
    await writeFile(join(work, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n', { mode: 0o600, flag: 'wx' })
    await rename(work, dir)
    progress.line(host.name, `backup complete: ${dir}`)
    return { host: host.name, status: 'ok', dir, manifest, durationMs: Date.now() - started }
  } catch (error) {
    await rm(work, { recursive: true, force: true }).catch(() => undefined)
    const message = maskSecrets(error instanceof Error ? error.message : String(error))
    progress.line(host.name, `backup FAILED: ${message}`)
    return { host: host.name, status: 'failed', error: message, durationMs: Date.now() - started }
  } finally {
    for (const l of locks) await l.release().catch(() => undefined)
    for (const c of connections) await c.close().catch(() => undefined)
  }
}
