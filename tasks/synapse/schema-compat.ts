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
  /** Names in the background_updates table: the updates still to run (a row goes when its update completes). */
  backgroundUpdates?: string[]
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
    return {
      ok: false,
      reason: `the database's schema_compat_version is ${db.compatVersion}, newer than Synapse ${code.version} understands (its SCHEMA_VERSION is ${code.schemaVersion})`,
    }
  }
  return {
    ok: true,
    reason: `schema_compat_version ${db.compatVersion ?? 'unset'} <= SCHEMA_VERSION ${code.schemaVersion} of Synapse ${code.version}`,
  }
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
    ? {
        ok: true,
        reason: `after ${next.version} starts, schema_compat_version is ${compat} <= ${previous.schemaVersion} (SCHEMA_VERSION of ${previous.version}): ${previous.version} can still run`,
      }
    : {
        ok: false,
        reason: `after ${next.version} starts, schema_compat_version is ${compat} > ${previous.schemaVersion} (SCHEMA_VERSION of ${previous.version}): going back needs the backup`,
      }
}

/**
 * Going back to older code, as Synapse's code decides it (docs/upgrade.md "Rolling back to older
 * versions"; synapse/storage/background_updates.py). The schema rule above is not enough: newer delta
 * files schedule background updates (rows in background_updates), and the older updater takes the
 * rows in `ORDER BY ordering, update_name` and looks each name up in the handlers its code registered:
 * an unknown name raises KeyError in do_next_background_update, and after 5 back-to-back failures
 * run_background_updates raises "5 back-to-back background update failures; aborting." From then on
 * no background update runs, on every start. So the older code may run against the database only
 * while the compat version allows it AND every pending update is one it registers.
 */
export interface RollbackInput {
  /** The code to go back to. */
  to: CodeSchema
  /** Update names the older code registers (register_background_* in its synapse/storage). */
  knownUpdates: string[]
  /** The database now. */
  now: DatabaseSchema
  /** The database when the pre-upgrade dump was taken (recorded at the switch), if known. */
  before?: DatabaseSchema
  /** The dump taken just before the upgrade, if one was. */
  dump?: string
  /** The newer code answered /health since the switch (it may have taken writes): a restore loses them. */
  served: boolean
  /** The operator accepts restoring the dump (provision rollback --restore-dump). */
  consent: boolean
  /** When the newer code took over (the dump is from just before): the start of the window of writes a restore loses. */
  since?: string
}

export type RollbackDecision =
  | { action: 'switch'; reason: string }
  | { action: 'restore'; dump: string; reason: string; lost: string }
  | { action: 'refuse'; reason: string }

/** What of the database the older code cannot handle (empty: it can run as it is). */
export function unhandledByOlder(input: Pick<RollbackInput, 'to' | 'knownUpdates' | 'now' | 'before'>): {
  compat?: string
  updates: string[]
  newDeltas: string[]
} {
  const { to, now, before } = input
  // Rows that were pending before the upgrade ran under the older code already: known by evidence too.
  const known = new Set([...input.knownUpdates, ...(before?.backgroundUpdates ?? [])])
  const updates = (now.backgroundUpdates ?? []).filter((u) => !known.has(u)).sort()
  const olderDeltas = new Set(to.deltas)
  const newDeltas = now.appliedDeltas.filter((d) => !olderDeltas.has(d) && !(before?.appliedDeltas ?? []).includes(d)).sort()
  const compat = canRun(now, to)
  return { ...(compat.ok ? {} : { compat: compat.reason }), updates, newDeltas }
}

export function decideRollback(input: RollbackInput): RollbackDecision {
  const { to, dump } = input
  const u = unhandledByOlder(input)
  const deltas = u.newDeltas.length
    ? `; deltas applied since the upgrade that ${to.version} does not have: ${u.newDeltas.join(', ')} (Synapse keeps such changes readable for older code while schema_compat_version allows it)`
    : ''
  if (!u.compat && !u.updates.length)
    return {
      action: 'switch',
      reason: `${canRun(input.now, to).reason}; every pending background update is one ${to.version} registers${deltas}`,
    }
  const problems = [
    ...(u.compat ? [u.compat] : []),
    ...(u.updates.length
      ? [
          `background updates ${to.version} does not know are scheduled (${u.updates.join(', ')}): its updater would fail on them 5 times and abort, and run no background update again`,
        ]
      : []),
  ].join('; ')
  if (!dump)
    return {
      action: 'refuse',
      reason: `${problems}; no dump was taken before the upgrade: roll forward (fix or pin a newer version) instead`,
    }
  const lost = input.served
    ? `every write since ${input.since ?? 'the upgrade'} (the newer code served since then)`
    : 'nothing: the newer code never answered /health'
  if (!input.served || input.consent)
    return { action: 'restore', dump, lost, reason: `${problems}; restore ${dump} (taken just before the upgrade) first` }
  return {
    action: 'refuse',
    reason: `${problems}. ${dump} holds the database from just before the upgrade; restoring it loses ${lost}. Roll forward (fix or pin a newer version), or accept the loss with provision rollback --restore-dump`,
  }
}
