/**
 * The accidental-takeover guard: a plain run on a host that already runs a Synapse the tool neither
 * set up nor adopted would replace its secrets, signing key and media path. Before anything changes
 * (in the dry run too), the run stops and points to `provision adopt`.
 */
import { defineFact } from '../facts/fact.js'
import { raw } from '../core/shell.js'
import type { BeforeCheck } from './task.js'
import type { HostOwnership } from './host-state.js'

/**
 * Signs of a Synapse: its configuration, a signing key, an SQLite database, or a Postgres database
 * holding Synapse's schema_version table. One line per finding: `<kind>\t<what>`.
 */
export const synapseFootprint = defineFact(
  'synapse-footprint',
  // One line: the probe frames each fact as one line of its script (a backslash at a line's end joins the next). A fixed
  // script: no value goes in. The databases are read only where a local Postgres answers (peer authentication as postgres).
  raw`for f in /etc/matrix-synapse/homeserver.yaml /etc/synapse/homeserver.yaml; do [ -f "$f" ] && printf "config\\t%s\\n" "$f"; done; \
for f in /etc/matrix-synapse/*.signing.key /var/lib/matrix-synapse/*.signing.key; do [ -f "$f" ] && printf "signing key\\t%s\\n" "$f"; done; \
for f in /var/lib/matrix-synapse/*.db; do [ -f "$f" ] && printf "SQLite database\\t%s\\n" "$f"; done; \
if command -v psql >/dev/null 2>&1 && id -u postgres >/dev/null 2>&1; then \
for db in $(runuser -u postgres -- psql -XAtc "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate" 2>/dev/null); do \
[ "$(runuser -u postgres -- psql -XAt -d "$db" -c "SELECT 1 FROM pg_class WHERE relname = 'schema_version' AND relkind = 'r'" 2>/dev/null)" = 1 ] && printf "database with Synapse data\\t%s\\n" "$db"; \
done; \
fi; true`,
  (out) =>
    out
      .split('\n')
      .filter((l) => l.includes('\t'))
      .map((l) => {
        const [kind, what] = l.split('\t')
        return `${kind} ${what}`
      }),
)

/** True when the tool set this host up, adopted it, or provisioned it before the host record existed. */
export const isOurs = (o: HostOwnership) => o.record !== undefined || o.secretStore

/**
 * The before-check of a plain run on a host that is not ours. Its fact is gathered only then, so
 * hosts the tool manages pay nothing for it.
 */
export function notBuiltByHand(ownership: HostOwnership, where: { inventory: string; host: string }): BeforeCheck[] {
  if (isOurs(ownership)) return []
  return [
    {
      name: 'no Synapse set up by hand on this host',
      facts: [synapseFootprint],
      evaluate(facts) {
        const found = facts.get(synapseFootprint)
        if (found.length === 0) return { ok: true, detail: 'no Synapse here yet' }
        return {
          ok: false,
          detail:
            `this host already runs a Synapse that matrix-provision did not set up (found: ${found.join(', ')}). ` +
            `A plain run would replace its secrets, signing key and media path. Take it over with ` +
            `\`provision adopt --inventory ${where.inventory} --limit ${where.host} --dry-run\`, read the plan, then run it without --dry-run.`,
        }
      },
    },
  ]
}
