import { describe, expect, it } from 'vitest'
import { migrationSteps, renderSteps } from '../../src/commands/mas-migrate/procedure.js'
import { syn2masCommand, syn2masOutcome, unsupportedAuth } from '../../tasks/mas/syn2mas.js'
import { lockoutVerdict } from '../../tasks/synapse/mas-lockout.js'

describe('syn2mas', () => {
  it('gets every file Synapse reads and MAS config, for each step', () => {
    expect(syn2masCommand('check').text).toMatch(
      /--synapse-config \/etc\/matrix-synapse\/homeserver\.yaml; for f in \/etc\/matrix-synapse\/conf\.d\/\*\.yaml.*syn2mas check --config \/etc\/matrix-authentication-service\/config\.yaml "\$@"$/,
    )
    expect(syn2masCommand('dry-run').text).toContain('syn2mas migrate --dry-run --config')
    expect(syn2masCommand('migrate').text).toMatch(/syn2mas migrate --config/)
    expect(syn2masCommand('check').text).toContain('RUST_BACKTRACE=0')
  })

  it('reads its exit codes: 0 and 11 go (warnings shown), 10 refuses with its bullets, anything else failed', () => {
    const warned = syn2masOutcome(
      11,
      '===== Warnings =====\n• Synapse config has registration enabled. This must be disabled after migration before bringing Synapse back online.\n',
    )
    expect(warned).toEqual({ verdict: 'go', errors: [], warnings: [expect.stringMatching(/^Synapse config has registration enabled/)] })
    const refused = syn2masOutcome(
      10,
      '===== Errors =====\n• Guest support is enabled in the Synapse configuration.\n===== Warnings =====\n• something else\n',
    )
    expect(refused).toMatchObject({
      verdict: 'refused',
      errors: ['Guest support is enabled in the Synapse configuration.'],
      warnings: ['something else'],
    })
    const failed = syn2masOutcome(
      1,
      'Error: The MAS database is not empty: rows found in at least `users`. Please drop and recreate the database, then try again.\n',
    )
    expect(failed.verdict).toBe('failed')
    expect(failed.errors[0]).toMatch(/MAS database is not empty/)
    expect(syn2masOutcome(0, 'Check completed successfully with no errors or warnings.').verdict).toBe('go')
  })

  it('refuses what MAS cannot take over and syn2mas does not refuse: password providers, authenticating modules, SQLite', () => {
    const problems = unsupportedAuth([
      { path: 'homeserver.yaml', text: 'server_name: a.test\ndatabase:\n  name: sqlite3\n' },
      { path: 'conf.d/50-ldap.yaml', text: 'password_providers:\n  - module: ldap_auth_provider.LdapAuthProvider\n' },
      {
        path: 'conf.d/51-mods.yaml',
        text: 'modules:\n  - module: synapse_rest_auth.RestAuthProvider\n  - module: my_spam_checker.Checker\n',
      },
      { path: 'conf.d/60-mas.yaml', text: 'matrix_authentication_service:\n  enabled: false\n' },
    ])
    expect(problems).toHaveLength(3)
    expect(problems.join('\n')).toMatch(/sqlite3/)
    expect(problems.join('\n')).toMatch(/password_providers \(ldap_auth_provider\.LdapAuthProvider\)/)
    expect(problems.join('\n')).toMatch(/module synapse_rest_auth\.RestAuthProvider authenticates/)
    expect(problems.join('\n')).not.toMatch(/spam/)
  })

  it('lets MAS be turned on once the users are in its database', () => {
    const migrated = lockoutVerdict('migrated')
    expect(migrated.ok).toBe(true)
    expect(migrated.detail).toMatch(/mas-migrate/)
    expect(lockoutVerdict('3').detail).toMatch(/provision mas-migrate/)
  })
})

describe('the procedure of mas-migrate', () => {
  it('names every step in order, the one-way one, and how each is undone', () => {
    const steps = migrationSteps({ host: 'hs', to: 'backups', serverName: 'a.test', issuer: 'https://auth.a.test/' })
    expect(steps.map((s) => s.id)).toEqual(['preflight', 'backup', 'install', 'check', 'dry-run', 'stop', 'migrate', 'switch'])
    expect(steps.filter((s) => s.oneWay).map((s) => s.id)).toEqual(['switch'])
    const text = renderSteps(steps)
    expect(text).toMatch(/8\. \[one-way\] provision apply/)
    expect(text).toMatch(/undo: ONE-WAY.*restoring the backup/)
    expect(text.indexOf('backup of hs')).toBeLessThan(text.indexOf('syn2mas check'))
  })
})
