import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { renderMasVhost, renderMatrixVhost, renderServerNameVhost } from '../../tasks/apache/templates.js'
import { masEncryptionKeyHex, masPublicBase, registrationSettings, renderMasConfig, renderMasUnit } from '../../tasks/mas/templates.js'
import { lockoutVerdict } from '../../tasks/synapse/mas-lockout.js'
import { renderSynapseConfig } from '../../tasks/synapse/templates/homeserver.js'
import { renderSynapseMasConfig } from '../../tasks/synapse/templates/mas.js'
import { matrixSettings, synapseContext } from './fixtures/matrix-settings.js'

const TLS = { certFile: '/etc/ssl/matrix/fullchain.pem', keyFile: '/etc/ssl/matrix/privkey.pem' }
const on = (patch: Parameters<typeof matrixSettings>[0] = {}) => matrixSettings({ ...patch, mas: { enabled: true, ...patch?.mas } })

describe('MAS config.yaml', () => {
  interface Config {
    http: { public_base: string; listeners: { binds: { host: string; port: number }[] }[] }
    matrix: unknown
    database: unknown
    secrets: { encryption_file: string }
    passwords: { schemes: unknown[] }
    account: Record<string, boolean>
    rate_limiting: { login: { per_ip: unknown; per_account: unknown } }
  }
  const config = (vars = on()) =>
    parse(renderMasConfig(vars, { databaseHost: '127.0.0.1', databasePassword: 'db-pw-fixture' }).content) as Config

  it('issuer on its own host; loopback listeners; the homeserver it serves; secrets and keys by file', () => {
    const c = config()
    expect(c.http.public_base).toBe('https://auth.example.org/')
    expect(c.http.listeners.map((l) => l.binds)).toEqual([[{ host: '127.0.0.1', port: 8080 }], [{ host: '127.0.0.1', port: 8081 }]])
    expect(c.matrix).toEqual({
      kind: 'synapse',
      homeserver: 'example.org',
      endpoint: 'http://127.0.0.1:8008/',
      secret_file: '/etc/matrix-authentication-service/synapse-secret',
    })
    expect(c.database).toEqual({ host: '127.0.0.1', port: 5432, username: 'mas', password: 'db-pw-fixture', database: 'mas' })
    expect(c.secrets.encryption_file).toBe('/etc/matrix-authentication-service/encryption-key')
    // syn2mas needs scheme 1 = bcrypt with NFKC; new passwords get argon2id.
    expect(c.passwords.schemes).toEqual([
      { version: 1, algorithm: 'bcrypt', unicode_normalization: true },
      { version: 2, algorithm: 'argon2id' },
    ])
    expect(masPublicBase(on({ apache: { httpsPort: 8443 } }))).toBe('https://auth.example.org:8443/')
  })

  it('holds the database password: sensitive, 0640 root:matrix-auth', () => {
    const f = renderMasConfig(on(), { databaseHost: '127.0.0.1', databasePassword: 'db-pw-fixture' })
    expect(f).toMatchObject({
      path: '/etc/matrix-authentication-service/config.yaml',
      mode: 0o640,
      owner: 'root',
      group: 'matrix-auth',
      sensitive: true,
    })
  })

  it('maps the registration policy: closed, open (no e-mail: nothing could deliver it), with tokens', () => {
    expect(registrationSettings('closed')).toEqual({
      password_registration_enabled: false,
      password_registration_email_required: false,
      password_registration_token_required: false,
    })
    expect(registrationSettings('open')).toEqual({
      password_registration_enabled: true,
      password_registration_email_required: false,
      password_registration_token_required: false,
    })
    expect(registrationSettings('token')).toEqual({
      password_registration_enabled: true,
      password_registration_email_required: false,
      password_registration_token_required: true,
    })
    expect(config(on({ mas: { registration: 'token' } })).account.password_registration_token_required).toBe(true)
  })

  it('makes the login rate limit configurable, per address and per account', () => {
    expect(config().rate_limiting.login).toEqual({ per_ip: { burst: 3, per_second: 0.05 }, per_account: { burst: 3, per_second: 0.05 } })
    expect(config(on({ mas: { loginRateLimit: { burst: 100, perSecond: 10 } } })).rate_limiting.login.per_ip).toEqual({
      burst: 100,
      per_second: 10,
    })
  })

  it('derives an encryption key of exactly 64 lowercase hex digits, stable for one secret', () => {
    const key = masEncryptionKeyHex('some-generated-secret')
    expect(key).toMatch(/^[0-9a-f]{64}$/)
    expect(masEncryptionKeyHex('some-generated-secret')).toBe(key)
    expect(masEncryptionKeyHex('another')).not.toBe(key)
  })

  it('runs as matrix-auth, Type=notify, hardened', () => {
    const unit = renderMasUnit()
    for (const line of [
      'Type=notify',
      'User=matrix-auth',
      'ProtectSystem=strict',
      'NoNewPrivileges=yes',
      'ExecStart=/opt/matrix-authentication-service/current/mas-cli server --config /etc/matrix-authentication-service/config.yaml',
    ])
      expect(unit).toContain(line)
    expect(unit).not.toMatch(/^MemoryDenyWriteExecute/m)
  })
})

