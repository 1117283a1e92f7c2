import { raw, sh, type ShellCommand } from '../../core/shell.js'
import { databaseDumpCommand } from './database-dump.js'
import { SECRETS_DIR, STATE_DIR, MEDIA_STORE_PATH, SIGNING_KEY_PATH, SYNAPSE_CONFIG_DIR } from '../paths.js'

/** What a backup holds, one file each (plus `.age` when encrypted). */
export const BACKUP_PARTS = {
  database: { file: 'database.dump', what: 'Synapse database (pg_dump custom format, without e2e_one_time_keys_json rows)' },
  media: {
    file: 'media.tar',
    what: 'media store: local_content and local_thumbnails (remote caches are left out: they are fetched again)',
  },
  signingKey: { file: 'signing.key', what: "the server's signing key (its federation identity)" },
  secrets: { file: 'secrets.tar', what: `generated secrets (${SECRETS_DIR})` },
  config: {
    file: 'config.tar',
    what: `rendered configuration (${SYNAPSE_CONFIG_DIR}), for reference: restore renders it from the inventory`,
  },
} as const
export type BackupPart = keyof typeof BACKUP_PARTS
export const PART_NAMES = Object.keys(BACKUP_PARTS) as BackupPart[]

export const MANIFEST_FILE = 'manifest.json'
export const MANIFEST_FORMAT = 'matrix-provision-backup/1'

/**
 * The commands that write each part of a backup to stdout, on the host that holds it. `provision
 * backup` streams their output over SSH; the scheduled backup on the host redirects it into files:
 * both take the same parts the same way.
 */
export const MEDIA_PARTS = ['local_content', 'local_thumbnails'] as const

export function partCommand(part: BackupPart, database: string): ShellCommand {
  switch (part) {
    case 'database':
      return databaseDumpCommand(database)
    case 'media':
      // Only the directories that exist (a server without uploads has none); tar names owners, so a
      // restore onto another host maps them to its own matrix-synapse user.
      return sh`cd ${MEDIA_STORE_PATH} && set -- && for d in ${[...MEDIA_PARTS]}; do if [ -d "$d" ]; then set -- "$@" "$d"; fi; done && if [ $# -gt 0 ]; then exec tar --create --file=- -- "$@"; else exec tar --create --file=- --files-from=/dev/null; fi`
    case 'signingKey':
      return sh`cat ${SIGNING_KEY_PATH}`
    case 'secrets':
      // None were generated when the inventory gives every secret (env or file; a spread homeserver must): an empty tar.
      return sh`if [ -d ${SECRETS_DIR} ]; then exec tar --create --file=- -C ${STATE_DIR} ${SECRETS_DIR.slice(STATE_DIR.length + 1)}; else exec tar --create --file=- --files-from=/dev/null; fi`
    case 'config':
      return sh`tar --create --file=- -C ${SYNAPSE_CONFIG_DIR.replace(/\/[^/]+$/, '') || '/'} ${SYNAPSE_CONFIG_DIR.replace(/^.*\//, '')}`
  }
}

/** Bytes the media parts take on the host (for progress and the free-space check). */
export const MEDIA_SIZE_COMMAND = sh`cd ${MEDIA_STORE_PATH} && { du -sb ${[...MEDIA_PARTS]} 2>/dev/null || true; } | ${raw`awk '{s += $1} END {print s + 0}'`}`
