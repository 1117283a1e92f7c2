import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { pipSynapseVars, sharedPackage, synapseWheelhouse } from '../support/artifacts.js'
import { cliOutput, runCli } from '../support/cli.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { writeTestInventory } from '../support/inventory.js'
import { MatrixClient } from '../support/matrix-client.js'
import { httpsTo, OAuthClient } from '../support/oauth.js'

/** Fresh provisioning on a loaded 2-core machine takes minutes; generous, as the other e2e files. */
const PROVISION_TIMEOUT = 40 * 60_000
const MAS = '/opt/matrix-authentication-service/current/mas-cli'

/**
 * A fresh homeserver with the mas role, the real MAS 1.22.0 release (../shared/packages): OIDC discovery
 * at the issuer, a user created through MAS logs in with the authorization-code flow and PKCE through MAS's
 * own forms, calls the client API, refreshes, logs out; an old-style password login goes through MAS's
 * compatibility layer; a second run changes nothing.
 */
describe.skipIf(!inject('docker'))('MAS: a fresh homeserver with the Matrix Authentication Service', () => {
  let env: TestHosts
  let hs: TestHost
  let inventory: string
  let ca: string
  const started = Date.now()
  const mas = sharedPackage('matrix-authentication-service', 'mas-cli-x86_64-linux.tar.gz')
  const fetchHttps = () => httpsTo(hs.port(443), ca)
  const apply = () => runCli(['--inventory', inventory], { timeoutMs: PROVISION_TIMEOUT })

  beforeAll(async () => {
    const wheelhouse = await synapseWheelhouse('3.11')
    env = await startHosts(['auth'], { ports: [443], aliases: { auth: ['mas.test', 'matrix.mas.test', 'auth.mas.test'] } })
    hs = env.get('auth')
    inventory = await writeTestInventory(env, [{ name: 'auth', roles: ['postgres', 'synapse', 'apache', 'mas'] }], {
      serverName: 'mas.test',
      synapse: pipSynapseVars(wheelhouse),
      // The suite logs in many times from one address (MAS's default: a burst of 3, then one per 20 s).
      mas: { version: '1.22.0', file: mas.file, sha256: mas.sha256, loginRateLimit: { burst: 100, perSecond: 10 } },
    })
  })
  afterAll(async () => {
    console.log(`mas file: ${Math.round((Date.now() - started) / 1000)} s`)
    await env?.stop()
  })

  it(
    'provisions from nothing; MAS is healthy and its OIDC discovery document names the issuer',
    async () => {
      const r = await apply()
      expect(r.code, cliOutput(r)).toBe(0)
      console.log(`mas fresh run ${r.durationMs} ms`)
      ca = (await hs.exec('cat /etc/ssl/matrix-provision/matrix.mas.test.crt')).stdout
      const discovery = await fetchHttps()('https://auth.mas.test/.well-known/openid-configuration')
      expect(discovery.status, discovery.text).toBe(200)
      expect((JSON.parse(discovery.text) as { issuer: string }).issuer).toBe('https://auth.mas.test/')
      // Synapse hands discovery to MAS too (what Element and Element X read).
      const metadata = await fetchHttps()('https://matrix.mas.test/_matrix/client/v1/auth_metadata')
      expect(metadata.status, metadata.text).toBe(200)
      expect((JSON.parse(metadata.text) as { issuer: string }).issuer).toBe('https://auth.mas.test/')
      // The encryption key: exactly 64 hex digits, no newline; secrets not world-readable.
      expect(
        (
          await hs.exec(
            "wc -c < /etc/matrix-authentication-service/encryption-key; stat -c '%a %U:%G' /etc/matrix-authentication-service/config.yaml /etc/matrix-authentication-service/keys/rsa.pem",
          )
        ).stdout
          .trim()
          .split('\n'),
      ).toEqual(['64', '640 root:matrix-auth', '640 root:matrix-auth'])
      expect((await hs.exec('systemctl show -p User,ActiveState matrix-authentication-service.service')).stdout).toMatch(
        /User=matrix-auth[\s\S]*ActiveState=active|ActiveState=active[\s\S]*User=matrix-auth/,
      )
    },
    PROVISION_TIMEOUT,
  )

  it('a user created through MAS logs in with the authorization-code flow and PKCE, calls the client API, refreshes and logs out', async () => {
    const created = await hs.exec(
      `RUST_BACKTRACE=0 ${MAS} manage register-user alice -p 'pw-alice-Ae7!x93kq' -y --ignore-password-complexity --config /etc/matrix-authentication-service/config.yaml`,
    )
    expect(created.exitCode, created.output).toBe(0)
    const client = new OAuthClient(fetchHttps(), 'https://matrix.mas.test')
    const meta = await client.discoverAndRegister()
    expect(meta.issuer).toBe('https://auth.mas.test/')
    const device = `E2E${Date.now().toString(36).toUpperCase()}`
    const tokens = await client.login('alice', 'pw-alice-Ae7!x93kq', device)
    const api = new MatrixClient({ port: hs.port(443), hostname: 'matrix.mas.test', ca })
    api.token = tokens.access_token
    const who = await api.call<{ user_id: string; device_id: string }>('GET', '/_matrix/client/v3/account/whoami')
    expect(who.status, who.text).toBe(200)
    expect(who.json).toMatchObject({ user_id: '@alice:mas.test', device_id: device })
    const room = await api.call<{ room_id: string }>('POST', '/_matrix/client/v3/createRoom', { name: 'oauth' })
    expect(room.status, room.text).toBe(200)
    // Refresh: a new pair, and the new access token works.
    const renewed = await client.refresh(tokens.refresh_token)
    expect(renewed.access_token).not.toBe(tokens.access_token)
    api.token = renewed.access_token
    expect((await api.call('GET', '/_matrix/client/v3/account/whoami')).status).toBe(200)
    // Logout: MAS deletes the device in Synapse through a job; Synapse rejects the token once it is gone.
    expect(await client.revoke(renewed.access_token)).toBe(200)
    const t0 = Date.now()
    let status = 200
    while (Date.now() - t0 < 30_000) {
      status = (await api.call('GET', '/_matrix/client/v3/account/whoami')).status
      if (status === 401) break
      await new Promise((r) => setTimeout(r, 250))
    }
    expect(status, 'whoami after revocation').toBe(401)
    console.log(`token rejected ${Date.now() - t0} ms after revocation`)
  })

  it("an old-style password login (m.login.password on /login) goes through MAS's compatibility layer, and logout ends it", async () => {
    const created = await hs.exec(
      `RUST_BACKTRACE=0 ${MAS} manage register-user bob -p 'pw-bob-Zq8!r27mw' -y --ignore-password-complexity --config /etc/matrix-authentication-service/config.yaml`,
    )
    expect(created.exitCode, created.output).toBe(0)
    const bob = new MatrixClient({ port: hs.port(443), hostname: 'matrix.mas.test', ca })
    const login = await bob.call<{ access_token: string; device_id: string }>('POST', '/_matrix/client/v3/login', {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: 'bob' },
      password: 'pw-bob-Zq8!r27mw',
    })
    expect(login.status, login.text).toBe(200)
    // MAS's compatibility tokens, not Synapse's own (syt_).
    expect(login.json.access_token).toMatch(/^mct_/)
    bob.token = login.json.access_token
    expect((await bob.call<{ user_id: string }>('GET', '/_matrix/client/v3/account/whoami')).json.user_id).toBe('@bob:mas.test')
    const wrong = await new MatrixClient({ port: hs.port(443), hostname: 'matrix.mas.test', ca }).call('POST', '/_matrix/client/v3/login', {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: 'bob' },
      password: 'not-his',
    })
    expect(wrong.status).toBe(403)
    expect((await bob.call('POST', '/_matrix/client/v3/logout', {})).status).toBe(200)
    const t0 = Date.now()
    let status = 200
    while (Date.now() - t0 < 30_000) {
      status = (await bob.call('GET', '/_matrix/client/v3/account/whoami')).status
      if (status === 401) break
      await new Promise((r) => setTimeout(r, 250))
    }
    expect(status).toBe(401)
    // Registration is closed (the default): Synapse's own register API is off with MAS.
    const register = await new MatrixClient({ port: hs.port(443), hostname: 'matrix.mas.test', ca }).call(
      'POST',
      '/_matrix/client/v3/register',
      { username: 'mallory', password: 'x-123456789', auth: { type: 'm.login.dummy' } },
    )
    expect(register.status).not.toBe(200)
  })

  it(
    'a second run changes nothing and restarts nothing',
    async () => {
      const since = (
        await hs.exec(
          'systemctl show -p ActiveEnterTimestampMonotonic --value matrix-authentication-service.service matrix-synapse.service apache2.service',
        )
      ).stdout
      const r = await apply()
      expect(r.code, cliOutput(r)).toBe(0)
      expect(r.stdout).toContain('auth: no changes')
      expect(
        (
          await hs.exec(
            'systemctl show -p ActiveEnterTimestampMonotonic --value matrix-authentication-service.service matrix-synapse.service apache2.service',
          )
        ).stdout,
      ).toBe(since)
    },
    PROVISION_TIMEOUT,
  )
})
