/**
 * `provision move`: a homeserver from OLD (any system with SSH, a shell, pg_dump and tar; only read, then
 * stopped and masked) to NEW (an inventory host, provisioned completely while OLD serves). Downtime is
 * the window from OLD's units stopping to NEW's main process answering /health: the media's difference,
 * the database stream, the key and secrets, and Synapse's start (with its migration) on NEW.
 */
import { acquireLock, type HostLock } from '../../engine/lock.js'
import { spansHosts } from '../../inventory/workers.js'
import { holdsData, psqlRows, readDatabaseState, readInstalledSynapse, signingKeyIdentity } from '../../resources/homeserver-state.js'
import { sqlIdent, sqlLiteral } from '../../resources/postgres.js'
import { maskSecrets, Secret } from '../../core/secret.js'
import { sh } from '../../core/shell.js'
import type { Connection } from '../../ssh/connection.js'
import { AFTER_RESTORE_SQL, databaseDumpCommand, databaseRestoreCommand } from '../../synapse/backup/database-dump.js'
import {
  MEDIA_STORE_PATH,
  SECRETS_DIR,
  SIGNING_KEY_PATH,
  STATE_DIR,
  SYNAPSE_GROUP,
  SYNAPSE_UNIT,
  SYNAPSE_USER,
} from '../../synapse/paths.js'
import { workerUnits } from '../../topology/instances.js'
import { abort } from './abort.js'
import { must, MoveRefused, readMovedAway, readOldConfig, stopAndMask } from './old-host.js'
import { preflight } from './preflight.js'
import { LIST_FILES, relay } from './relay.js'
import { json, MOVE_RECORD, nextSteps, type MoveOptions, type MoveReport, type MoveStep, type NewRecord } from './report.js'

