/**
 * The procedure of `provision mas-migrate` as data: what --dry-run prints and the real run follows, step
 * by step, each saying whether it can be undone (MAS docs "Migrating an existing homeserver"; research-24 §7).
 */
export interface MigrationStep {
  id: 'preflight' | 'backup' | 'install' | 'check' | 'dry-run' | 'stop' | 'migrate' | 'switch'
  what: string
  /** How it is undone, or why it cannot be. */
  undo: string
  oneWay: boolean
}

export function migrationSteps(o: { host: string; to: string; serverName: string; issuer: string }): MigrationStep[] {
  return [
    {
      id: 'preflight',
      what: `read ${o.host}: Synapse not on MAS yet; no password providers (LDAP and the like), authenticating modules or SQLite; no workers on other hosts`,
      undo: 'read-only',
      oneWay: false,
    },
    {
      id: 'backup',
      what: `provision backup of ${o.host} into ${o.to} (database, media, signing key, secrets, config)`,
      undo: 'read-only on the server',
      oneWay: false,
    },
    {
      id: 'install',
      what: `install MAS beside Synapse (tasks postgres and mas: its database and role, the verified release, config, keys, unit); Synapse keeps serving logins`,
      undo: 'remove the mas role; Synapse was not touched',
      oneWay: false,
    },
    {
      id: 'check',
      what: 'mas-cli syn2mas check: refuse on its errors (exit 10), show its warnings',
      undo: 'read-only',
      oneWay: false,
    },
    {
      id: 'dry-run',
      what: "mas-cli syn2mas migrate --dry-run: the whole move into MAS's database, then emptied again",
      undo: "MAS's database is left empty",
      oneWay: false,
    },
    {
      id: 'stop',
      what: `stop every Synapse process (main and workers) and MAS: ${o.serverName} is down from here until the switch`,
      undo: 'started again with the old config if the move fails',
      oneWay: false,
    },
    {
      id: 'migrate',
      what: "mas-cli syn2mas migrate: users, password hashes, devices and access tokens into MAS's database (Synapse's database is only read)",
      undo: "empty MAS's database (dropdb mas; the next run recreates it); Synapse's data is unchanged",
      oneWay: false,
    },
    {
      id: 'switch',
      what: `provision apply: Synapse hands logins, registration and tokens to MAS (${o.issuer}); Apache sends /login, /logout and /refresh to MAS; Synapse, its workers and MAS started`,
      undo: 'ONE-WAY: from now on new logins, devices, tokens and password changes live in MAS only; going back means restoring the backup (losing what happened since)',
      oneWay: true,
    },
  ]
}

export function renderSteps(steps: MigrationStep[]): string {
  return steps.map((s, i) => `  ${i + 1}. ${s.oneWay ? '[one-way] ' : ''}${s.what}\n       undo: ${s.undo}`).join('\n')
}
