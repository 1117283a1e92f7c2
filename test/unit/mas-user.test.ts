import { spawnSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { renderMasConfig } from '../../tasks/mas/templates.js'
import { masUserCommand } from '../../tasks/mas/users.js'
import { matrixSettings } from './fixtures/matrix-settings.js'

describe('a MAS user made through the admin API', () => {
  const vars = matrixSettings({ mas: { enabled: true } })
  it('is valid sh, takes the password from stdin and the client secret from its file (neither on a command line)', () => {
    const text = masUserCommand(vars, 'boss', true).text
    expect(spawnSync('sh', ['-n'], { input: text }).status).toBe(0)
    expect(text).toContain('--data-binary @- ')
    expect(text).toContain('"$(cat /etc/matrix-authentication-service/admin-client-secret)"')
    expect(text).toContain('-K "$t/auth"')
    expect(text).toContain('http://127.0.0.1:8081/api/admin/v1/users/by-username/boss')
    expect(text).toMatch(/set-admin; echo admin$/)
    expect(masUserCommand(vars, 'boss', false).text).not.toContain('set-admin')
  })
  it('refuses a name that is not a Matrix localpart', () => {
    expect(() => masUserCommand(vars, "x'; rm -rf /", false)).toThrow(/not a MAS username/)
    expect(() => masUserCommand(vars, 'Boss', false)).toThrow(/not a MAS username/)
  })
})

describe("MAS's admin API for provision mas-user", () => {
  it('is served on the loopback internal listener only, to one static client whose secret is a file', () => {
    const c = parse(
      renderMasConfig(matrixSettings({ mas: { enabled: true } }), { databaseHost: '127.0.0.1', databasePassword: 'pw' }).content,
    ) as {
      http: { listeners: { name: string; resources: { name: string }[]; binds: { host: string }[] }[] }
      clients: { client_id: string; client_auth_method: string; client_secret_file: string }[]
      policy: { data: { admin_clients: string[] } }
    }
    const serving = c.http.listeners.filter((l) => l.resources.some((r) => r.name === 'adminapi'))
    expect(serving.map((l) => [l.name, l.binds])).toEqual([['internal', [{ host: '127.0.0.1', port: 8081 }]]])
    expect(c.clients).toEqual([
      {
        client_id: '01JPR0V1S10N0000000000ADM1',
        client_auth_method: 'client_secret_basic',
        client_secret_file: '/etc/matrix-authentication-service/admin-client-secret',
      },
    ])
    expect(c.policy.data.admin_clients).toEqual(['01JPR0V1S10N0000000000ADM1'])
  })
})
