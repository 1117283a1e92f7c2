/**
 * What `provision move` reads from, and does to, the host it moves away from (OLD). OLD needs no
 * adoption and no supported system: it is only read (its Synapse's own configuration, through its own
 * Python), and at the cut-over its units are stopped and masked. Nothing on OLD is deleted: unit files
 * systemd cannot mask in place (those in /etc/systemd/system) are moved aside, and a record of what was
 * done lets --abort undo exactly that.
 */
import { Secret } from '../../core/secret.js'
import { joinShell, raw, sh } from '../../core/shell.js'
import type { Connection } from '../../ssh/connection.js'
import { STATE_DIR, SYNAPSE_UNIT } from '../../synapse/paths.js'

/** Where OLD keeps what the move did to it (on OLD): read by --abort and by a second run. */
export const MOVED_AWAY_RECORD = `${STATE_DIR}/moved-away.json`
/** Unit files moved out of /etc/systemd/system so that their names can be masked. */
export const MOVED_UNITS_DIR = `${STATE_DIR}/moved-units`

export interface OldConfig {
  serverName: string
  version: string
  python: string
  configPaths: string[]
  signingKeyPath: string
  mediaStorePath: string
  database: string
  /** The database host as OLD's config names it (the move dumps on OLD: it must be local). */
  databaseHost: string
  /** Synapse's own listener for /health (the first http listener). */
  healthPort: number
  secrets: { macaroon?: Secret; form?: Secret; registration?: Secret }
}

/** The Python and the config paths of OLD's main process, from its unit's ExecStart (what runs, not what a layout suggests). */
export function parseExecStart(execStart: string): { python: string; configPaths: string[] } | undefined {
  const argv = /argv\[\]=([^;]+)/.exec(execStart)?.[1]?.trim().split(/\s+/)
  if (!argv?.length || !argv.includes('synapse.app.homeserver')) return undefined
  const configPaths: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    const eq = /^(?:--config-path|-c)=(.+)$/.exec(a)
    if (eq) configPaths.push(eq[1]!)
    else if ((a === '--config-path' || a === '-c') && argv[i + 1]) configPaths.push(argv[++i]!)
  }
  return { python: argv[0]!, configPaths }
}

// Merged as Synapse merges them: files in order, a directory's *.yaml sorted; later keys win.
const READ_CONFIG_PY = `
import sys, os, json, glob, yaml, synapse
from synapse.storage.schema import SCHEMA_VERSION
c = {}
for p in sys.argv[1:]:
    for f in (sorted(glob.glob(os.path.join(p, "*.yaml"))) if os.path.isdir(p) else [p]):
        with open(f) as fh:
            c.update(yaml.safe_load(fh) or {})
db = (c.get("database") or {}).get("args") or {}
port = next((l.get("port") for l in c.get("listeners") or [] if l.get("type") == "http" and any("client" in (r.get("names") or []) for r in l.get("resources") or [])), 8008)
print(json.dumps({"server_name": c.get("server_name"), "version": synapse.__version__, "signing_key_path": c.get("signing_key_path"),
  "media_store_path": c.get("media_store_path", "/var/lib/matrix-synapse/media_store"), "database": db.get("database") or db.get("dbname") or "synapse",
  "database_host": db.get("host") or "", "port": port, "macaroon": c.get("macaroon_secret_key"), "form": c.get("form_secret"), "registration": c.get("registration_shared_secret")}))
`

export class MoveRefused extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'MoveRefused'
  }
}

export async function readOldConfig(conn: Connection): Promise<OldConfig> {
  const shown = await conn.run(sh`systemctl show -p ExecStart --value ${SYNAPSE_UNIT} || true`)
  const exec = parseExecStart(shown.stdout)
  if (!exec)
    throw new MoveRefused(
      `${conn.host}: ${SYNAPSE_UNIT} does not run synapse.app.homeserver (ExecStart: ${shown.stdout.trim() || 'none'}): the move reads the configuration the running unit uses`,
    )
  const paths = exec.configPaths.length ? exec.configPaths : ['/etc/matrix-synapse/homeserver.yaml']
  const r = await conn.run(sh`cd / && ${exec.python} -c ${READ_CONFIG_PY} ${paths}`, { secretOutput: true, allowFailure: true })
  if (r.code !== 0)
    throw new Error(`${conn.host}: reading Synapse's configuration with ${exec.python} failed: ${r.stderr.trim().split('\n').at(-1)}`)
  const c = JSON.parse(r.stdout) as Record<string, string | number | null>
  const secret = (v: unknown, what: string) => (typeof v === 'string' && v !== '' ? new Secret(v, `${what} of ${conn.host}`) : undefined)
  if (typeof c.server_name !== 'string' || typeof c.signing_key_path !== 'string')
    throw new MoveRefused(`${conn.host}: its configuration (${paths.join(', ')}) names no server_name or signing_key_path`)
  return {
    serverName: c.server_name,
    version: String(c.version),
    python: exec.python,
    configPaths: paths,
    signingKeyPath: c.signing_key_path,
    mediaStorePath: String(c.media_store_path),
    database: String(c.database),
    databaseHost: String(c.database_host),
    healthPort: Number(c.port) || 8008,
    secrets: {
      macaroon: secret(c.macaroon, 'macaroon_secret_key'),
      form: secret(c.form, 'form_secret'),
      registration: secret(c.registration, 'registration_shared_secret'),
    },
  }
}

export interface UnitFile {
  unit: string
  /** Where systemd loads it from. */
  path: string
  enabled: string
}

