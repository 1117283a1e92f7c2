/**
 * `provision move`: a homeserver from OLD (any system with SSH, a shell, pg_dump and tar; only read, then
 * stopped and masked) to NEW (an inventory host, provisioned completely while OLD serves). Downtime is
 * the window from OLD's units stopping to NEW's main process answering /health: the media's difference,
 * the database stream, the key and secrets, and Synapse's start (with its migration) on NEW.
 */
import { PassThrough, Transform } from 'node:stream'
import { acquireLock, type HostLock } from '../../engine/lock.js'
import type { RunReport } from '../../engine/report-types.js'
import { gatherFacts } from '../../facts/probe.js'
import { osRelease, pythonVersion } from '../../facts/system.js'
import { readLock } from '../../inventory/controller-files.js'
import type { HostSpec, Inventory } from '../../inventory/types.js'
import { spansHosts } from '../../inventory/workers.js'
import { holdsData, psqlRows, readDatabaseState, readInstalledSynapse, signingKeyIdentity } from '../../resources/homeserver-state.js'
import { sqlIdent, sqlLiteral } from '../../resources/postgres.js'
import { maskSecrets, Secret } from '../../core/secret.js'
import { raw, sh, type ShellCommand } from '../../core/shell.js'
import type { Connection } from '../../ssh/connection.js'
import { AFTER_RESTORE_SQL, databaseDumpCommand, databaseRestoreCommand } from '../../synapse/backup/database-dump.js'
import { compareVersions, minimumPostgresFor } from '../../synapse/compat.js'
import { MEDIA_STORE_PATH, SECRETS_DIR, SIGNING_KEY_PATH, STATE_DIR, SYNAPSE_GROUP, SYNAPSE_UNIT, SYNAPSE_USER } from '../../synapse/paths.js'
import { workerUnits } from '../../topology/instances.js'
import { targetOf } from '../../../tasks/common/checks.js'
import { must, MoveRefused, readMovedAway, readOldConfig, stopAndMask, unmaskAndStart, type MovedAway, type OldConfig } from './old-host.js'

/** NEW's record of the move (on NEW): a second run finds it and changes nothing. */
export const MOVE_RECORD = `${STATE_DIR}/move.json`
/** Free space NEW must have beyond OLD's database size and media. */
export const SPACE_MARGIN = 1.5

export interface MoveStep {
  name: string
  summary: string
  done: boolean
  durationMs?: number
}

export interface MoveReport {
  command: 'move'
  from: string
  to: string
  status: 'planned' | 'moved' | 'unchanged' | 'aborted' | 'refused' | 'failed'
  preflight: { name: string; ok: boolean; detail: string }[]
  steps: MoveStep[]
  old?: { synapse: string; postgres: string; schema?: number; databaseBytes: number; mediaBytes: number; signingKey: string }
  /** Writes stopped on OLD -> NEW's main answered /health. */
  downtimeMs?: number
  backgroundUpdatesMs?: number
  apply?: RunReport
  next: string[]
  error?: string
  durationMs: number
}

export interface MoveOptions {
  old: HostSpec
  new: HostSpec
  inventory: Inventory
  dryRun: boolean
  abort: boolean
  connect(host: HostSpec): Promise<Connection>
  /** Apply the inventory to NEW (inside the held lock). */
  applyInventory(): Promise<RunReport>
  say(line: string): void
}

interface NewRecord {
  from: string
  phase: 'provisioned' | 'cut-over' | 'serving' | 'done' | 'aborted'
  at: string
  downtimeMs?: number
}

const json = (r: { stdout: string }): unknown => (r.stdout.trim() ? (JSON.parse(r.stdout) as unknown) : undefined)

