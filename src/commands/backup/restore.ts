/**
 * `provision restore`: a backup onto a homeserver provisioned from the inventory, on one host or spread
 * (database on another host, workers on worker hosts). Every check runs before anything changes: the
 * files against the manifest's hashes, the server name and signing key, the route from the backup's
 * Synapse to the inventory's (restore-route.ts), the PostgreSQL major, and whether the database already
 * holds data (refused unless --force). Then, in order: stop the workers on every host and main, restore
 * the signing key, the secrets, the database (into a new database, swapped in whole) and the media;
 * for an older backup, run the inventory at the backup's version first; then apply the inventory on
 * the homeserver's hosts (main first, the worker hosts' workers after it), which renders the
 * configuration with the restored secrets, upgrades an older release in the release's order, starts
 * main, then the workers, and runs every after-check.
 */
import { join, resolve } from 'node:path'
import { sh } from '../../core/shell.js'
import { maskSecrets, Secret } from '../../core/secret.js'
import { acquireLock, type HostLock } from '../../engine/lock.js'
import type { RunReport } from '../../engine/report-types.js'
import type { Inventory } from '../../inventory/types.js'
import { mediaStoreHost } from '../../inventory/workers.js'
import {
  describeContents,
  holdsData,
  readDatabaseState,
  readInstalledSynapse,
  signingKeyIdentity,
} from '../../resources/homeserver-state.js'
import type { Connection } from '../../ssh/connection.js'
import { MANIFEST_FILE, MEDIA_PARTS, MEDIA_SIZE_COMMAND } from '../../synapse/backup/parts.js'
import {
  MEDIA_STORE_PATH,
  SECRETS_DIR,
  SIGNING_KEY_PATH,
  SYNAPSE_DATA_DIR,
  SYNAPSE_UNIT,
  SYNAPSE_USER,
  VENV_LINK,
  versionedVenv,
} from '../../synapse/paths.js'
import { workerHosts, workerUnits } from '../../topology/instances.js'
import { dumpPath } from '../../../tasks/synapse/release/facts.js'
import { BackupInputError, readManifest, verifyBackupFiles } from './manifest.js'
import { findBackupDir } from './restore-input.js'
import { replacedSuffix, restoreDatabase, restoreMedia, unpackSecrets, writeSigningKey, type RestoreTarget } from './restore-host.js'
import { installOlderTasks, olderReleaseFits, pinnedAt, restoreRoute, type OlderRelease } from './restore-route.js'
import { RestoreRefused, type RestoreOptions, type RestoreReport, type RestoreStep } from './restore-types.js'
import { formatBytes } from './transfer-progress.js'

export { findBackupDir } from './restore-input.js'
export { RestoreRefused, type RestoreOptions, type RestoreReport, type RestoreStep } from './restore-types.js'

