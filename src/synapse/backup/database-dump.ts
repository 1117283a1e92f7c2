import { sh, type ShellCommand } from '../../core/shell.js'

/**
 * The Synapse database dump, as Synapse's backup guide (docs/usage/administration/backups.md) takes it:
 * pg_dump's custom format (compressed, restorable table by table, readable by newer pg_restore), without
 * the rows of e2e_one_time_keys_json: a one-time key handed out again after a restore breaks the
 * Olm sessions built on it, so restored servers start with none and clients upload fresh ones.
 * The one definition of the dump: `provision backup`, the scheduled backup and the upgrade's
 * pre-migration dump all take it from here.
 */
export const EXCLUDED_TABLE_DATA = ['e2e_one_time_keys_json'] as const

/** pg_dump's arguments after the connection options: the database to stdout, custom format. */
export function pgDumpArgs(database: string): string[] {
  return ['pg_dump', '--format=custom', '--no-password', ...EXCLUDED_TABLE_DATA.map((t) => `--exclude-table-data=${t}`), database]
}

/**
 * The dump to stdout, run on the database host as the postgres superuser over the local socket (peer
 * authentication: no password anywhere). `cd /` keeps runuser from warning about root's home.
 */
export function databaseDumpCommand(database: string): ShellCommand {
  return sh`cd / && runuser -u postgres -- ${pgDumpArgs(database)}`
}

/**
 * Restore a custom-format dump read from stdin into `database` (which must exist and be empty), as the
 * postgres superuser. Objects are owned by `role` (the inventory's Synapse user), whatever the dump's
 * owner was; the first error stops it (one transaction would hold every row in WAL at once).
 */
export function databaseRestoreCommand(database: string, role: string): ShellCommand {
  return sh`cd / && runuser -u postgres -- pg_restore --exit-on-error --no-owner ${`--role=${role}`} --dbname ${database}`
}

/** After a restore, as ESS's restore procedure does: no one-time key may be handed out twice. */
export const AFTER_RESTORE_SQL = EXCLUDED_TABLE_DATA.map((t) => `TRUNCATE ${t};`).join('\n')
