import { sqlIdent, sqlLiteral } from '../../../src/resources/postgres.js'
import type { Connection } from '../../../src/ssh/connection.js'
import { sh } from '../../../src/core/shell.js'
import { AFTER_RESTORE_SQL, databaseRestoreCommand } from '../../../src/synapse/backup/database-dump.js'

/**
 * The pre-upgrade dump into a new database, swapped in by renames while Synapse is stopped (as
 * provision restore does it); the database the newer code wrote is kept under another name.
 */
export async function restoreDump(conn: Connection, spec: { database: string; databaseOwner: string }, dump: string): Promise<string> {
  const restoring = `${spec.database}_restoring`
  const kept = `${spec.database}_rolled_back_${new Date().toISOString().replace(/\D/g, '').slice(0, 14)}`
  const psql = async (db: string, sql: string) =>
    await conn.run(sh`cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d ${db} -f -`, { stdin: sql, what: `psql on ${db}` })
  await psql(
    'postgres',
    `DROP DATABASE IF EXISTS ${sqlIdent(restoring)};\nCREATE DATABASE ${sqlIdent(restoring)} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0 OWNER ${sqlIdent(spec.databaseOwner)};`,
  )
  await conn.run(sh`${databaseRestoreCommand(restoring, spec.databaseOwner)} < ${dump}`, { timeoutMs: 3_600_000 })
  await psql(restoring, AFTER_RESTORE_SQL)
  await psql(
    'postgres',
    [
      `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = ${sqlLiteral(spec.database)} AND pid <> pg_backend_pid();`,
      `DO $$ BEGIN FOR i IN 1..50 LOOP EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = ${sqlLiteral(spec.database)}); PERFORM pg_sleep(0.1); END LOOP; END $$;`,
      `ALTER DATABASE ${sqlIdent(spec.database)} RENAME TO ${sqlIdent(kept)};`,
      `ALTER DATABASE ${sqlIdent(restoring)} RENAME TO ${sqlIdent(spec.database)};`,
    ].join('\n'),
  )
  return `${spec.database} restored from ${dump}; the database the newer code wrote is kept as ${kept}`
}