describe('Apache with MAS', () => {
  it('sends login, logout and refresh to MAS before every worker route and the long-polls', () => {
    const vhost = renderMatrixVhost(on({ workers: { preset: 'one-of-each' } }), { ...TLS, workers: true }).content
    const compat =
      'ProxyPassMatch "^(/_matrix/client/(api/v1|r0|v3|unstable)/(login|logout|refresh)(/|$).*)$" "http://127.0.0.1:8080$1" nocanon'
    expect(vhost).toContain(compat)
    const first = vhost.split('\n').findIndex((l) => l.trim().startsWith('ProxyPass'))
    expect(vhost.split('\n')[first]!.trim()).toBe(compat)
    const re = new RegExp(/^ProxyPassMatch "([^"]+)"/.exec(compat)![1]!)
    for (const path of [
      '/_matrix/client/v3/login',
      '/_matrix/client/r0/login',
      '/_matrix/client/v3/login/sso/redirect',
      '/_matrix/client/v3/logout/all',
      '/_matrix/client/v3/refresh',
    ])
      expect(re.test(path), path).toBe(true)
    expect(re.test('/_matrix/client/v3/loginx')).toBe(false)
  })

  it('leaves the login routes to Synapse without MAS, and federation vhosts never get them', () => {
    expect(renderMatrixVhost(matrixSettings(), { ...TLS, workers: true }).content).not.toContain('http://127.0.0.1:8080')
    const fed = renderServerNameVhost(on({ apache: { delegation: 'port-8448' } }), { ...TLS, workers: true })[0]!.content
    expect(fed).not.toContain('(login|logout|refresh)')
  })

  it('serves MAS on its own host name, everything proxied to its loopback listener', () => {
    const site = renderMasVhost(on(), TLS)
    expect(site.path).toBe('/etc/apache2/sites-available/matrix-auth.conf')
    for (const line of [
      'ServerName auth.example.org',
      'ProxyPass / http://127.0.0.1:8080/ nocanon',
      'ProxyPassReverse / http://127.0.0.1:8080/',
      'SSLCertificateFile "/etc/ssl/matrix/fullchain.pem"',
    ])
      expect(site.content).toContain(line)
  })
})

describe('turning MAS on', () => {
  it('is refused over existing users (they would be locked out) and allowed on a new or already switched server', () => {
    expect(lockoutVerdict('fresh').ok).toBe(true)
    expect(lockoutVerdict('0').ok).toBe(true)
    expect(lockoutVerdict('on').ok).toBe(true)
    const refused = lockoutVerdict('12')
    expect(refused.ok).toBe(false)
    expect(refused.detail).toMatch(/12 users.*locked out.*syn2mas/)
    expect(lockoutVerdict('unknown').ok).toBe(false)
  })
})

describe("Synapse's conf.d/60-mas.yaml", () => {
  it("hands logins to MAS on its loopback port with the shared secret, sensitive, and turns Synapse's own registration off (Synapse refuses both)", () => {
    const vars = on({ synapse: { enableRegistration: true } })
    const f = renderSynapseMasConfig(vars, 'mas-shared-secret-fixture')
    expect(f).toMatchObject({
      path: '/etc/matrix-synapse/conf.d/60-mas.yaml',
      mode: 0o640,
      owner: 'root',
      group: 'matrix-synapse',
      sensitive: true,
    })
    expect(f.content).toContain(
      'matrix_authentication_service:\n  enabled: true\n  endpoint: "http://127.0.0.1:8080/"\n  secret: "mas-shared-secret-fixture"\n',
    )
    const server = renderSynapseConfig(vars, synapseContext()).find((x) => x.path.endsWith('/10-server.yaml'))!.content
    expect(server).toContain('enable_registration: false')
    expect(() => renderSynapseMasConfig(vars, undefined)).toThrow(/shared secret/)
  })

  it('says enabled: false without MAS (turning it off converges) and leaves registration to the inventory', () => {
    const vars = matrixSettings({ synapse: { enableRegistration: true } })
    expect(renderSynapseMasConfig(vars, undefined).content).toContain('matrix_authentication_service:\n  enabled: false\n')
    expect(renderSynapseConfig(vars, synapseContext()).find((x) => x.path.endsWith('/10-server.yaml'))!.content).toContain(
      'enable_registration: true',
    )
  })
})