export async function restoreBackup(options: RestoreOptions): Promise<RestoreReport> {
  const started = Date.now()
  const { host, progress, inventory } = options
  const report: RestoreReport = {
    command: 'restore',
    host: host.name,
    from: resolve(options.from),
    status: 'failed',
    replaces: [],
    steps: [],
    durationMs: 0,
  }
  const connections = new Map<string, Connection>()
  const locks: HostLock[] = []
  const connectTo = async (name: string): Promise<Connection> => {
    const known = connections.get(name)
    if (known) return known
    const spec = name === host.name ? host : inventory.hosts.find((h) => h.name === name)
    if (!spec) throw new Error(`${name} is not a host of the inventory`)
    const c = await options.connect(spec)
    connections.set(name, c)
    return c
  }
  try {
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
    const keyRef = host.vars.synapse.signingKey
    if (keyRef?.kind === 'value') {
      // The inventory's key is written on every run: it must be the backup's, or the restored server would sign as another.
      const k = signingKeyIdentity(keyRef.secret.reveal())
      if (k.publicKey !== manifest.signingKey.publicKey)
        throw new RestoreRefused(
          `the inventory sets synapse.signingKey to ${k.id} ${k.publicKey}, the backup's key is ${manifest.signingKey.id} ${manifest.signingKey.publicKey}: the server's identity belongs to its data; set synapse.signingKey to the backup's key (${join(dir, 'signing.key')}, decrypted if encrypted)`,
        )
    }
    if (manifest.encryption && !options.identity)
      throw new BackupInputError(
        `${dir} is encrypted to ${manifest.encryption.recipients.join(', ')}: pass --identity FILE with a matching age identity`,
      )
    progress.line(host.name, `checking ${manifest.files.length} files against ${join(dir, MANIFEST_FILE)}`)
    await verifyBackupFiles(dir, manifest)

    // The homeserver's hosts: main, the worker hosts (a spread set), the database host, the media store's host.
    const remoteWorkerHosts = workerHosts(inventory, host.name).filter((h) => h !== host.name)
    const dbHostName = host.vars.postgres.host ?? host.name
    const mediaHostName = mediaStoreHost(host)
    const conn = await connectTo(host.name)
    const dbConn = await connectTo(dbHostName)
    const mediaConn = await connectTo(mediaHostName)
    for (const h of remoteWorkerHosts) await connectTo(h)
    if (!options.dryRun) for (const c of connections.values()) locks.push(await acquireLock(c))

    const installed = await readInstalledSynapse(conn)
    if (!installed)
      throw new RestoreRefused(
        `Synapse is not installed on ${host.name}: provision it from the inventory first (provision --inventory FILE --limit ${host.name}), then restore`,
      )
    const route = restoreRoute(manifest.synapse, installed, host.vars.synapse.version, host.name)
    const database = host.vars.postgres.database
    const db = await readDatabaseState(dbConn, database)
    const backupPgMajor = Number(manifest.database.postgresVersion.split('.')[0])
    const targetPgMajor = Number(db.postgresVersion.split('.')[0])
    if (backupPgMajor > targetPgMajor)
      throw new RestoreRefused(
        `the dump comes from PostgreSQL ${manifest.database.postgresVersion}; ${dbHostName} runs ${db.postgresVersion}, whose pg_restore cannot read it: restore onto PostgreSQL ${backupPgMajor} or newer`,
      )
    const older: OlderRelease | undefined =
      route.kind === 'older'
        ? await olderReleaseFits({
            host,
            version: route.from,
            inventoryFile: inventory.file,
            postgresMajor: targetPgMajor,
            hosts: [host.name, ...remoteWorkerHosts].map((name) => ({ name, conn: connections.get(name)! })),
          })
        : undefined
    if (route.kind === 'older') report.route = { from: route.from, to: route.to }
    const mediaBytes = Number((await mediaConn.run(MEDIA_SIZE_COMMAND)).stdout.trim()) || 0
    const keyNow = await conn.run(sh`cat ${SIGNING_KEY_PATH}`, { secretOutput: true, allowFailure: true })
    const currentKey = keyNow.code === 0 ? signingKeyIdentity(new Secret(keyNow.stdout, 'signing key').reveal()) : undefined
    const occupied = holdsData(db)
    const t: RestoreTarget = { host: host.name, conn, dbConn, mediaConn, dir, manifest, identity: options.identity, progress }
    const keep = occupied ? await replacedSuffix(t, database) : undefined
    report.replaces = [
      `database ${database} on ${dbHostName}: ${describeContents(db)}${keep ? ` (kept as ${database}${keep}; drop it when satisfied)` : ' (no Synapse data: dropped)'}`,
      `media store ${MEDIA_STORE_PATH}${mediaHostName !== host.name ? ` on ${mediaHostName}` : ''}: ${formatBytes(mediaBytes)} in ${MEDIA_PARTS.join(', ')}${keep && mediaBytes ? ` (kept in ${SYNAPSE_DATA_DIR}/media${keep.replace(/_/g, '-')})` : ''}`,
      `signing key ${SIGNING_KEY_PATH}: ${currentKey ? `${currentKey.id} ${currentKey.publicKey}` : 'none'} -> ${manifest.signingKey.id} ${manifest.signingKey.publicKey}`,
      `generated secrets in ${SECRETS_DIR} (the configuration is rendered again from them)`,
    ]
    if (occupied && !options.force) {
      throw new RestoreRefused(
        `database ${database} on ${dbHostName} already holds Synapse data (${describeContents(db)}): a restore would replace it and everything listed under "replaces". Run again with --force to replace it (the old database and media are kept under the names given there)`,
      )
    }

    const steps: { step: RestoreStep; run: () => Promise<void> }[] = []
    const add = (action: RestoreStep['action'], summary: string, run: () => Promise<void>, details?: string[]) =>
      steps.push({ step: { action, summary, done: false, ...(details ? { details } : {}) }, run })
    const homeserverHosts = [host.name, ...remoteWorkerHosts]
    const hostsOf = (inv: Inventory): Inventory => ({
      ...inv,
      hosts: homeserverHosts.map((n) => inv.hosts.find((h) => h.name === n) ?? host),
    })
    const ran = (r: RunReport, what: string) => {
      const bad = r.hosts.filter((h) => h.status === 'failed')
      if (bad.length) throw new Error(`${what} failed: ${bad.map((h) => `${h.host}: ${h.error ?? 'see the report'}`).join('; ')}`)
      return r
    }
    const on = homeserverHosts.join(', ')

    if (older?.method === 'pip')
      add(
        'install-old',
        `install Synapse ${older.version} side by side in ${versionedVenv(older.version)} on ${on} (${older.source}) while ${installed.version} serves: a host it does not install on stops the restore here, before anything running changes`,
        async () => {
          report.older = [
            ran(
              await options.run(hostsOf(inventory), { tasks: installOlderTasks(older, host.vars.synapse.pipIndexUrl) }),
              `installing Synapse ${older.version}`,
            ),
          ]
        },
      )
    const workers = workerUnits(inventory, host.name)
    const remote = remoteWorkerHosts.map((h) => ({ host: h, units: workerUnits(inventory, h) }))
    add(
      'stop',
      `stop ${[...remote.filter((r) => r.units.length).map((r) => `on ${r.host}: ${r.units.join(', ')}`), ...(workers.length ? [`on ${host.name}: ${workers.join(', ')}`] : [])].join('; ')}${remote.length || workers.length ? '; then ' : ''}${SYNAPSE_UNIT} (the workers first, on every host)`,
      async () => {
        for (const r of remote)
          if (r.units.length)
            await connections.get(r.host)!.run(sh`systemctl stop ${r.units}`, { timeoutMs: 0, what: `stopping the workers on ${r.host}` })
        if (workers.length) await conn.run(sh`systemctl stop ${workers}`, { timeoutMs: 0, what: 'stopping the workers' })
        await conn.run(sh`systemctl stop ${SYNAPSE_UNIT}`, { timeoutMs: 0, what: 'stopping Synapse' })
      },
    )
    add('signing-key', `write ${SIGNING_KEY_PATH} (${manifest.signingKey.id}, ${SYNAPSE_USER} 0600)`, () => writeSigningKey(t))
    add('secrets', `unpack the generated secrets into ${SECRETS_DIR} (root 0600)`, () => unpackSecrets(t))
    add(
      'database',
      `restore ${database} on ${dbHostName} into ${database}_restoring (pg_restore as ${host.vars.postgres.user}), truncate e2e_one_time_keys_json, then swap it in${keep ? ` (old one renamed ${database}${keep})` : ' (the empty one dropped)'}`,
      () =>
        restoreDatabase(t, {
          database,
          owner: host.vars.postgres.user,
          exists: db.exists,
          ...(keep ? { keepAs: database + keep } : {}),
        }),
    )
    const mediaNew = `${SYNAPSE_DATA_DIR}/.media-restoring`
    const mediaOld = keep ? `${SYNAPSE_DATA_DIR}/media${keep.replace(/_/g, '-')}` : undefined
    add(
      'media',
      `unpack the media into ${mediaNew}${mediaHostName !== host.name ? ` on ${mediaHostName}` : ''}, then swap ${MEDIA_PARTS.join(', ')} into ${MEDIA_STORE_PATH}${mediaOld ? ` (old ones moved to ${mediaOld})` : ''}`,
      () => restoreMedia(t, mediaNew, mediaOld),
    )
    const checkKey = async () => {
      const key = await conn.run(sh`cat ${SIGNING_KEY_PATH}`, { secretOutput: true })
      const now = signingKeyIdentity(new Secret(key.stdout, 'signing key').reveal())
      if (now.publicKey !== manifest.signingKey.publicKey)
        throw new Error(`after the restore ${SIGNING_KEY_PATH} is ${now.id} ${now.publicKey}, not the backup's ${manifest.signingKey.id}`)
    }
    if (older)
      add(
        'start-old',
        `apply the inventory at synapse.version ${older.version} on ${on}: ${older.method === 'pip' ? `switch ${VENV_LINK} to ${versionedVenv(older.version)}` : `install ${older.source}, held`}, start main on ${older.version} (its own code reads the schema ${manifest.synapse.schemaVersion} it wrote), /health, the workers on ${older.version}, after-checks`,
        async () => {
          report.older = [
            ...(report.older ?? []),
            ran(await options.run(hostsOf(pinnedAt(inventory, host.name, older))), `running Synapse ${older.version}`),
          ]
          await checkKey()
        },
      )
    const bd = host.vars.synapse.backupDir
    // The release names its dump after the ones already there: the same name here.
    const dump = older
      ? dumpPath(
          bd,
          older.version,
          installed.version,
          (await conn.run(sh`ls -1 ${bd}`, { allowFailure: true })).stdout
            .split('\n')
            .filter(Boolean)
            .map((f) => `${bd}/${f}`),
        )
      : undefined
    add(
      'apply',
      older
        ? `apply the inventory (synapse.version ${installed.version}) on ${on}: the release procedure upgrades ${older.version} -> ${installed.version}, then every after-check`
        : `apply the inventory to ${on}: configuration from the restored secrets, start ${SYNAPSE_UNIT}, then ${[...workers, ...remote.flatMap((r) => r.units.map((u) => `${u} on ${r.host}`))].join(', ') || 'no workers'}, after-checks`,
      async () => {
        report.apply = ran(await options.run(hostsOf(inventory)), 'applying the inventory after the restore')
        await checkKey()
      },
      older
        ? [
            `pg_dump -Fc of ${database} to ${dump} and the signing key beside it (the schema changes)`,
            `stop ${[...workers, ...remote.flatMap((r) => r.units.map((u) => `${u} on ${r.host}`))].join(', ') || 'no workers'}`,
            older.method === 'pip'
              ? `switch ${VENV_LINK} -> ${versionedVenv(installed.version)}`
              : `install matrix-synapse-py3 ${installed.version} (held)`,
            `restart ${SYNAPSE_UNIT} on ${installed.version}: main alone applies the schema deltas since ${manifest.synapse.schemaVersion}`,
            `wait until main answers /health (migrations done)`,
            `start the workers on ${installed.version}${remote.length ? ` (the worker hosts switch theirs first)` : ''}`,
            'after-checks of every task',
          ]
        : undefined,
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
    for (const c of connections.values()) await c.close().catch(() => undefined)
    report.durationMs = Date.now() - started
  }
}
