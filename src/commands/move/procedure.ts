/**
 * `provision move`: a homeserver from OLD (any system with SSH, a shell, pg_dump and tar; only read, then
 * stopped and masked) to NEW (an inventory host, provisioned completely while OLD serves). Downtime is
 * the window from OLD's units stopping to NEW's main process answering /health: the media's difference,
 * the database stream, the key and secrets, and Synapse's start (with its migration) on NEW.
 */
import { acquireLock, type HostLock } from '../../engine/lock.js'
import { holdsData, psqlRows, readDatabaseState, readInstalledSynapse, signingKeyIdentity } from '../../resources/homeserver-state.js'
import { createRestoringDatabase, restoringName, swapInRestored } from '../../resources/database-swap.js'
import { sqlLiteral } from '../../resources/postgres.js'
import { maskSecrets, Secret } from '../../core/secret.js'
import { sh } from '../../core/shell.js'
import type { Connection } from '../../ssh/connection.js'
import { databaseDumpCommand, databaseRestoreCommand } from '../../synapse/backup/database-dump.js'
import {
  MEDIA_STORE_PATH,
  SECRETS_DIR,
  SIGNING_KEY_PATH,
  SYNAPSE_CONFIG_DIR,
  STATE_DIR,
  SYNAPSE_GROUP,
  SYNAPSE_UNIT,
  SYNAPSE_USER,
} from '../../synapse/paths.js'
import { abort } from './abort.js'
import { newLayout, onHosts } from './layout.js'
import { maskOld, must, MoveRefused, readMovedAway, readOldConfig, stopOld, type OldConfig } from './old-host.js'
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
  let masking: Promise<void> | undefined
  let masked = false
  try {
    const layout = newLayout(o.inventory, o.new)
    const specs = layout.hosts.map((h) => o.inventory.hosts.find((x) => x.name === h)!)
    const [oldConn, ...reached] = await Promise.allSettled([o.connect(o.old), ...specs.map((h) => o.connect(h))])
    for (const r of [oldConn, ...reached]) if (r.status === 'fulfilled') connections.push(r.value)
    if (oldConn.status === 'rejected') throw oldConn.reason
    const unreachable = reached.flatMap((r, i) => (r.status === 'rejected' ? [`${layout.hosts[i]}: ${String(r.reason)}`] : []))
    if (unreachable.length) {
      report.preflight.push(...unreachable.map((u) => ({ name: `${u.split(':')[0]} reachable`, ok: false, detail: u })))
      throw new MoveRefused(`preflight: NEW's hosts unreachable: ${unreachable.join('; ')}`)
    }
    const conns = new Map(layout.hosts.map((h, i) => [h, (reached[i] as PromiseFulfilledResult<Connection>).value]))
    const oc = oldConn.value
    const n = conns.get(layout.main)!
    const dbConn = conns.get(layout.database)!
    const mediaConn = conns.get(layout.media)!
    const newRecord = json(await n.run(sh`cat ${MOVE_RECORD} 2>/dev/null || true`)) as NewRecord | undefined
    const movedAway = await readMovedAway(oc)
    if (o.abort) return await abort(o, report, oc, conns, layout, movedAway, newRecord)
    if (newRecord?.phase === 'done' && newRecord.from === o.old.name) {
      report.status = 'unchanged'
      report.downtimeMs = newRecord.downtimeMs
      report.next = nextSteps(o)
      return report
    }
    const old = await readOldConfig(oc)
    const oldDb = await readDatabaseState(oc, old.database)
    const [[dbBytes] = []] = await psqlRows(oc, 'postgres', `SELECT pg_database_size(${sqlLiteral(old.database)})`)
    const mediaBytes = Number((await oc.run(sh`du -sb ${old.mediaStorePath} 2>/dev/null | cut -f1; true`)).stdout.trim()) || 0
    const key = await oc.run(sh`cat ${old.signingKeyPath}`, { secretOutput: true, allowFailure: true })
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
    report.layout = layout
    await preflight(o, report, old, oldKey, conns, layout, newRecord, movedAway)
    const failed = report.preflight.filter((c) => !c.ok)
    if (failed.length) throw new MoveRefused(`preflight: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}`)

    const database = o.new.vars.postgres.database
    const restoring = restoringName(database)
    const marks: { stoppedAt?: number } = {}
    // A step that moves data returns its byte count (the report's rate figures).
    const steps: { step: MoveStep; run: () => Promise<void | number>; skip?: boolean }[] = []
    const add = (name: string, hosts: string[], summary: string, run: () => Promise<void | number>, skip = false) =>
      steps.push({ step: { name, hosts: [...new Set(hosts)], summary, done: skip }, run, skip })
    const record = (phase: NewRecord['phase'], extra: Partial<NewRecord> = {}) =>
      must(
        n,
        sh`mkdir -p -m 0700 ${STATE_DIR} && cat > ${MOVE_RECORD}`,
        'writing the move record',
        JSON.stringify({ from: o.old.name, phase, at: new Date().toISOString(), ...extra }) + '\n',
      )
    const cutOver = movedAway !== undefined
    const stopNew = () =>
      Promise.all(layout.synapseHosts.map((h) => must(conns.get(h)!, sh`systemctl stop ${layout.units[h]!}`, `stopping Synapse on ${h}`)))
    let stopped = movedAway

    add(
      'provision',
      layout.hosts,
      `write OLD's signing key and its macaroon, form and registration secrets on ${layout.main}, then provision ${onHosts(layout.hosts)} completely from the inventory while ${o.old.name} serves (NEW's Synapse starts on an empty database, reached by nobody: the DNS names ${o.old.name}), then stop Synapse on ${onHosts(layout.synapseHosts)}`,
      async () => {
        // Seeded before provisioning: the configuration NEW renders is final, so nothing restarts at the cut-over.
        await writeIdentity(n, o, key.stdout, old)
        const applied = await o.applyInventory(specs)
        report.apply = applied
        const bad = applied.hosts.filter((h) => h.status === 'failed')
        if (bad.length || applied.hosts.length !== specs.length)
          throw new Error(
            `provisioning failed: ${bad.map((h) => `${h.host}: ${h.error ?? 'failed'}`).join('; ') || 'a host has no report'}`,
          )
        await stopNew()
        const installed = await readInstalledSynapse(n)
        if (!installed) throw new Error(`${layout.main}: Synapse is not installed after provisioning`)
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
      [layout.media],
      `copy the media store ${old.mediaStorePath} -> ${layout.media}:${MEDIA_STORE_PATH} while ${o.old.name} serves`,
      async () => {
        await must(mediaConn, sh`install -d -o ${SYNAPSE_USER} -g ${SYNAPSE_GROUP} -m 0750 ${MEDIA_STORE_PATH}`, 'creating the media store')
        const bytes = await relay(
          oc,
          sh`cd ${old.mediaStorePath} && tar --create --file=- .`,
          mediaConn,
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
      [],
      `stop ${o.old.name}'s Synapse units and timers in one systemctl call: writes stop here (masking follows beside the copies below)`,
      async () => {
        // Downtime starts with the stop (a run continuing after the cut-over counts from its own start).
        marks.stoppedAt = Date.now()
        const record = await stopOld(oc, o.new.name)
        stopped = record
        masking = maskOld(oc, record).then(() => void (masked = true))
        masking.catch(() => undefined) // awaited by mask-old, or on failure below
      },
      cutOver,
    )
    add('media-2', [layout.media], `copy the media written since (path, size, mtime differ) to ${layout.media}`, async () => {
      marks.stoppedAt ??= Date.now()
      const [a, b] = await Promise.all([
        must(oc, sh`cd ${old.mediaStorePath} && ${LIST_FILES}`, 'listing media'),
        must(mediaConn, sh`cd ${MEDIA_STORE_PATH} && ${LIST_FILES}`, 'listing media'),
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
            mediaConn,
            sh`cd ${MEDIA_STORE_PATH} && tar --extract --file=- --same-owner --same-permissions`,
            'media difference',
            changed.map((f) => `${f}\0`).join(''),
          )
      o.say(`  media difference: ${changed.length} files`)
      return bytes
    })
    add(
      'database',
      [layout.database],
      `stream ${old.database} (PostgreSQL ${oldDb.postgresVersion}) from ${o.old.name} into ${restoring} on ${layout.database} (pg_dump -Fc | pg_restore, never whole in memory), then swap it in for ${database}`,
      async () => {
        marks.stoppedAt ??= Date.now()
        await record('cut-over')
        const bytes = await streamDatabase(oc, old.database, dbConn, o.new.vars.postgres, (line) => o.say(line))
        return bytes
      },
    )
    add(
      'mask-old',
      [],
      `mask ${o.old.name}'s stopped units (unit files in /etc/systemd/system moved aside, nothing deleted), done before NEW starts`,
      async () => {
        await (masking ?? (stopped ? maskOld(oc, stopped) : Promise.reject(new Error(`${o.old.name} has no record of its stopped units`))))
      },
    )
    add(
      'start-main',
      [layout.main],
      `start Synapse's main process on ${layout.main} (it migrates ${old.version} -> ${o.new.vars.synapse.version ?? 'the pinned version'}) until /health answers: downtime ends here`,
      async () => {
        const port = o.new.vars.synapse.listenPort
        await must(n, sh`systemctl start ${SYNAPSE_UNIT}`, `starting ${SYNAPSE_UNIT}`)
        await must(
          n,
          sh`for i in $(seq 1 3600); do curl -sf -o /dev/null http://127.0.0.1:${String(port)}/health && exit 0; sleep 0.1; done; exit 1`,
          `waiting for /health on ${layout.main}`,
        )
        if (marks.stoppedAt) report.downtimeMs = Date.now() - marks.stoppedAt
        await record('serving', { downtimeMs: report.downtimeMs })
      },
    )
    add(
      'start',
      layout.hosts,
      `apply the inventory to ${onHosts(layout.hosts)}: the workers on ${onHosts(layout.synapseHosts)} start now that main serves, after-checks`,
      async () => {
        const applied = await o.applyInventory(specs)
        report.apply = applied
        const bad = applied.hosts.filter((h) => h.status === 'failed')
        if (bad.length)
          throw new Error(
            `applying the inventory after the cut-over failed: ${bad.map((h) => `${h.host}: ${h.error ?? 'failed'}`).join('; ')}`,
          )
      },
    )
    add(
      'verify',
      [layout.main, layout.database],
      'signing key the same; background updates of the migration run to completion',
      async () => {
        const k = await n.run(sh`cat ${SIGNING_KEY_PATH}`, { secretOutput: true })
        const now = signingKeyIdentity(new Secret(k.stdout, 'signing key').reveal())
        if (now.id !== oldKey.id || now.publicKey !== oldKey.publicKey)
          throw new Error(`${layout.main}'s signing key is ${now.id} ${now.publicKey}, not OLD's ${oldKey.id} ${oldKey.publicKey}`)
        const t0 = Date.now()
        for (;;) {
          const [[pending] = []] = await psqlRows(dbConn, database, 'SELECT count(*) FROM background_updates')
          if (Number(pending) === 0) break
          if (Date.now() - t0 > 6 * 3600_000) throw new Error(`${pending} background updates still pending after 6 h`)
          await new Promise((r) => setTimeout(r, 2000))
        }
        report.backgroundUpdatesMs = Date.now() - t0
        await record('done', { downtimeMs: report.downtimeMs })
      },
    )

    report.steps = steps.map((s) => s.step)
    report.next = nextSteps(o)
    if (o.dryRun) {
      report.status = 'planned'
      return report
    }
    for (const h of layout.hosts) locks.push(await acquireLock(conns.get(h)!))
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
    // OLD's masking may still run beside a failed step: let it end before reporting (and before --abort can run).
    await masking?.catch(() => undefined)
    report.error = maskSecrets(error instanceof Error ? error.message : String(error))
    report.status = error instanceof MoveRefused ? 'refused' : 'failed'
    const stopped = report.steps.find((s) => s.name === 'stop-old')?.done
    if (report.status === 'failed' && stopped)
      report.next = [
        `${o.old.name} is stopped${masked ? ' and masked' : ' (not masked yet: the run continuing after the cut-over masks it)'}; ${o.new.name} does not serve yet. Fix the cause and run the move again (it continues after the cut-over), or return ${o.old.name} to service: provision move --inventory ${o.inventory.file} --from ${o.old.name} --to ${o.new.name} --abort`,
      ]
    return report
  } finally {
    for (const l of locks) await l.release().catch(() => undefined)
    for (const c of connections) await c.close().catch(() => undefined)
    report.durationMs = Date.now() - started
  }
}

/** OLD's signing key, and its secrets where the inventory has them generated, into NEW main's files and secret store. */
async function writeIdentity(n: Connection, o: MoveOptions, key: string, old: OldConfig): Promise<void> {
  // The secret store marks NEW as the tool's (the ownership guard would otherwise take the key for a hand-built Synapse).
  await must(
    n,
    sh`install -d -m 0755 ${SYNAPSE_CONFIG_DIR} && mkdir -p -m 0700 ${SECRETS_DIR}`,
    'creating the configuration and secret directories',
  )
  await n.writeFile({ path: SIGNING_KEY_PATH, content: new Secret(key, 'signing key'), mode: 0o600 })
  const v = o.new.vars.synapse
  for (const [ref, value] of [
    [v.macaroonSecret, old.secrets.macaroon],
    [v.formSecret, old.secrets.form],
    [v.registrationSharedSecret, old.secrets.registration],
  ] as const) {
    if (value && ref.kind === 'generate') await n.writeFile({ path: `${SECRETS_DIR}/${ref.name}`, content: value, mode: 0o600 })
  }
}

/** OLD's database into `<database>_restoring` on NEW's database host, then swapped in (a database with data is never replaced). */
async function streamDatabase(
  oc: Connection,
  oldDatabase: string,
  db: Connection,
  pg: { database: string; user: string },
  say: (line: string) => void,
): Promise<number> {
  const restoring = await createRestoringDatabase(db, pg.database, pg.user)
  const t0 = Date.now()
  const bytes = await relay(oc, databaseDumpCommand(oldDatabase), db, databaseRestoreCommand(restoring, pg.user), 'database stream')
  say(`  database: ${(bytes / 1048576).toFixed(1)} MiB dump in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  const now = await readDatabaseState(db, pg.database)
  if (holdsData(now)) throw new Error(`${db.host}'s ${pg.database} holds data now; it was checked empty: refusing to replace it`)
  await swapInRestored(db, { database: pg.database, exists: now.exists })
  return bytes
}