/** Relay OLD's stdout into NEW's stdin through the controller, with backpressure; both exit codes judged. */
async function relay(from: Connection, send: ShellCommand, to: Connection, receive: ShellCommand, what: string, sendStdin?: string): Promise<number> {
  let bytes = 0
  // Counted in a Transform: a 'data' listener would switch the stream to flowing and lose the head.
  const pipe = new PassThrough({ highWaterMark: 1 << 20 })
  const counted = pipe.pipe(new Transform({ transform: (chunk: Buffer, _e, cb) => ((bytes += chunk.length), cb(null, chunk)) }))
  const receiving = to.run(receive, { stdin: counted, timeoutMs: 0, allowFailure: true })
  const sending = from.run(send, { stdoutTo: pipe, timeoutMs: 0, stdin: sendStdin, allowFailure: true }).then((r) => {
    if (r.code === 0) pipe.end()
    else pipe.destroy(new Error(`${from.host} exited ${r.code}`))
    return r
  })
  const [s, r] = await Promise.all([sending, receiving])
  if (s.code !== 0 || r.code !== 0) {
    throw new Error(`${what}: ${from.host} exited ${s.code ?? s.signal ?? 'without status'}${s.stderr.trim() ? ` (${s.stderr.trim().split('\n').at(-1)})` : ''}, ${to.host} exited ${r.code ?? r.signal ?? 'without status'}${r.stderr.trim() ? ` (${r.stderr.trim().split('\n').at(-1)})` : ''}`)
  }
  return bytes
}

// path, size, whole-second mtime (GNU tar keeps no fraction): Synapse's media files are written once.
const LIST_FILES = raw`find . -type f -printf '%P\\t%s\\t%T@\\n' | sed 's/\\.[0-9]*$//' | LC_ALL=C sort`

