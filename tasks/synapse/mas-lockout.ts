import type { BeforeCheck, CheckOutcome, TaskContext } from '../../src/engine/task.js'
import { defineFact } from '../../src/facts/fact.js'
import { sh } from '../../src/core/shell.js'
import { HOMESERVER_YAML, MAS_DATABASE, SYNAPSE_CONF_D } from '../../src/synapse/paths.js'

/**
 * Where Synapse stands before MAS is turned on: `on` (already handed over), `migrated` (MAS's database
 * holds users: syn2mas moved them, Synapse not switched yet), `fresh` (never configured here), the number
 * of its local users, or `unknown` (its database is not on this host).
 */
export const masSwitchState = (database: string) =>
  defineFact(
    `mas-switch-state:${database}`,
    sh`if grep -qs '^  enabled: true' ${`${SYNAPSE_CONF_D}/60-mas.yaml`}; then echo on; elif [ ! -e ${HOMESERVER_YAML} ]; then echo fresh; else q() { runuser -u postgres -- psql -X -Atq -d "$1" -c "$2" 2>/dev/null; }; if m=$(q ${MAS_DATABASE} 'select count(*) from users') && [ "\${m:-0}" -gt 0 ]; then echo migrated; exit 0; fi; t=$(q ${database} "select count(*) from pg_tables where schemaname = 'public' and tablename = 'users'") || { echo unknown; exit 0; }; if [ "$t" = 0 ]; then echo 0; else q ${database} 'select count(*) from users where appservice_id is null' || echo unknown; fi; fi`,
    (out) => out.trim(),
  )

/** Pure verdict, for the check and its unit test. */
export function lockoutVerdict(state: string): CheckOutcome {
  if (state === 'on') return { ok: true, detail: 'Synapse already hands logins to MAS' }
  if (state === 'migrated') return { ok: true, detail: "Synapse's users are in MAS's database (provision mas-migrate)" }
  if (state === 'fresh' || state === '0') return { ok: true, detail: state === 'fresh' ? 'a new homeserver' : 'Synapse has no users yet' }
  const users = /^\d+$/.test(state) ? `${state} users` : 'users it could not count (its database is not on this host)'
  return {
    ok: false,
    detail: `Synapse has ${users} and MAS would start with none of them: everyone would be locked out. Move them first with provision mas-migrate --inventory FILE (MAS's syn2mas; README "Moving an existing server onto MAS"), or remove the mas role`,
  }
}

/** Turning MAS on for a homeserver that has users, without migrating them, would lock everyone out. */
export function masLockoutCheck(ctx: TaskContext): BeforeCheck[] {
  if (!ctx.host.vars.mas.enabled) return []
  const fact = masSwitchState(ctx.host.vars.postgres.database)
  return [{ name: 'MAS is not turned on over existing users', facts: [fact], evaluate: (facts) => lockoutVerdict(facts.get(fact)) }]
}
