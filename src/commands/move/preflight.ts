/** The move's preflight: everything checked before anything stops. */
import { gatherFacts } from '../../facts/probe.js'
import { osRelease, pythonVersion } from '../../facts/system.js'
import { readLock } from '../../inventory/controller-files.js'
import { holdsData, readDatabaseState } from '../../resources/homeserver-state.js'
import { raw } from '../../core/shell.js'
import type { Connection } from '../../ssh/connection.js'
import { compareVersions, minimumPostgresFor } from '../../synapse/compat.js'
import { targetOf } from '../../../tasks/common/checks.js'
import type { MovedAway, OldConfig } from './old-host.js'
import { SPACE_MARGIN, type MoveOptions, type MoveReport, type NewRecord } from './report.js'
export async function preflight(
  o: MoveOptions,
  report: MoveReport,
  old: OldConfig,
  oldConn: Connection,
  newConn: Connection,
  newRecord: NewRecord | undefined,
  movedAway: MovedAway | undefined,
): Promise<void> {
  const check = (name: string, ok: boolean, detail: string) => void report.preflight.push({ name, ok, detail })
  const target = o.new.vars.synapse.version
  check(
    'same server name',
    old.serverName === o.new.vars.serverName,
    old.serverName === o.new.vars.serverName
      ? old.serverName
      : `${o.old.name} serves ${old.serverName}, the inventory says ${o.new.vars.serverName}: a homeserver's data belongs to its server name`,
  )
  const local = ['', 'localhost', '127.0.0.1', '::1'].includes(old.databaseHost) || old.databaseHost.startsWith('/')
  check(
    `${o.old.name}'s database is local`,
    local,
    local
      ? `${old.database} (PostgreSQL ${report.old!.postgres})`
      : `its database is on ${old.databaseHost}: run the move from that host's dump (not supported yet)`,
  )
  check(
    'version route',
    !target || compareVersions(old.version, target) <= 0,
    target
      ? compareVersions(old.version, target) <= 0
        ? `${old.version} -> ${target} directly: Synapse applies every schema delta since ${report.old!.schema ?? '?'} on start (prepare_database; no intermediate release is needed)`
        : `${o.old.name} runs ${old.version}, newer than the inventory's ${target}: a move never downgrades; set synapse.version to ${old.version} or newer`
      : 'the newest release',
  )
  const facts = await gatherFacts(newConn, [osRelease, pythonVersion])
  const os = facts.get(osRelease)
  const t = targetOf(os)
  const pgMin = minimumPostgresFor(target)
  const pg =
    Number(/^(\d+)/.exec((await newConn.run(raw`psql --version 2>/dev/null || true`)).stdout.replace(/^\D+/, ''))?.[1]) ||
    t?.defaultPostgres
  check(
    `${o.new.name}'s PostgreSQL`,
    pg !== undefined && pg >= pgMin,
    pg === undefined ? `${os.prettyName} is not a supported target` : `${pg} (Synapse ${target ?? 'latest'} needs ${pgMin}+)`,
  )
  const py = facts.get(pythonVersion)
  if (target && o.new.vars.synapse.install === 'pip') {
    const lock = await readLock(o.new.vars.synapse.lockDir, target, o.inventory.file)
    const floor = /(\d+\.\d+)/.exec(lock.python)?.[1] ?? '3.10'
    check(
      `${o.new.name}'s Python`,
      !!py && compareVersions(`${py}.0`, `${floor}.0`) >= 0,
      `${py ?? 'none'} (the lock of ${target} covers Python ${lock.python})`,
    )
  }
  const need = Math.ceil((report.old!.databaseBytes + report.old!.mediaBytes) * SPACE_MARGIN)
  const avail = Number((await newConn.run(raw`df -B1 --output=avail /var/lib | tail -1`)).stdout.trim())
  check(
    'free space on NEW',
    avail >= need,
    `${(avail / 2 ** 30).toFixed(1)} GiB free under /var/lib; needs ${(need / 2 ** 30).toFixed(2)} GiB (database ${(report.old!.databaseBytes / 2 ** 20).toFixed(0)} MiB + media ${(report.old!.mediaBytes / 2 ** 20).toFixed(0)} MiB, x${SPACE_MARGIN})`,
  )
  const tls = o.new.vars.apache.tls
  const tlsOk = tls.mode !== 'acme'
  check(
    'TLS on NEW before the cut-over',
    tlsOk,
    tlsOk
      ? `${tls.mode}${tls.mode === 'files' ? ` (a certificate from a private CA: list the CA in synapse.federationCaFiles so ${o.new.name} trusts it)` : ''}`
      : `ACME needs the public names to point to ${o.new.name}, which happens after the move: move with tls.mode files (OLD's certificate and key), switch DNS, then set tls.mode acme and provision again`,
  )
  if (!movedAway) {
    const newDb = await readDatabaseState(newConn, o.new.vars.postgres.database).catch(() => undefined)
    const empty = !newDb || !holdsData(newDb) || newRecord !== undefined
    check(
      `${o.new.name} holds no homeserver`,
      empty,
      empty ? 'empty' : `its database ${o.new.vars.postgres.database} holds Synapse data and no move started there: refusing to replace it`,
    )
  } else {
    check(
      `${o.old.name} already stopped`,
      movedAway.to === o.new.name,
      movedAway.to === o.new.name
        ? `since ${movedAway.at}: continuing after the cut-over`
        : `${o.old.name} was moved to ${movedAway.to}, not ${o.new.name}`,
    )
  }
  void oldConn
}