export async function move(o: MoveOptions): Promise<MoveReport> {
  const started = Date.now()
  const report: MoveReport = {
    command: 'move',
    from: o.old.name,
    to: o.new.name,
    status: 'failed',
    preflight: [],
    steps: [],
    next: [],
    durationMs: 0,
  }
  const connections: Connection[] = []
  const locks: HostLock[] = []
  let oldConn: Connection | undefined
  let newConn: Connection | undefined
  try {
    if (spansHosts(o.new.vars) || (o.new.vars.postgres.host && o.new.vars.postgres.host !== o.new.name)) {
      throw new MoveRefused(
        `${o.new.name} is a homeserver spread over hosts (database or workers elsewhere): provision move supports a NEW on one host so far; move onto one host, then spread it with the inventory`,
      )
    }
    ;[oldConn, newConn] = await Promise.all([o.connect(o.old), o.connect(o.new)])
    connections.push(oldConn, newConn)
    const newRecord = json(await newConn.run(sh`cat ${MOVE_RECORD} 2>/dev/null || true`)) as NewRecord | undefined
    const movedAway = await readMovedAway(oldConn)
    if (o.abort) return await abort(o, report, oldConn, newConn, movedAway, newRecord)
    if (newRecord?.phase === 'done' && newRecord.from === o.old.name) {
      report.status = 'unchanged'
      report.downtimeMs = newRecord.downtimeMs
      report.next = nextSteps(o)
      return report
    }
    const old = await readOldConfig(oldConn)
    const oldDb = await readDatabaseState(oldConn, old.database)
    const [[dbBytes] = []] = await psqlRows(oldConn, 'postgres', `SELECT pg_database_size(${sqlLiteral(old.database)})`)
    const mediaBytes = Number((await oldConn.run(sh`du -sb ${old.mediaStorePath} 2>/dev/null | cut -f1; true`)).stdout.trim()) || 0
    const key = await oldConn.run(sh`cat ${old.signingKeyPath}`, { secretOutput: true, allowFailure: true })
    if (key.code !== 0) throw new MoveRefused(`${o.old.name}: cannot read the signing key ${old.signingKeyPath}`)
    const oldKey = signingKeyIdentity(new Secret(key.stdout, 'signing key').reveal())
    report.old = {
      synapse: old.version,
      postgres: oldDb.postgresVersion,
      schema: oldDb.schemaVersion,
      databaseBytes: Number(dbBytes) || 0,
      mediaBytes,
      signingKey: `${oldKey.id} ${oldKey.publicKey}`,
    }
    await preflight(o, report, old, oldConn, newConn, newRecord, movedAway)
    const failed = report.preflight.filter((c) => !c.ok)
    if (failed.length) throw new MoveRefused(`preflight: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}`)

    const database = o.new.vars.postgres.database
    const restoring = `${database}_restoring`
    const marks: { stoppedAt?: number } = {}
    // A step that moves data returns its byte count (the report's rate figures).
    const steps: { step: MoveStep; run: () => Promise<void | number>; skip?: boolean }[] = []
    const add = (name: string, summary: string, run: () => Promise<void | number>, skip = false) =>
      steps.push({ step: { name, summary, done: skip }, run, skip })
    const n = newConn
    const oc = oldConn
    const record = (phase: NewRecord['phase'], extra: Partial<NewRecord> = {}) =>
      must(
        n,
        sh`mkdir -p -m 0700 ${STATE_DIR} && cat > ${MOVE_RECORD}`,
        'writing the move record',
        JSON.stringify({ from: o.old.name, phase, at: new Date().toISOString(), ...extra }) + '\n',
      )
    const cutOver = movedAway !== undefined
    const workers = workerUnits(o.inventory, o.new.name)

    add(
      'provision',
      `provision ${o.new.name} completely from the inventory while ${o.old.name} serves (its fresh Synapse is stopped again: it must not serve with its own key)`,
      async () => {
        const applied = await o.applyInventory()
        report.apply = applied
        const h = applied.hosts[0]
        if (!h || h.status === 'failed') throw new Error(`provisioning ${o.new.name} failed: ${h?.error ?? 'no report'}`)
        await must(n, sh`systemctl stop ${[...workers, SYNAPSE_UNIT]}`, `stopping Synapse on ${o.new.name}`)
        const installed = await readInstalledSynapse(n)
        if (!installed) throw new Error(`${o.new.name}: Synapse is not installed after provisioning`)
        if (oldDb.schemaVersion !== undefined && oldDb.schemaVersion > installed.schemaVersion)
          throw new MoveRefused(
            `${o.old.name}'s database has schema ${oldDb.schemaVersion}, newer than Synapse ${installed.version} knows (${installed.schemaVersion})`,
          )
        await record('provisioned')
      },
      cutOver,
    )
    add(
      'media-1',
      `copy the media store ${old.mediaStorePath} -> ${MEDIA_STORE_PATH} while ${o.old.name} serves`,
      async () => {
        await must(n, sh`install -d -o ${SYNAPSE_USER} -g ${SYNAPSE_GROUP} -m 0750 ${MEDIA_STORE_PATH}`, 'creating the media store')
        const bytes = await relay(
          oc,
          sh`cd ${old.mediaStorePath} && tar --create --file=- .`,
          n,
          sh`cd ${MEDIA_STORE_PATH} && tar --extract --file=- --same-owner --same-permissions`,
          'media copy',
        )
        o.say(`  media: ${(bytes / 1048576).toFixed(1)} MiB`)
        return bytes
      },
      cutOver,
    )
    add(
      'stop-old',
      `stop and mask ${o.old.name}'s Synapse units and timers (unit files in /etc/systemd/system moved aside, nothing deleted): writes stop here`,
      async () => {
        // Downtime starts with the first unit stopping (a run continuing after the cut-over counts from its own start).
        marks.stoppedAt = Date.now()
        await stopAndMask(oc, o.new.name)
      },
      cutOver,
    )
    add('media-2', 'copy the media written since (path, size, mtime differ)', async () => {
      marks.stoppedAt ??= Date.now()
      const [a, b] = await Promise.all([
        must(oc, sh`cd ${old.mediaStorePath} && ${LIST_FILES}`, 'listing media'),
        must(n, sh`cd ${MEDIA_STORE_PATH} && ${LIST_FILES}`, 'listing media'),
      ])
      const have = new Set(b.split('\n'))
      const changed = a
        .split('\n')
        .filter((l) => l && !have.has(l))
        .map((l) => l.split('\t')[0]!)
      const bytes = !changed.length
        ? 0
        : await relay(
            oc,
            sh`cd ${old.mediaStorePath} && tar --create --file=- --null --files-from=-`,
            n,
            sh`cd ${MEDIA_STORE_PATH} && tar --extract --file=- --same-owner --same-permissions`,
            'media difference',
            changed.map((f) => `${f}\0`).join(''),
          )
      o.say(`  media difference: ${changed.length} files`)
      return bytes
    })
    add(
      'database',
      `stream ${old.database} (PostgreSQL ${oldDb.postgresVersion}) from ${o.old.name} into ${restoring} on ${o.new.name} (pg_dump -Fc | pg_restore, never whole in memory), then swap it in for ${database}`,
      async () => {
        marks.stoppedAt ??= Date.now()
        await record('cut-over')
        const psql = (db: string, sql: string) => psqlRows(n, db, sql)
        await psql(
          'postgres',
          `DROP DATABASE IF EXISTS ${sqlIdent(restoring)};\nCREATE DATABASE ${sqlIdent(restoring)} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0 OWNER ${sqlIdent(o.new.vars.postgres.user)};`,
        )
        const t0 = Date.now()
        const bytes = await relay(
          oc,
          databaseDumpCommand(old.database),
          n,
          databaseRestoreCommand(restoring, o.new.vars.postgres.user),
          'database stream',
        )
        o.say(`  database: ${(bytes / 1048576).toFixed(1)} MiB dump in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
        await psql(restoring, AFTER_RESTORE_SQL)
        const now = await readDatabaseState(n, database)
        if (holdsData(now)) throw new Error(`${o.new.name}'s ${database} holds data now; it was checked empty: refusing to replace it`)
        await psql(
          'postgres',
          [
            `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ${sqlLiteral(database)} AND pid <> pg_backend_pid();`,
            now.exists ? `DROP DATABASE ${sqlIdent(database)};` : '',
            `ALTER DATABASE ${sqlIdent(restoring)} RENAME TO ${sqlIdent(database)};`,
          ].join('\n'),
        )
        return bytes
      },
    )
    add(
      'key-secrets',
      `signing key ${old.signingKeyPath} -> ${SIGNING_KEY_PATH} (0600), and OLD's macaroon, form and registration secrets into ${SECRETS_DIR}`,
      async () => {
        await n.writeFile({
          path: SIGNING_KEY_PATH,
          content: new Secret(key.stdout, 'signing key'),
          owner: SYNAPSE_USER,
          group: SYNAPSE_GROUP,
          mode: 0o600,
        })
        const v = o.new.vars.synapse
        for (const [ref, value] of [
          [v.macaroonSecret, old.secrets.macaroon],
          [v.formSecret, old.secrets.form],
          [v.registrationSharedSecret, old.secrets.registration],
        ] as const) {
          if (value && ref.kind === 'generate') await n.writeFile({ path: `${SECRETS_DIR}/${ref.name}`, content: value, mode: 0o600 })
        }
      },
    )
    add(
      'start',
      `apply the inventory to ${o.new.name}: configuration with OLD's secrets, start Synapse (it migrates ${old.version} -> ${o.new.vars.synapse.version ?? 'the pinned version'}), then the workers, after-checks`,
      async () => {
        const port = o.new.vars.synapse.listenPort
        const up = n
          .run(
            sh`for i in $(seq 1 3600); do curl -sf -o /dev/null http://127.0.0.1:${String(port)}/health && exit 0; sleep 0.25; done; exit 1`,
            { timeoutMs: 0, allowFailure: true },
          )
          .then((r) => (r.code === 0 ? Date.now() : undefined))
        const applied = await o.applyInventory()
        report.apply = applied
        const servedAt = await up
        if (servedAt && marks.stoppedAt) report.downtimeMs = servedAt - marks.stoppedAt
        await record('serving', { downtimeMs: report.downtimeMs })
        const h = applied.hosts[0]
        if (!h || h.status === 'failed')
          throw new Error(`applying the inventory to ${o.new.name} after the cut-over failed: ${h?.error ?? 'no report'}`)
      },
    )
    add('verify', 'signing key the same; background updates of the migration run to completion', async () => {
      const k = await n.run(sh`cat ${SIGNING_KEY_PATH}`, { secretOutput: true })
      const now = signingKeyIdentity(new Secret(k.stdout, 'signing key').reveal())
      if (now.id !== oldKey.id || now.publicKey !== oldKey.publicKey)
        throw new Error(`${o.new.name}'s signing key is ${now.id} ${now.publicKey}, not OLD's ${oldKey.id} ${oldKey.publicKey}`)
      const t0 = Date.now()
      for (;;) {
        const [[pending] = []] = await psqlRows(n, database, 'SELECT count(*) FROM background_updates')
        if (Number(pending) === 0) break
        if (Date.now() - t0 > 6 * 3600_000) throw new Error(`${pending} background updates still pending after 6 h`)
        await new Promise((r) => setTimeout(r, 2000))
      }
      report.backgroundUpdatesMs = Date.now() - t0
      await record('done', { downtimeMs: report.downtimeMs })
    })

    report.steps = steps.map((s) => s.step)
    report.next = nextSteps(o)
    if (o.dryRun) {
      report.status = 'planned'
      return report
    }
    locks.push(await acquireLock(newConn))
    for (const s of steps) {
      if (s.skip) continue
      o.say(s.step.summary)
      const t0 = Date.now()
      const bytes = await s.run()
      if (typeof bytes === 'number') s.step.bytes = bytes
      s.step.done = true
      s.step.durationMs = Date.now() - t0
    }
    report.status = 'moved'
    return report
  } catch (error) {
    report.error = maskSecrets(error instanceof Error ? error.message : String(error))
    report.status = error instanceof MoveRefused ? 'refused' : 'failed'
    const stopped = report.steps.find((s) => s.name === 'stop-old')?.done
    if (report.status === 'failed' && stopped)
      report.next = [
        `${o.old.name} is stopped and masked; ${o.new.name} does not serve yet. Fix the cause and run the move again (it continues after the cut-over), or return ${o.old.name} to service: provision move --inventory ${o.inventory.file} --from ${o.old.name} --to ${o.new.name} --abort`,
      ]
    return report
  } finally {
    for (const l of locks) await l.release().catch(() => undefined)
    for (const c of connections) await c.close().catch(() => undefined)
    report.durationMs = Date.now() - started
  }
}
