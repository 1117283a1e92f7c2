/**
 * PostgreSQL: where it listens (a conf.d drop-in: Debian's postgresql.conf ends with
 * `include_dir = 'conf.d'`, read after everything else, so these win) and who may connect
 * (pg_hba.conf lines).
 *
 * pg_hba.conf is first match wins, and Debian's file ends with catch-all lines such as
 * `host all all 127.0.0.1/32 scram-sha-256`. Our rules must come BEFORE the distribution's rules,
 * or a broader earlier line decides instead: renderPgHba writes the whole file in that order
 * (the superuser's peer line first, as Debian has it, then our block, then Debian's defaults);
 * renderPgHbaRules gives the block alone, for a task that edits the file in place.
 */
import { isIP } from 'node:net'

export const PG_HBA_BEGIN = '# BEGIN matrix-provision'
export const PG_HBA_END = '# END matrix-provision'

/** /etc/postgresql/<major>/main/conf.d/matrix-provision.conf */
export function postgresListenPath(majorVersion: number | string): string {
  if (!/^\d{1,3}$/.test(String(majorVersion)))
    throw new Error(`PostgreSQL major version must be a number, got ${JSON.stringify(majorVersion)}`)
  return `/etc/postgresql/${majorVersion}/main/conf.d/matrix-provision.conf`
}

const LISTEN_ADDRESS = /^(?:\*|localhost|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$/

/** Content of conf.d/matrix-provision.conf (owner postgres, 0644; no secrets). */
export function renderPostgresListen(listenAddresses: string[], port: number): string {
  if (listenAddresses.length === 0) throw new Error('PostgreSQL needs at least one listen address')
  for (const address of listenAddresses) {
    if (isIP(address) === 0 && !LISTEN_ADDRESS.test(address)) {
      throw new Error(`listen address must be an IP address, a host name, localhost or *, got ${JSON.stringify(address)}`)
    }
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw new Error(`postgres.port must be a TCP port (1-65535), got ${String(port)}`)
  return [
    '# Managed by matrix-provision: changes here are overwritten on the next run.',
    `listen_addresses = '${[...new Set(listenAddresses)].join(',')}'`,
    `port = ${port}`,
    '',
  ].join('\n')
}

export interface PgHbaRule {
  database: string
  user: string
  /**
   * An IP address (gets /32 or /128), an IP with its prefix length, or a host name (Postgres then
   * checks reverse and forward DNS of the client: prefer IPs).
   */
  address: string
  method: 'scram-sha-256' | 'md5'
}

/** Words pg_hba.conf gives a meaning to when unquoted. */
const HBA_KEYWORDS = new Set(['all', 'sameuser', 'samerole', 'samegroup', 'replication'])

/** A database or role name as a pg_hba.conf field: bare when plain, else double-quoted (+, @, /, commas lose their meaning). */
function hbaName(value: string, what: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are what this refuses
  if (value.length === 0 || /["\u0000-\u001f\u007f]/.test(value)) {
    throw new Error(`${what} cannot be written to pg_hba.conf: ${JSON.stringify(value)} (empty, or holds a quote or control character)`)
  }
  return /^[a-z_][a-z0-9_$]*$/.test(value) && !HBA_KEYWORDS.has(value) ? value : `"${value}"`
}

/** Words pg_hba.conf reads as keywords in the address field. */
const HBA_ADDRESS_KEYWORDS = new Set(['all', 'samehost', 'samenet'])
const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/

function hbaAddress(value: string): string {
  if (isIP(value) === 0 && !/^[\d.]+$/.test(value) && HOST_NAME.test(value) && !HBA_ADDRESS_KEYWORDS.has(value.toLowerCase())) return value
  const [ip, prefix, ...rest] = value.split('/')
  const family = isIP(ip ?? '')
  if (family === 0 || rest.length > 0) throw new Error(`pg_hba address must be an IP address or a host name, got ${JSON.stringify(value)}`)
  const max = family === 4 ? 32 : 128
  if (prefix === undefined) return `${ip}/${max}`
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max)
    throw new Error(`pg_hba prefix length must be 0-${max}, got ${JSON.stringify(value)}`)
  return `${ip}/${prefix}`
}

/** The pg_hba.conf block, between PG_HBA_BEGIN and PG_HBA_END, one `host` line per rule. */
export function renderPgHbaRules(rules: PgHbaRule[]): string {
  const lines = rules.map((rule) => {
    if (rule.method !== 'scram-sha-256' && rule.method !== 'md5')
      throw new Error(`pg_hba method must be scram-sha-256 or md5, got ${JSON.stringify(rule.method)}`)
    return ['host', hbaName(rule.database, 'database'), hbaName(rule.user, 'user'), hbaAddress(rule.address), rule.method].join('\t')
  })
  return [
    PG_HBA_BEGIN,
    "# Synapse and its workers (first match wins: this block must stay above the distribution's rules).",
    ...[...new Set(lines)],
    PG_HBA_END,
    '',
  ].join('\n')
}

/**
 * The whole pg_hba.conf: Debian's file (PostgreSQL 14+, scram-sha-256) with our block between the
 * superuser's peer line and the distribution's catch-all rules.
 */
export function renderPgHba(rules: PgHbaRule[]): string {
  return [
    '# PostgreSQL Client Authentication Configuration File',
    '# Managed by matrix-provision: changes here are overwritten on the next run.',
    '# The first line that matches a connection decides (type, database, user, address).',
    '',
    '# Database administrative login by Unix domain socket (Debian: do not disable, maintenance needs it).',
    'local\tall\tpostgres\tpeer',
    '',
    renderPgHbaRules(rules).trimEnd(),
    '',
    "# The distribution's rules.",
    '# TYPE\tDATABASE\tUSER\tADDRESS\tMETHOD',
    'local\tall\tall\tpeer',
    'host\tall\tall\t127.0.0.1/32\tscram-sha-256',
    'host\tall\tall\t::1/128\tscram-sha-256',
    'local\treplication\tall\tpeer',
    'host\treplication\tall\t127.0.0.1/32\tscram-sha-256',
    'host\treplication\tall\t::1/128\tscram-sha-256',
    '',
  ].join('\n')
}