/** Every Synapse unit and the tool's backup timer on the host, loaded or only installed (list-unit-files: templates, disabled ones). */
export async function synapseUnits(conn: Connection): Promise<UnitFile[]> {
  const r = await conn.run(
    raw`{ systemctl list-units --all --plain --no-legend 'matrix-synapse*' 'matrix-provision-backup*' | awk '{print $1}'; systemctl list-unit-files --no-legend 'matrix-synapse*' 'matrix-provision-backup*' | awk '{print $1}'; } | sort -u | while read -r u; do printf '%s\\t%s\\t%s\\n' "$u" "$(systemctl show -p FragmentPath --value "$u")" "$(systemctl is-enabled "$u" 2>/dev/null)"; done; true`,
  )
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\t'))
    .map(([unit, path, enabled]) => ({ unit: unit!, path: path ?? '', enabled: enabled ?? '' }))
}

/** What the move did to OLD, kept there. */
export interface MovedAway {
  to: string
  at: string
  /** Units masked (stopped first), in the order they were stopped. */
  masked: string[]
  /** Unit files moved aside so their names could be masked: original path -> where it is now. */
  movedAside: { from: string; to: string }[]
  /** Units that were enabled (enabled again on abort). */
  enabled: string[]
}

export async function readMovedAway(conn: Connection): Promise<MovedAway | undefined> {
  const r = await conn.run(sh`cat ${MOVED_AWAY_RECORD} 2>/dev/null || true`)
  return r.stdout.trim() ? (JSON.parse(r.stdout) as MovedAway) : undefined
}

const isTemplate = (unit: string) => /@\.[a-z]+$/.test(unit)

/**
 * Stop every Synapse unit and timer in one `systemctl stop` (systemd stops them side by side, in the
 * reverse of their After= order: the workers before main), the downtime's first cost. The record is
 * written before anything changes; masking (maskOld) follows.
 */
export async function stopOld(conn: Connection, to: string): Promise<MovedAway> {
  const units = await synapseUnits(conn)
  const instances = units.filter((u) => !isTemplate(u.unit))
  const order = (u: string) => (u === SYNAPSE_UNIT ? 1 : u.endsWith('.service') ? 0 : 2)
  const stop = [...instances].sort((a, b) => order(a.unit) - order(b.unit)).map((u) => u.unit)
  // Instances of a template in /etc can be masked; a unit whose own file is there cannot (moved aside).
  const aside = instances.filter((u) => u.path === `/etc/systemd/system/${u.unit}`)
  const record: MovedAway = {
    to,
    at: new Date().toISOString(),
    masked: stop,
    movedAside: aside.map((u) => ({ from: u.path, to: `${MOVED_UNITS_DIR}/${u.path.slice('/etc/systemd/system/'.length)}` })),
    enabled: instances.filter((u) => u.enabled === 'enabled').map((u) => u.unit),
  }
  await must(
    conn,
    sh`mkdir -p -m 0700 ${STATE_DIR} ${MOVED_UNITS_DIR} && cat > ${MOVED_AWAY_RECORD}`,
    'writing the move record',
    JSON.stringify(record, null, 2) + '\n',
  )
  if (stop.length) await must(conn, sh`systemctl stop ${stop}`, `stopping ${stop.join(', ')}`)
  return record
}

/**
 * Mask what stopOld stopped, so that no reboot or dependency brings back a second server with the same
 * key. A unit file in /etc/systemd/system cannot be masked in place ("File ... already exists"): it is
 * moved into MOVED_UNITS_DIR first. One round trip; the move runs it beside its copies, done before NEW starts.
 */
export async function maskOld(conn: Connection, record: MovedAway): Promise<void> {
  const steps = [
    // A second attempt (a run continuing after the cut-over) finds the file moved, or the mask's link in its place.
    ...record.movedAside.map((m) => sh`{ test -L ${m.from} || ! test -e ${m.from} || mv ${m.from} ${m.to}; }`),
    sh`systemctl daemon-reload`,
    ...(record.masked.length ? [sh`systemctl mask ${record.masked}`] : []),
  ]
  await must(conn, joinShell(steps, ' && '), 'moving unit files aside and masking the units')
}

/** --abort on OLD: unmask, put the unit files back, enable what was enabled, start main then the rest. */
export async function unmaskAndStart(conn: Connection, record: MovedAway): Promise<void> {
  await must(conn, sh`systemctl unmask ${record.masked}`, 'unmasking the units')
  for (const m of record.movedAside) await must(conn, sh`mv ${m.to} ${m.from}`, `putting ${m.from} back`)
  await must(conn, sh`systemctl daemon-reload`, 'systemctl daemon-reload')
  if (record.enabled.length) await must(conn, sh`systemctl enable ${record.enabled}`, 'enabling the units again')
  const main = record.masked.filter((u) => u === SYNAPSE_UNIT)
  const rest = record.masked.filter((u) => u !== SYNAPSE_UNIT && !u.endsWith('.timer') && record.enabled.includes(u))
  for (const group of [main, rest, record.masked.filter((u) => u.endsWith('.timer') && record.enabled.includes(u))]) {
    if (group.length) await must(conn, sh`systemctl start ${group}`, `starting ${group.join(', ')}`)
  }
  await must(conn, sh`mv ${MOVED_AWAY_RECORD} ${`${MOVED_AWAY_RECORD}.aborted-${Date.now()}`}`, 'retiring the move record')
}

export async function must(conn: Connection, command: ReturnType<typeof sh>, what: string, stdin?: string | Buffer): Promise<string> {
  const r = await conn.run(command, { stdin, timeoutMs: 0, allowFailure: true })
  if (r.code !== 0) throw new Error(`${conn.host}: ${what} failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`)
  return r.stdout
}
