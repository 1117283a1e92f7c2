/** The move's preflight: everything checked before anything stops. */
import { hostOwnership } from '../../engine/host-state.js'
import { isOurs, synapseFootprint } from '../../engine/ownership.js'
import { gatherFacts } from '../../facts/probe.js'
import { osRelease, pythonVersion } from '../../facts/system.js'
import { readLock } from '../../inventory/controller-files.js'
import { holdsData, readDatabaseState, signingKeyIdentity } from '../../resources/homeserver-state.js'
import { raw } from '../../core/shell.js'
import type { Connection } from '../../ssh/connection.js'
import { compareVersions, minimumPostgresFor } from '../../synapse/compat.js'
import { targetOf } from '../../../tasks/common/checks.js'
import type { NewLayout } from './layout.js'
import type { MovedAway, OldConfig } from './old-host.js'
import { SPACE_MARGIN, type MoveOptions, type MoveReport, type NewRecord } from './report.js'
export async function preflight(
  o: MoveOptions,
  report: MoveReport,
  old: OldConfig,
  oldKey: { id: string; publicKey: string },
  conns: ReadonlyMap<string, Connection>,
  layout: NewLayout,
  newRecord: NewRecord | undefined,
  movedAway: MovedAway | undefined,
): Promise<void> {
  const check = (name: string, ok: boolean, detail: string) => void report.preflight.push({ name, ok, detail })
  const conn = (host: string) => conns.get(host)!
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
  identityChecks(o, old, oldKey, check)
  const facts = new Map(
    await Promise.all(
      layout.hosts.map(async (h) => [h, await gatherFacts(conn(h), [osRelease, pythonVersion, hostOwnership, synapseFootprint])] as const),
    ),
  )
  // The move writes OLD's key on NEW before provisioning it, which marks it as the tool's: a Synapse built there by hand is refused first.
  for (const h of layout.synapseHosts) {
    const f = facts.get(h)!
    const found = isOurs(f.get(hostOwnership)) || newRecord !== undefined ? [] : f.get(synapseFootprint)
    check(
      `no Synapse built by hand on ${h}`,
      found.length === 0,
      found.length ? `found ${found.join(', ')}: adopt or clear it first` : 'none',
    )
  }
  const db = layout.database
  const os = facts.get(db)!.get(osRelease)
  const pgMin = minimumPostgresFor(target)
  const pg =
    Number(/^(\d+)/.exec((await conn(db).run(raw`psql --version 2>/dev/null || true`)).stdout.replace(/^\D+/, ''))?.[1]) ||
    targetOf(os)?.defaultPostgres
  check(
    `${db}'s PostgreSQL`,
    pg !== undefined && pg >= pgMin,
    pg === undefined ? `${os.prettyName} is not a supported target` : `${pg} (Synapse ${target ?? 'latest'} needs ${pgMin}+)`,
  )
  if (target && o.new.vars.synapse.install === 'pip') {
    const lock = await readLock(o.new.vars.synapse.lockDir, target, o.inventory.file)
    const floor = /(\d+\.\d+)/.exec(lock.python)?.[1] ?? '3.10'
    for (const h of layout.synapseHosts) {
      const py = facts.get(h)!.get(pythonVersion)
      check(
        `${h}'s Python`,
        !!py && compareVersions(`${py}.0`, `${floor}.0`) >= 0,
        `${py ?? 'none'} (the lock of ${target} covers Python ${lock.python})`,
      )
    }
  }
  // The database lands under /var/lib/postgresql on its host, the media under /var/lib/matrix-synapse on theirs.
  const need = new Map<string, { bytes: number; what: string[] }>()
  const add = (h: string, bytes: number, what: string) => {
    const n = need.get(h) ?? { bytes: 0, what: [] }
    need.set(h, { bytes: n.bytes + bytes, what: [...n.what, `${what} ${(bytes / 2 ** 20).toFixed(0)} MiB`] })
  }
  add(db, report.old!.databaseBytes, 'database')
  add(layout.media, report.old!.mediaBytes, 'media')
  for (const [h, n] of need) {
    const bytes = Math.ceil(n.bytes * SPACE_MARGIN)
    const avail = Number((await conn(h).run(raw`df -B1 --output=avail /var/lib | tail -1`)).stdout.trim())
    check(
      `free space on ${h}`,
      avail >= bytes,
      `${(avail / 2 ** 30).toFixed(1)} GiB free under /var/lib; needs ${(bytes / 2 ** 30).toFixed(2)} GiB (${n.what.join(' + ')}, x${SPACE_MARGIN})`,
    )
  }
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
    const newDb = await readDatabaseState(conn(db), o.new.vars.postgres.database).catch(() => undefined)
    const empty = !newDb || !holdsData(newDb) || newRecord !== undefined
    check(
      `${db} holds no homeserver`,
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
}

/**
 * The key and the secrets the inventory gives (a spread NEW must give them, the loader says so: its
 * hosts read the same values) must be OLD's: the move brings OLD's, and the next apply would write the inventory's.
 * Generated ones are seeded from OLD before NEW is provisioned.
 */
export function identityChecks(
  o: Pick<MoveOptions, 'old' | 'new'>,
  old: OldConfig,
  oldKey: { id: string; publicKey: string },
  check: (name: string, ok: boolean, detail: string) => void,
): void {
  const v = o.new.vars.synapse
  if (v.signingKey?.kind === 'value') {
    let given: { id: string; publicKey: string }
    try {
      given = signingKeyIdentity(v.signingKey.secret.reveal())
    } catch (e) {
      given = { id: '(unreadable)', publicKey: e instanceof Error ? e.message : String(e) }
    }
    const same = given.id === oldKey.id && given.publicKey === oldKey.publicKey
    check(
      "synapse.signingKey is OLD's",
      same,
      same
        ? `${oldKey.id} (${v.signingKey.secret.source})`
        : `the inventory gives ${given.id} ${given.publicKey} (${v.signingKey.secret.source}), ${o.old.name} signs with ${oldKey.id} ${oldKey.publicKey}: set synapse.signingKey to a copy of ${old.signingKeyPath} from ${o.old.name}`,
    )
  }
  for (const [setting, key, ref, value] of [
    ['synapse.macaroonSecret', 'macaroon_secret_key', v.macaroonSecret, old.secrets.macaroon],
    ['synapse.formSecret', 'form_secret', v.formSecret, old.secrets.form],
    ['synapse.registrationSharedSecret', 'registration_shared_secret', v.registrationSharedSecret, old.secrets.registration],
  ] as const) {
    if (ref.kind !== 'value' || !value) continue
    const same = ref.secret.reveal() === value.reveal()
    check(
      `${setting} is OLD's`,
      same,
      same
        ? `${ref.secret.source}`
        : `${ref.secret.source} differs from ${o.old.name}'s ${key}: set ${setting} to ${o.old.name}'s value (tokens and links signed with it stop working otherwise)`,
    )
  }
}
