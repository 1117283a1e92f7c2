/**
 * Scheduled backups on the host: a oneshot service run by a timer, taking the same parts as
 * `provision backup` (the commands of src/synapse/backup/parts.ts) into <directory>/<host>-<UTC time>/,
 * with the same manifest, so `provision restore --from` takes a copy of one as it is.
 */
import { pgDumpArgs } from '../../src/synapse/backup/database-dump.js'
import {
  BACKUP_PARTS,
  MANIFEST_FILE,
  MANIFEST_FORMAT,
  MEDIA_SIZE_COMMAND,
  PART_NAMES,
  partCommand,
} from '../../src/synapse/backup/parts.js'
import type { MatrixSettings } from '../../src/inventory/types.js'
import { sh } from '../../src/core/shell.js'
import { SIGNING_KEY_PATH, STATE_DIR, SYNAPSE_PYTHON, SYNAPSE_UNIT } from '../../src/synapse/paths.js'

export const BACKUP_UNIT = 'matrix-provision-backup.service'
export const BACKUP_TIMER = 'matrix-provision-backup.timer'
export const BACKUP_SCRIPT_PATH = '/usr/local/lib/matrix-provision/scheduled-backup'
export const BACKUP_CONF_PATH = '/etc/matrix-provision/scheduled-backup.conf'
/** Password of the Synapse database role, for a dump over TCP when Postgres runs on another host. */
export const BACKUP_PGPASS_PATH = `${STATE_DIR}/backup.pgpass`

export interface ScheduledBackupSpec {
  hostName: string
  vars: MatrixSettings
  /** Where Postgres is, seen from this host; undefined: here (dump as the postgres superuser). */
  remoteDatabase?: { address: string }
}

/** The settings an operator may read on the host (and a test may change for one run). */
export function renderBackupConf(vars: MatrixSettings): string {
  const b = vars.backup
  return [
    "# Written by matrix-provision (backup role): the inventory's vars.backup.",
    sh`BACKUP_DIR=${b.directory}`.text,
    `BACKUP_KEEP=${b.keep}`,
    `BACKUP_MIN_FREE_MIB=${b.minFreeMiB}`,
    '',
  ].join('\n')
}

/** The manifest, written by Synapse's own Python (its version, and the signing key's public half through signedjson). */
const MANIFEST_PY = `
import hashlib, json, os, sys, time
import synapse
from signedjson.key import read_signing_keys, get_verify_key, encode_verify_key_base64
work, host, server_name, db_host, db_name, pg_version, schema, compat, started = sys.argv[1:10]
parts = json.loads(os.environ["MP_PARTS"])
def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
with open(os.environ["MP_SIGNING_KEY"]) as f:
    key = read_signing_keys(f)[0]
files = [{"part": p["part"], "name": p["file"], "what": p["what"], "bytes": os.path.getsize(os.path.join(work, p["file"])), "sha256": sha256(os.path.join(work, p["file"]))} for p in parts]
manifest = {
    "format": os.environ["MP_FORMAT"], "host": host, "serverName": server_name,
    "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(int(started))),
    "synapse": {"version": synapse.__version__, "schemaVersion": int(schema), "schemaCompatVersion": int(compat) if compat else None},
    "database": {"host": db_host, "name": db_name, "postgresVersion": pg_version},
    "signingKey": {"id": key.alg + ":" + key.version, "publicKey": encode_verify_key_base64(get_verify_key(key))},
    "encryption": None, "files": files, "durationMs": int((time.time() - int(started)) * 1000),
}
fd = os.open(os.path.join(work, os.environ["MP_MANIFEST"]), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\\n")
`