export async function move(o: MoveOptions): Promise<MoveReport> {
  const started = Date.now()
  const report: MoveReport = { command: 'move', from: o.old.name, to: o.new.name, status: 'failed', preflight: [], steps: [], next: [], durationMs: 0 }
  const connections: Connection[] = []
  const locks: HostLock[] = []
  let oldConn: Connection | undefined
  let newConn: Connection | undefined
  try {
    if (spansHosts(o.new.vars) || (o.new.vars.postgres.host && o.new.vars.postgres.host !== o.new.name)) {
      throw new MoveRefused(`${o.new.name} is a homeserver spread over hosts (database or workers elsewhere): provision move supports a NEW on one host so far; move onto one host, then spread it with the inventory`)
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
    report.old = { synapse: old.version, postgres: oldDb.postgresVersion, schema: oldDb.schemaVersion, databaseBytes: Number(dbBytes) || 0, mediaBytes, signingKey: `${oldKey.id} ${oldKey.publicKey}` }
    await preflight(o, report, old, oldConn, newConn, newRecord, movedAway)
    const failed = report.preflight.filter((c) => !c.ok)
    if (failed.length) throw new MoveRefused(`preflight: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}`)

    const database = o.new.vars.postgres.database
    const restoring = `${database}_restoring`
    const marks: { stoppedAt?: number } = {}
    const steps: { step: MoveStep; run: () => Promise<void>; skip?: boolean }[] = []
    const add = (name: string, summary: string, run: () => Promise<void>, skip = false) => steps.push({ step: { name, summary, done: skip }, run, skip })
    const n = newConn
    const oc = oldConn
    const record = (phase: NewRecord['phase'], extra: Partial<NewRecord> = {}) =>
      must(n, sh`mkdir -p -m 0700 ${STATE_DIR} && cat > ${MOVE_RECORD}`, 'writing the move record', JSON.stringify({ from: o.old.name, phase, at: new Date().toISOString(), ...extra }) + '\n')
    const cutOver = movedAway !== undefined
    const workers = workerUnits(o.inventory, o.new.name)

    add('provision', `provision ${o.new.name} completely from the inventory while ${o.old.name} serves (its fresh Synapse is stopped again: it must not serve with its own key)`, async () => {
      const applied = await o.applyInventory()
      report.apply = applied
      const h = applied.hosts[0]
      if (!h || h.status === 'failed') throw new Error(`provisioning ${o.new.name} failed: ${h?.error ?? 'no report'}`)
      await must(n, sh`systemctl stop ${[...workers, SYNAPSE_UNIT]}`, `stopping Synapse on ${o.new.name}`)
      const installed = await readInstalledSynapse(n)
      if (!installed) throw new Error(`${o.new.name}: Synapse is not installed after provisioning`)
      if (oldDb.schemaVersion !== undefined && oldDb.schemaVersion > installed.schemaVersion) throw new MoveRefused(`${o.old.name}'s database has schema ${oldDb.schemaVersion}, newer than Synapse ${installed.version} knows (${installed.schemaVersion})`)
      await record('provisioned')
    }, cutOver)
    add('media-1', `copy the media store ${old.mediaStorePath} -> ${MEDIA_STORE_PATH} while ${o.old.name} serves`, async () => {
      await must(n, sh`install -d -o ${SYNAPSE_USER} -g ${SYNAPSE_GROUP} -m 0750 ${MEDIA_STORE_PATH}`, 'creating the media store')
      const bytes = await relay(oc, sh`cd ${old.mediaStorePath} && tar --create --file=- .`, n, sh`cd ${MEDIA_STORE_PATH} && tar --extract --file=- --same-owner --same-permissions`, 'media copy')
      o.say(`  media: ${(bytes / 1048576).toFixed(1)} MiB`)
    }, cutOver)
    add('stop-old', `stop and mask ${o.old.name}'s Synapse units and timers (unit files in /etc/systemd/system moved aside, nothing deleted): writes stop here`, async () => {
      await stopAndMask(oc, o.new.name)
    }, cutOver)
    add('media-2', 'copy the media written since (path, size, mtime differ)', async () => {
      marks.stoppedAt ??= Date.now()
      const [a, b] = await Promise.all([must(oc, sh`cd ${old.mediaStorePath} && ${LIST_FILES}`, 'listing media'), must(n, sh`cd ${MEDIA_STORE_PATH} && ${LIST_FILES}`, 'listing media')])
      const have = new Set(b.split('\n'))
      const changed = a.split('\n').filter((l) => l && !have.has(l)).map((l) => l.split('\t')[0]!)
      if (changed.length) await relay(oc, sh`cd ${old.mediaStorePath} && tar --create --file=- --null --files-from=-`, n, sh`cd ${MEDIA_STORE_PATH} && tar --extract --file=- --same-owner --same-permissions`, 'media difference', changed.map((f) => `${f}\0`).join(''))
      o.say(`  media difference: ${changed.length} files`)
    })
    add('database', `stream ${old.database} (PostgreSQL ${oldDb.postgresVersion}) from ${o.old.name} into ${restoring} on ${o.new.name} (pg_dump -Fc | pg_restore, never whole in memory), then swap it in for ${database}`, async () => {
      marks.stoppedAt ??= Date.now()
      await record('cut-over')
      const psql = (db: string, sql: string) => psqlRows(n, db, sql)
      await psql('postgres', `DROP DATABASE IF EXISTS ${sqlIdent(restoring)};\nCREATE DATABASE ${sqlIdent(restoring)} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0 OWNER ${sqlIdent(o.new.vars.postgres.user)};`)
      const t0 = Date.now()
      const bytes = await relay(oc, databaseDumpCommand(old.database), n, databaseRestoreCommand(restoring, o.new.vars.postgres.user), 'database stream')
      o.say(`  database: ${(bytes / 1048576).toFixed(1)} MiB dump in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
      await psql(restoring, AFTER_RESTORE_SQL)
      const now = await readDatabaseState(n, database)
      if (holdsData(now)) throw new Error(`${o.new.name}'s ${database} holds data now; it was checked empty: refusing to replace it`)
      await psql('postgres', [
        `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ${sqlLiteral(database)} AND pid <> pg_backend_pid();`,
        now.exists ? `DROP DATABASE ${sqlIdent(database)};` : '',
        `ALTER DATABASE ${sqlIdent(restoring)} RENAME TO ${sqlIdent(database)};`,
      ].join('\n'))
    })
    add('key-secrets', `signing key ${old.signingKeyPath} -> ${SIGNING_KEY_PATH} (0600), and OLD's macaroon, form and registration secrets into ${SECRETS_DIR}`, async () => {
      await n.writeFile({ path: SIGNING_KEY_PATH, content: new Secret(key.stdout, 'signing key'), owner: SYNAPSE_USER, group: SYNAPSE_GROUP, mode: 0o600 })
      const v = o.new.vars.synapse
      for (const [ref, value] of [[v.macaroonSecret, old.secrets.macaroon], [v.formSecret, old.secrets.form], [v.registrationSharedSecret, old.secrets.registration]] as const) {
        if (value && ref.kind === 'generate') await n.writeFile({ path: `${SECRETS_DIR}/${ref.name}`, content: value, mode: 0o600 })
      }
    })
    add('start', `apply the inventory to ${o.new.name}: configuration with OLD's secrets, start Synapse (it migrates ${old.version} -> ${o.new.vars.synapse.version ?? 'the pinned version'}), then the workers, after-checks`, async () => {
      const port = o.new.vars.synapse.listenPort
      const up = n.run(sh`for i in $(seq 1 3600); do curl -sf -o /dev/null http://127.0.0.1:${String(port)}/health && exit 0; sleep 0.25; done; exit 1`, { timeoutMs: 0, allowFailure: true }).then((r) => (r.code === 0 ? Date.now() : undefined))
      const applied = await o.applyInventory()
      report.apply = applied
      const servedAt = await up
      if (servedAt && marks.stoppedAt) report.downtimeMs = servedAt - marks.stoppedAt
      await record('serving', { downtimeMs: report.downtimeMs })
      const h = applied.hosts[0]
      if (!h || h.status === 'failed') throw new Error(`applying the inventory to ${o.new.name} after the cut-over failed: ${h?.error ?? 'no report'}`)
    })
    add('verify', 'signing key the same; background updates of the migration run to completion', async () => {
      const k = await n.run(sh`cat ${SIGNING_KEY_PATH}`, { secretOutput: true })
      const now = signingKeyIdentity(new Secret(k.stdout, 'signing key').reveal())
      if (now.id !== oldKey.id || now.publicKey !== oldKey.publicKey) throw new Error(`${o.new.name}'s signing key is ${now.id} ${now.publicKey}, not OLD's ${oldKey.id} ${oldKey.publicKey}`)
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
      await s.run()
      s.step.done = true
      s.step.durationMs = Date.now() - t0
    }
    report.status = 'moved'
    return report
  } catch (error) {
    report.error = maskSecrets(error instanceof Error ? error.message : String(error))
    report.status = error instanceof MoveRefused ? 'refused' : 'failed'
    const stopped = report.steps.find((s) => s.name === 'stop-old')?.done
    if (report.status === 'failed' && stopped) report.next = [`${o.old.name} is stopped and masked; ${o.new.name} does not serve yet. Fix the cause and run the move again (it continues after the cut-over), or return ${o.old.name} to service: provision move --inventory ${o.inventory.file} --from ${o.old.name} --to ${o.new.name} --abort`]
    return report
  } finally {
    for (const l of locks) await l.release().catch(() => undefined)
    for (const c of connections) await c.close().catch(() => undefined)
    report.durationMs = Date.now() - started
  }
}

async function preflight(o: MoveOptions, report: MoveReport, old: OldConfig, oldConn: Connection, newConn: Connection, newRecord: NewRecord | undefined, movedAway: MovedAway | undefined): Promise<void> {
  const check = (name: string, ok: boolean, detail: string) => void report.preflight.push({ name, ok, detail })
  const target = o.new.vars.synapse.version
  check('same server name', old.serverName === o.new.vars.serverName, old.serverName === o.new.vars.serverName ? old.serverName : `${o.old.name} serves ${old.serverName}, the inventory says ${o.new.vars.serverName}: a homeserver's data belongs to its server name`)
  const local = ['', 'localhost', '127.0.0.1', '::1'].includes(old.databaseHost) || old.databaseHost.startsWith('/')
  check(`${o.old.name}'s database is local`, local, local ? `${old.database} (PostgreSQL ${report.old!.postgres})` : `its database is on ${old.databaseHost}: run the move from that host's dump (not supported yet)`)
  check('version route', !target || compareVersions(old.version, target) <= 0, target ? (compareVersions(old.version, target) <= 0 ? `${old.version} -> ${target} directly: Synapse applies every schema delta since ${report.old!.schema ?? '?'} on start (prepare_database; no intermediate release is needed)` : `${o.old.name} runs ${old.version}, newer than the inventory's ${target}: a move never downgrades; set synapse.version to ${old.version} or newer`) : 'the newest release')
  const facts = await gatherFacts(newConn, [osRelease, pythonVersion])
  const os = facts.get(osRelease)
  const t = targetOf(os)
  const pgMin = minimumPostgresFor(target)
  const pg = Number(/^(\d+)/.exec((await newConn.run(raw`psql --version 2>/dev/null || true`)).stdout.replace(/^\D+/, ''))?.[1]) || t?.defaultPostgres
  check(`${o.new.name}'s PostgreSQL`, pg !== undefined && pg >= pgMin, pg === undefined ? `${os.prettyName} is not a supported target` : `${pg} (Synapse ${target ?? 'latest'} needs ${pgMin}+)`)
  const py = facts.get(pythonVersion)
  if (target && o.new.vars.synapse.install === 'pip') {
    const lock = await readLock(o.new.vars.synapse.lockDir, target, o.inventory.file)
    const floor = /(\d+\.\d+)/.exec(lock.python)?.[1] ?? '3.10'
    check(`${o.new.name}'s Python`, !!py && compareVersions(`${py}.0`, `${floor}.0`) >= 0, `${py ?? 'none'} (the lock of ${target} covers Python ${lock.python})`)
  }
  const need = Math.ceil((report.old!.databaseBytes + report.old!.mediaBytes) * SPACE_MARGIN)
  const avail = Number((await newConn.run(raw`df -B1 --output=avail /var/lib | tail -1`)).stdout.trim())
  check('free space on NEW', avail >= need, `${(avail / 2 ** 30).toFixed(1)} GiB free under /var/lib; needs ${(need / 2 ** 30).toFixed(2)} GiB (database ${(report.old!.databaseBytes / 2 ** 20).toFixed(0)} MiB + media ${(report.old!.mediaBytes / 2 ** 20).toFixed(0)} MiB, x${SPACE_MARGIN})`)
  const tls = o.new.vars.apache.tls
  const tlsOk = tls.mode !== 'acme'
  check('TLS on NEW before the cut-over', tlsOk, tlsOk
    ? `${tls.mode}${tls.mode === 'files' ? ` (a certificate from a private CA: list the CA in synapse.federationCaFiles so ${o.new.name} trusts it)` : ''}`
    : `ACME needs the public names to point to ${o.new.name}, which happens after the move: move with tls.mode files (OLD's certificate and key), switch DNS, then set tls.mode acme and provision again`)
  if (!movedAway) {
    const newDb = await readDatabaseState(newConn, o.new.vars.postgres.database).catch(() => undefined)
    const empty = !newDb || !holdsData(newDb) || newRecord !== undefined
    check(`${o.new.name} holds no homeserver`, empty, empty ? 'empty' : `its database ${o.new.vars.postgres.database} holds Synapse data and no move started there: refusing to replace it`)
  } else {
    check(`${o.old.name} already stopped`, movedAway.to === o.new.name, movedAway.to === o.new.name ? `since ${movedAway.at}: continuing after the cut-over` : `${o.old.name} was moved to ${movedAway.to}, not ${o.new.name}`)
  }
  void oldConn
}

async function abort(o: MoveOptions, report: MoveReport, oldConn: Connection, newConn: Connection, movedAway: MovedAway | undefined, newRecord: NewRecord | undefined): Promise<MoveReport> {
  if (newRecord && ['serving', 'done'].includes(newRecord.phase)) {
    throw new MoveRefused(`${o.new.name} has served the homeserver since ${newRecord.at}: returning to ${o.old.name} would lose what was written there since. Move back with provision move --from ${o.new.name} --to ${o.old.name} instead`)
  }
  if (!movedAway) {
    report.status = 'unchanged'
    report.next = [`${o.old.name} was never stopped by a move: nothing to abort`]
    return report
  }
  report.steps = [
    { name: 'stop-new', summary: `stop Synapse on ${o.new.name} (it must not serve with the same key)`, done: false },
    { name: 'start-old', summary: `unmask ${movedAway.masked.join(', ')} on ${o.old.name}, put the unit files back, start main then the rest`, done: false },
  ]
  if (o.dryRun) {
    report.status = 'planned'
    return report
  }
  const units = [...workerUnits(o.inventory, o.new.name), SYNAPSE_UNIT]
  await must(newConn, sh`systemctl stop ${units} 2>/dev/null; true`, `stopping Synapse on ${o.new.name}`)
  report.steps[0]!.done = true
  await unmaskAndStart(oldConn, movedAway)
  report.steps[1]!.done = true
  await must(newConn, sh`cat > ${MOVE_RECORD}`, 'recording the abort', JSON.stringify({ from: o.old.name, phase: 'aborted', at: new Date().toISOString() }) + '\n')
  report.status = 'aborted'
  report.next = [`${o.old.name} serves again; ${o.new.name} keeps a partial copy (its database ${o.new.vars.postgres.database}_restoring may exist): a later move starts over`]
  return report
}

function nextSteps(o: MoveOptions): string[] {
  return [
    `point the DNS records of ${o.new.vars.serverName} (and the public names of its vhosts) to ${o.new.address}; keep the .well-known records (they name names, not addresses)`,
    `${o.old.name} stays stopped and masked with all its data: remove it from the inventory, and delete or reuse it once ${o.new.name} has served for a while`,
    `if ${o.new.name} uses OLD's certificate (tls.mode files), switch to tls.mode acme once DNS points to it, and provision again`,
  ]
}
