/**
 * A Synapse database replaced whole: the new contents go into `<database>_restoring` (created empty,
 * owned by Synapse's role), get the after-restore cleanup, and are renamed into place while Synapse is
 * stopped; the old database is dropped or kept under another name. Restore and move stream the dump
 * differently (a backup file, a host's pg_dump) and share the rest from here.
 */
import type { Connection } from '../ssh/connection.js'
import { AFTER_RESTORE_SQL } from '../synapse/backup/database-dump.js'
import { psqlRows } from './homeserver-state.js'
import { sqlIdent, sqlLiteral } from './postgres.js'

export const restoringName = (database: string) => `${database}_restoring`

/** An empty `<database>_restoring` for pg_restore (one a cut run left is dropped first). */
export async function createRestoringDatabase(dbConn: Connection, database: string, owner: string): Promise<string> {
  const restoring = restoringName(database)
  await psqlRows(
    dbConn,
    'postgres',
    `DROP DATABASE IF EXISTS ${sqlIdent(restoring)};\nCREATE DATABASE ${sqlIdent(restoring)} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0 OWNER ${sqlIdent(owner)};`,
  )
  return restoring
}

/**
 * After pg_restore: the cleanup (no one-time key handed out twice), then the swap. Anything still
 * connected to the old database (a psql session; Synapse is stopped) is ended and waited for; the old
 * database is renamed to `keepAs`, or dropped without it.
 */
export async function swapInRestored(dbConn: Connection, o: { database: string; exists: boolean; keepAs?: string }): Promise<void> {
  const restoring = restoringName(o.database)
  await psqlRows(dbConn, restoring, AFTER_RESTORE_SQL)
  const old = sqlIdent(o.database)
  await psqlRows(
    dbConn,
    'postgres',
    [
      `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ${sqlLiteral(o.database)} AND pid <> pg_backend_pid();`,
      `DO $$ BEGIN FOR i IN 1..50 LOOP EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = ${sqlLiteral(o.database)}); PERFORM pg_sleep(0.1); END LOOP; END $$;`,
      o.exists ? (o.keepAs ? `ALTER DATABASE ${old} RENAME TO ${sqlIdent(o.keepAs)};` : `DROP DATABASE ${old};`) : '',
      `ALTER DATABASE ${sqlIdent(restoring)} RENAME TO ${old};`,
    ].join('\n'),
  )
}