export function renderBackupScript(spec: ScheduledBackupSpec): string {
  const pg = spec.vars.postgres
  const db = pg.database
  const remote = spec.remoteDatabase
  // Local Postgres: as its superuser over the socket. Remote: as the Synapse role over TCP, password from a 0600 file.
  const pgEnv = remote
    ? [sh`export PGHOST=${remote.address} PGPORT=${pg.port} PGUSER=${pg.user} PGPASSFILE=${BACKUP_PGPASS_PATH}`.text, 'as_pg() { "$@"; }']
    : ['as_pg() { (cd / && runuser -u postgres -- "$@"); }']
  const sql = (query: string) => sh`as_pg psql -X -A -t -q -d ${db} -c ${query}`.text
  const parts = PART_NAMES.map((part) => ({ part, file: BACKUP_PARTS[part].file, what: BACKUP_PARTS[part].what }))
  const commands = PART_NAMES.map((part) => {
    const command = part === 'database' ? sh`as_pg ${pgDumpArgs(db)}`.text : `(${partCommand(part, db).text})`
    return `${command} > "$work/${BACKUP_PARTS[part].file}"`
  })
  return [
    '#!/bin/sh',
    '# matrix-provision scheduled backup (backup role): the parts `provision backup` takes, with the same manifest.',
    '# Settings: ' + BACKUP_CONF_PATH,
    'set -eu',
    'umask 077',
    `. ${BACKUP_CONF_PATH}`,
    ...pgEnv,
    'started=$(date +%s)',
    'mkdir -p -m 0700 "$BACKUP_DIR"',
    // Free space: the database's size and the media's, plus the margin, must fit before anything is written.
    `db_bytes=$(${sql(`SELECT pg_database_size(current_database())`)})`,
    `media_bytes=$(${MEDIA_SIZE_COMMAND.text})`,
    'need_mib=$(( (db_bytes + media_bytes) / 1048576 + 1 ))',
    `free_mib=$(df -Pm "$BACKUP_DIR" | awk 'NR == 2 {print $4}')`,
    'if [ "$free_mib" -lt $((need_mib + BACKUP_MIN_FREE_MIB)) ]; then',
    '  echo "matrix-provision-backup: only ${free_mib} MiB free in $BACKUP_DIR; a backup needs about ${need_mib} MiB and ${BACKUP_MIN_FREE_MIB} MiB must stay free (backup.minFreeMiB): free space, lower backup.keep or move backup.directory" >&2',
    '  exit 1',
    'fi',
    sh`name=${spec.hostName}-$(date -u +%Y%m%dT%H%M%SZ)`.text,
    'work="$BACKUP_DIR/.$name.partial"',
    `trap 'rm -rf "$work"' EXIT`,
    'mkdir -m 0700 "$work"',
    ...commands,
    `schema=$(${sql('SELECT version FROM schema_version')})`,
    `compat=$(${sql('SELECT max(compat_version) FROM schema_compat_version')})`,
    `pg_version=$(${sql("SELECT current_setting('server_version')")})`,
    sh`MP_PARTS=${JSON.stringify(parts)} MP_FORMAT=${MANIFEST_FORMAT} MP_MANIFEST=${MANIFEST_FILE} MP_SIGNING_KEY=${SIGNING_KEY_PATH} \\`
      .text,
    sh`  ${SYNAPSE_PYTHON} -c ${MANIFEST_PY} "$work" ${spec.hostName} ${spec.vars.serverName} ${spec.vars.postgres.host ?? spec.hostName} ${db} "$pg_version" "$schema" "$compat" "$started"`
      .text,
    'mv "$work" "$BACKUP_DIR/$name"',
    'trap - EXIT',
    // Retention: only complete backups of this host count; the newest BACKUP_KEEP stay.
    sh`ls -1d "$BACKUP_DIR"/${spec.hostName}-*/ 2>/dev/null | sort | head -n -"$BACKUP_KEEP" | while read -r old; do rm -rf -- "$old"; done`
      .text,
    'echo "matrix-provision-backup: $BACKUP_DIR/$name complete"',
    '',
  ].join('\n')
}

export function renderBackupService(): string {
  return [
    '[Unit]',
    'Description=matrix-provision scheduled backup of Synapse (database, media, signing key, secrets, config)',
    `After=postgresql.service ${SYNAPSE_UNIT}`,
    '',
    '[Service]',
    'Type=oneshot',
    `ExecStart=${BACKUP_SCRIPT_PATH}`,
    'Nice=10',
    'IOSchedulingClass=idle',
    '',
  ].join('\n')
}

export function renderBackupTimer(onCalendar: string): string {
  return [
    '[Unit]',
    'Description=matrix-provision scheduled backup',
    '',
    '[Timer]',
    `OnCalendar=${onCalendar}`,
    'Persistent=true',
    'RandomizedDelaySec=15min',
    '',
    '[Install]',
    'WantedBy=timers.target',
    '',
  ].join('\n')
}
