/** What `provision adopt` reads on a server built by hand: its configuration files, in one probe. */
import { defineFact } from '../../facts/fact.js'
import { sh } from '../../core/shell.js'
import { HOMESERVER_YAML, SYNAPSE_CONF_D, SYNAPSE_UNIT_PATH, SYNAPSE_WORKERS_DIR, WORKER_UNIT_PATH } from '../../synapse/paths.js'

export interface HandBuiltFiles {
  /** Path -> content of every file read (configuration, worker files, enabled vhosts, unit drop-ins). */
  files: Map<string, string>
  /** Enabled Apache sites: the link in sites-enabled -> the file it points to. */
  enabledSites: Map<string, string>
  /** Signing keys found (paths only: their content is never read by the controller). */
  signingKeys: string[]
  /** Unit drop-ins of matrix-synapse.service (paths). */
  unitDropIns: string[]
  /** SQLite files in Synapse's data directory, with their sizes (the package's first start leaves one). */
  sqliteFiles: { path: string; bytes: number }[]
}

export const handBuiltFiles = defineFact(
  'hand-built-files',
  // One line (the probe frames each fact as a line; a backslash at a line's end joins the next). The paths are quoted
  // words, the globs after them are not.
  sh`for f in ${HOMESERVER_YAML} ${SYNAPSE_CONF_D}/*.yaml ${SYNAPSE_WORKERS_DIR}/*.yaml ${SYNAPSE_UNIT_PATH}.d/*.conf ${WORKER_UNIT_PATH} /etc/redis/redis.conf; \
do [ -f "$f" ] || continue; printf 'file\\t%s\\t' "$f"; base64 -w0 < "$f"; echo; done; \
for l in /etc/apache2/sites-enabled/*; do [ -e "$l" ] || continue; t=$(readlink -f "$l"); printf 'site\\t%s\\t%s\\t' "$l" "$t"; base64 -w0 < "$t"; echo; done; \
for f in /etc/matrix-synapse/*.signing.key /var/lib/matrix-synapse/*.signing.key; do [ -f "$f" ] && printf 'key\\t%s\\n' "$f"; done; \
for f in /var/lib/matrix-synapse/*.db; do [ -f "$f" ] && printf 'sqlite\\t%s\\t%s\\n' "$f" "$(stat -c %s "$f")"; done; \
true`,
  (out): HandBuiltFiles => {
    const result: HandBuiltFiles = { files: new Map(), enabledSites: new Map(), signingKeys: [], unitDropIns: [], sqliteFiles: [] }
    for (const line of out.split('\n')) {
      const parts = line.split('\t')
      if (parts[0] === 'file' && parts.length === 3) {
        result.files.set(parts[1]!, Buffer.from(parts[2]!, 'base64').toString('utf8'))
        if (parts[1]!.startsWith(`${SYNAPSE_UNIT_PATH}.d/`)) result.unitDropIns.push(parts[1]!)
      } else if (parts[0] === 'site' && parts.length === 4) {
        result.enabledSites.set(parts[1]!, parts[2]!)
        result.files.set(parts[2]!, Buffer.from(parts[3]!, 'base64').toString('utf8'))
      } else if (parts[0] === 'key' && parts.length === 2) result.signingKeys.push(parts[1]!)
      else if (parts[0] === 'sqlite' && parts.length === 3) result.sqliteFiles.push({ path: parts[1]!, bytes: Number(parts[2]) })
    }
    return result
  },
  { sensitive: true },
)
