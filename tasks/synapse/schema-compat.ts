/**
 * Synapse's own rules for which code may run against which database schema
 * (synapse/storage/prepare_database.py, `_upgrade_existing_database`; docs/upgrade.md "Rolling back"):
 *
 * - Main applies every delta file of versions [current (+1 if not `upgraded`) .. SCHEMA_VERSION] that is
 *   not in `applied_schema_deltas`, even without a version bump (1.158.0 and 1.163.2 are both
 *   SCHEMA_VERSION 94; 1.163.2 adds 94/07..94/11). So "will the schema change" compares delta files,
 *   not only the version number.
 * - Code refuses a database whose `schema_compat_version` is greater than its SCHEMA_VERSION
 *   ("too new for the server to understand").
 * - Starting code raises `schema_compat_version` to its SCHEMA_COMPAT_VERSION (never lowers it).
 * - Workers refuse a database older than their SCHEMA_VERSION (only main migrates).
 */

/** What a Synapse release's code says about the schema (from its synapse/storage/schema/). */
export interface CodeSchema {
  version: string
  schemaVersion: number
  compatVersion: number
  /** Delta files as prepare_database names them: "<version>/<file name>", every engine. */
  deltas: string[]
}

/** The database's schema state (tables schema_version, schema_compat_version, applied_schema_deltas). */
export interface DatabaseSchema {
  version: number
  upgraded: boolean
  compatVersion: number | null
  /** applied_schema_deltas rows with version >= the current version, as "<version>/<file>". */
  appliedDeltas: string[]
  /** pg_database_size, for the free-space check before a dump. */
  sizeBytes: number
}

/** Would this delta file run on Postgres? (.py, .sql, and .sql.postgres; .sqlite and other entries are skipped.) */
export function appliesOnPostgres(file: string): boolean {
  return /\.py$|\.sql$|\.sql\.postgres$/.test(file)
}

/** The delta files the new code will apply to this database when main starts. */
export function pendingDeltas(db: DatabaseSchema, code: CodeSchema): string[] {
  const start = db.upgraded ? db.version : db.version + 1
  const applied = new Set(db.appliedDeltas)
  return code.deltas
    .filter((d) => {
      const v = Number(d.split('/')[0])
      return v >= start && v <= code.schemaVersion && appliesOnPostgres(d) && !applied.has(d)
    })
    .sort()
}

export interface SchemaChange {
  /** The schema changes when main starts on this code: a backup comes first. */
  changes: boolean
  pending: string[]
  /** The version row moves (e.g. 93 -> 94). */
  versionBump: boolean
}

export function schemaChange(db: DatabaseSchema | null, code: CodeSchema): SchemaChange {
  if (!db) return { changes: false, pending: [], versionBump: false }
  const pending = pendingDeltas(db, code)
  const versionBump = db.version < code.schemaVersion
  return { changes: pending.length > 0 || versionBump, pending, versionBump }
}

export interface Compatibility {
  ok: boolean
  reason: string
}

/** May this code start against the database as it is? */
export function canRun(db: DatabaseSchema | null, code: CodeSchema): Compatibility {
  if (!db) return { ok: true, reason: 'the database has no Synapse schema yet' }
  if (db.compatVersion !== null && db.compatVersion > code.schemaVersion) {
    return { ok: false, reason: `the database's schema_compat_version is ${db.compatVersion}, newer than Synapse ${code.version} understands (its SCHEMA_VERSION is ${code.schemaVersion})` }
  }
  return { ok: true, reason: `schema_compat_version ${db.compatVersion ?? 'unset'} <= SCHEMA_VERSION ${code.schemaVersion} of Synapse ${code.version}` }
}

/** The compat version the database records once `code` has started on it. */
export function compatAfter(db: DatabaseSchema | null, code: CodeSchema): number {
  return Math.max(db?.compatVersion ?? 0, code.compatVersion)
}

/**
 * After upgrading from `previous` to `next`, can `previous` still run (the rollback window)?
 * Decided before the upgrade, from what `next` will record; after it, canRun on the live database says the same.
 */
export function rollbackWindow(db: DatabaseSchema | null, previous: CodeSchema, next: CodeSchema): Compatibility {
  const compat = compatAfter(db, next)
  return compat <= previous.schemaVersion
    ? { ok: true, reason: `after ${next.version} starts, schema_compat_version is ${compat} <= ${previous.schemaVersion} (SCHEMA_VERSION of ${previous.version}): ${previous.version} can still run` }
    : { ok: false, reason: `after ${next.version} starts, schema_compat_version is ${compat} > ${previous.schemaVersion} (SCHEMA_VERSION of ${previous.version}): going back needs the backup` }
}

/** Compare dotted versions numerically (1.9.0 < 1.10.0); rcN sorts before the release. */
export function compareVersions(a: string, b: string): number {
  const parse = (v: string) => {
    const m = /^(\d+)\.(\d+)\.(\d+)(?:rc(\d+))?/.exec(v)
    return m ? [Number(m[1]), Number(m[2]), Number(m[3]), m[4] === undefined ? Infinity : Number(m[4])] : [0, 0, 0, 0]
  }
  const [x, y] = [parse(a), parse(b)]
  for (let i = 0; i < 4; i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1
  return 0
}
