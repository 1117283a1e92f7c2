import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pipSynapseVars, realElementRelease, sharedPackage, synapseWheelhouse } from '../support/artifacts.js'
import { launchChromium, skipReasonWithoutChromium } from '../support/browser.js'
import { elementLogin, encryptedConversation, type ElementSession } from '../support/element-browser.js'
import { cliOutput, runCli } from '../support/cli.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { writeTestInventory } from '../support/inventory.js'
import { MatrixClient } from '../support/matrix-client.js'
import { nioPasswordLogin, NIO_VERSION } from '../support/nio.js'
import { httpsTo, OAuthClient } from '../support/oauth.js'

/** Fresh provisioning on a loaded 2-core machine takes minutes; generous, as the other e2e files. */
const PROVISION_TIMEOUT = 40 * 60_000
const MAS = '/opt/matrix-authentication-service/current/mas-cli'
const noChromium = skipReasonWithoutChromium()

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
  const element = realElementRelease()
  const register = (user: string, password: string) =>
    hs.exec(
      `RUST_BACKTRACE=0 ${MAS} manage register-user ${user} -p '${password}' -y --ignore-password-complexity --config /etc/matrix-authentication-service/config.yaml`,
    )
  const fetchHttps = () => httpsTo(hs.port(443), ca)
  const apply = () => runCli(['--inventory', inventory], { timeoutMs: PROVISION_TIMEOUT })

  beforeAll(async () => {
    const wheelhouse = await synapseWheelhouse('3.11')
    env = await startHosts(['auth'], {
      ports: [443],
      aliases: { auth: ['mas.test', 'matrix.mas.test', 'auth.mas.test', 'element.mas.test'] },
    })
    hs = env.get('auth')
    inventory = await writeTestInventory(
      env,
      [{ name: 'auth', roles: ['postgres', 'redis', 'synapse', 'workers', 'apache', 'mas', 'element'] }],
      {
        serverName: 'mas.test',
        synapse: pipSynapseVars(wheelhouse),
        // Element X's topology: a synchrotron for the (sliding) sync long-polls.
        workers: { instances: [{ name: 'synchrotron_1', kind: 'synchrotron' }] },
        // The real Element release, driven in a browser below (OIDC login through MAS's pages).
        element: { version: element.version, file: element.file, sha256: element.sha256 },
        // The suite logs in many times from one address (MAS's default: a burst of 3, then one per 20 s).
        mas: { version: '1.22.0', file: mas.file, sha256: mas.sha256, loginRateLimit: { burst: 100, perSecond: 10 } },
      },
    )
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

  it('an admin made with provision mas-user (password from a mode-600 file, never on a command line) may use the Synapse admin API; a user who may not is refused', async () => {
    const pwFile = join(env.dir, 'boss-password')
    await writeFile(pwFile, 'pw-boss-Tq9!c55rb\n', { mode: 0o600 })
    const args = ['mas-user', '--inventory', inventory, '--user', 'boss', '--admin', '--password-file', pwFile]
    const made = await runCli(args)
    expect(made.code, cliOutput(made)).toBe(0)
    expect(made.stdout).toMatch(/created @boss:mas\.test in MAS \(\w+\), may request admin rights/)
    const again = await runCli(args)
    expect(again.code, cliOutput(again)).toBe(0)
    expect(again.stdout).toMatch(/@boss:mas\.test exists in MAS .*password unchanged/)
    const adminApi = async (token: string) =>
      (
        await hs.exec(
          `curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer ${token}' http://127.0.0.1:8008/_synapse/admin/v2/users/@boss:mas.test`,
        )
      ).stdout
    const client = new OAuthClient(fetchHttps(), 'https://matrix.mas.test')
    await client.discoverAndRegister()
    const boss = await client.login('boss', 'pw-boss-Tq9!c55rb', `ADM${Date.now().toString(36).toUpperCase()}`, 'urn:synapse:admin:*')
    const whoami = async (token: string) => {
      const api = new MatrixClient({ port: hs.port(443), hostname: 'matrix.mas.test', ca })
      api.token = token
      return (await api.call<{ user_id: string }>('GET', '/_matrix/client/v3/account/whoami')).json.user_id
    }
    expect(await whoami(boss.access_token)).toBe('@boss:mas.test')
    expect(await adminApi(boss.access_token)).toBe('200')
    // bob (made with the plain CLI above, no admin) asking the same scope: MAS refuses the grant, or Synapse the call.
    // A client of its own: the first one's MAS session (cookie) is boss's.
    const other = new OAuthClient(fetchHttps(), 'https://matrix.mas.test')
    await other.discoverAndRegister()
    const denied = await other
      .login('bob', 'pw-bob-Zq8!r27mw', `NOADM${Date.now().toString(36).toUpperCase()}`, 'urn:synapse:admin:*')
      .then(async (t) => `${await whoami(t.access_token)} ${await adminApi(t.access_token)}`)
      .catch((e: Error) => `refused by MAS: ${e.message.slice(0, 120)}`)
    console.log(`non-admin asking urn:synapse:admin:*: ${denied}`)
    expect(denied).toMatch(/^(@bob:mas\.test 403|refused by MAS)/)
  })

  it("Element X's simplified sliding sync with a MAS token is served by the synchrotron (its log), not by the main process", async () => {
    const created = await register('dave', 'pw-dave-Hc7!m40ws')
    expect(created.exitCode, created.output).toBe(0)
    const client = new OAuthClient(fetchHttps(), 'https://matrix.mas.test')
    await client.discoverAndRegister()
    const tokens = await client.login('dave', 'pw-dave-Hc7!m40ws', `SS${Date.now().toString(36).toUpperCase()}`)
    const api = new MatrixClient({ port: hs.port(443), hostname: 'matrix.mas.test', ca })
    api.token = tokens.access_token
    const room = await api.call<{ room_id: string }>('POST', '/_matrix/client/v3/createRoom', { name: 'sliding' })
    expect(room.status, room.text).toBe(200)
    const marker = `sliding-${Date.now()}`
    const sliding = await api.call<{ pos?: string; rooms?: Record<string, unknown> }>(
      'POST',
      `/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0&${marker}`,
      // Each list needs ranges, timeline_limit and required_state (else 400 M_BAD_JSON).
      { lists: { all: { ranges: [[0, 10]], timeline_limit: 1, required_state: [['m.room.name', '']] } } },
    )
    expect(sliding.status, sliding.text).toBe(200)
    expect(typeof sliding.json.pos).toBe('string')
    expect(Object.keys(sliding.json.rooms ?? {})).toContain(room.json.room_id)
    const logged = async (name: string) =>
      Number((await hs.exec(`grep -c -- '${marker}' /var/log/matrix-synapse/${name}.log || true`)).stdout.trim() || 0)
    expect(await logged('synchrotron_1'), `${marker} in synchrotron_1.log`).toBeGreaterThanOrEqual(1)
    expect(await logged('homeserver'), `${marker} not in homeserver.log`).toBe(0)
  })

  it(`matrix-nio ${NIO_VERSION} (an old-style client, password login) logs in through MAS's compatibility layer, sends and logs out`, async () => {
    const created = await register('carol', 'pw-carol-Wm4!t62pe')
    expect(created.exitCode, created.output).toBe(0)
    const caFile = join(env.dir, 'mas-ca.crt')
    await writeFile(caFile, ca)
    const nio = await nioPasswordLogin({
      hostname: 'matrix.mas.test',
      port: hs.port(443),
      caFile,
      user: 'carol',
      password: 'pw-carol-Wm4!t62pe',
    })
    expect(nio).toMatchObject({ user_id: '@carol:mas.test', whoami: '@carol:mas.test', token_prefix: 'mct_', sent: true, logout: true })
    expect(nio.error).toBeUndefined()
  })

  it.skipIf(noChromium)(
    "two users in the real Element in a browser, logging in through MAS's pages (OIDC): an encrypted room, and the second reads the first's message decrypted",
    async () => {
      const stamp = Date.now().toString(36)
      const users = [`ada${stamp}`, `bo${stamp}`].map((user) => ({ user, password: `pw-${user}-Xr5!n` }))
      for (const u of users) {
        const made = await register(u.user, u.password)
        expect(made.exitCode, made.output).toBe(0)
      }
      const target = `127.0.0.1:${hs.port(443)}`
      const browser = await launchChromium({ 'element.mas.test': target, 'matrix.mas.test': target, 'auth.mas.test': target })
      const elementUrl = 'https://element.mas.test'
      const sessions: ElementSession[] = []
      const text = `hello through MAS ${stamp}`
      const t0 = Date.now()
      try {
        // Both log in before anything is sent: the room key goes to the devices the room has then.
        for (const u of users) sessions.push(await elementLogin(browser, elementUrl, u, 'mas'))
        const roomId = await encryptedConversation(sessions[0]!, sessions[1]!, {
          elementUrl,
          serverName: 'mas.test',
          invitee: users[1]!.user,
          roomName: `mas ${stamp}`,
          text,
        })
        console.log(
          `Element + MAS: two OIDC logins, encrypted room ${roomId}, message read decrypted in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
        )
        expect(sessions.flatMap((s) => s.notFound)).toEqual([])
        // Not trusting the UI: the second user, logged in once more through MAS's compatibility layer, reads the
        // room's history as the server holds it: encrypted only, never the text.
        const api = new MatrixClient({ port: hs.port(443), hostname: 'matrix.mas.test', ca })
        await api.login(users[1]!.user, users[1]!.password)
        const history = await api.call<{ chunk: { type: string }[] }>(
          'GET',
          `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=50`,
        )
        expect(history.status, history.text).toBe(200)
        const types = history.json.chunk.map((e) => e.type)
        expect(types).toContain('m.room.encryption')
        expect(types).toContain('m.room.encrypted')
        expect(types).not.toContain('m.room.message')
        expect(history.text).not.toContain(text)
      } catch (error) {
        const dir = join(process.cwd(), 'reports')
        await mkdir(dir, { recursive: true })
        const pages = browser.contexts().flatMap((c) => c.pages())
        for (const [i, page] of pages.entries()) await page.screenshot({ path: join(dir, `element-mas-page${i + 1}.png`) }).catch(() => {})
        throw error
      } finally {
        await browser.close()
      }
    },
  )

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
