import { join } from 'node:path'
import { existsSync, readdirSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { pipSynapseVars, sharedPackage, synapseWheelhouse } from '../support/artifacts.js'
import { cliOutput, runCli } from '../support/cli.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { writeTestInventory } from '../support/inventory.js'
import { MatrixClient } from '../support/matrix-client.js'
import { httpsTo, OAuthClient } from '../support/oauth.js'

/** Fresh provisioning on a loaded 2-core machine takes minutes; generous, as the other e2e files. */
const PROVISION_TIMEOUT = 40 * 60_000
const SERVER = 'old.test'
const UNITS = 'systemctl show -p ActiveEnterTimestampMonotonic --value matrix-synapse.service apache2.service'

/**
 * `provision mas-migrate` on a server built without MAS (the real MAS 1.22.0 and its syn2mas): users with
 * passwords, devices, a room with messages and an access token from before; the dry run changes nothing;
 * the move keeps the passwords (OAuth and compat logins through MAS), the old token and the messages;
 * a second run changes nothing.
 */
describe.skipIf(!inject('docker'))('mas-migrate: an existing homeserver moved onto MAS with syn2mas', () => {
  let env: TestHosts
  let hs: TestHost
  let plain: string
  let withMas: string
  let ca: string
  let roomId: string
  let aliceOldToken: string
  let aliceOldDevice: string
  const started = Date.now()
  const mas = sharedPackage('matrix-authentication-service', 'mas-cli-x86_64-linux.tar.gz')
  const client = () => new MatrixClient({ port: hs.port(443), hostname: `matrix.${SERVER}`, ca })
  const password = (u: string) => `pw-${u}-Kq3!v81zt`

  beforeAll(async () => {
    const wheelhouse = await synapseWheelhouse('3.11')
    env = await startHosts(['old'], { ports: [443], aliases: { old: [SERVER, `matrix.${SERVER}`, `auth.${SERVER}`] } })
    hs = env.get('old')
    const vars = { serverName: SERVER, synapse: pipSynapseVars(wheelhouse) }
    plain = await writeTestInventory(env, [{ name: 'old', roles: ['postgres', 'synapse', 'apache'] }], vars, 'plain.yaml')
    withMas = await writeTestInventory(
      env,
      [{ name: 'old', roles: ['postgres', 'synapse', 'apache', 'mas'] }],
      { ...vars, mas: { version: '1.22.0', file: mas.file, sha256: mas.sha256, loginRateLimit: { burst: 100, perSecond: 10 } } },
      'with-mas.yaml',
    )
  })
  afterAll(async () => {
    console.log(`mas-migrate file: ${Math.round((Date.now() - started) / 1000)} s`)
    await env?.stop()
  })

  it(
    'a server without MAS: users with passwords, devices, a room with messages, an access token',
    async () => {
      const r = await runCli(['--inventory', plain], { timeoutMs: PROVISION_TIMEOUT })
      expect(r.code, cliOutput(r)).toBe(0)
      ca = (await hs.exec(`cat /etc/ssl/matrix-provision/matrix.${SERVER}.crt`)).stdout
      for (const [u, admin] of [
        ['alice', '--admin'],
        ['bob', '--no-admin'],
      ] as const) {
        const made = await hs.exec(
          `printf '%s' '${password(u)}' | /opt/venvs/matrix-synapse/bin/register_new_matrix_user -c /etc/matrix-synapse/conf.d/30-secrets.yaml -u ${u} --password-file /dev/stdin ${admin} http://127.0.0.1:8008`,
        )
        expect(made.exitCode, made.output).toBe(0)
      }
      const alice = client()
      await alice.login('alice', password('alice'))
      aliceOldToken = alice.token!
      const who = await alice.call<{ device_id: string }>('GET', '/_matrix/client/v3/account/whoami')
      aliceOldDevice = who.json.device_id
      // Synapse's own tokens before the move.
      expect(aliceOldToken).toMatch(/^syt_/)
      const room = await alice.call<{ room_id: string }>('POST', '/_matrix/client/v3/createRoom', {
        name: 'before MAS',
        invite: [`@bob:${SERVER}`],
      })
      expect(room.status, room.text).toBe(200)
      roomId = room.json.room_id
      const bob = client()
      await bob.login('bob', password('bob'))
      expect((await bob.call('POST', `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, {})).status).toBe(200)
      for (const [c, text] of [
        [alice, 'hello from alice before MAS'],
        [bob, 'hello from bob before MAS'],
      ] as const) {
        const sent = await c.call('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${Date.now()}`, {
          msgtype: 'm.text',
          body: text,
        })
        expect(sent.status, sent.text).toBe(200)
      }
    },
    PROVISION_TIMEOUT,
  )

  it(
    'the dry run prints the procedure with its one-way step and changes nothing',
    async () => {
      const before = (await hs.exec(UNITS)).stdout
      const r = await runCli(['mas-migrate', '--inventory', withMas, '--dry-run'], { timeoutMs: PROVISION_TIMEOUT })
      expect(r.code, cliOutput(r)).toBe(0)
      expect(r.stdout).toContain('2 local users to move')
      expect(r.stdout).toMatch(/\[one-way\] provision apply: Synapse hands logins/)
      expect(r.stdout).toContain('mas-cli syn2mas migrate --dry-run')
      // The install step's own plan.
      expect(r.stdout).toMatch(/unpack mas-cli v1\.22\.0/)
      expect(r.stdout).toContain('Dry run: nothing was changed')
      const state = await hs.exec(
        "test -e /opt/matrix-authentication-service && echo mas-installed; runuser -u postgres -- psql -Atq -c \"select count(*) from pg_database where datname = 'mas'\"; grep -c 'enabled: false' /etc/matrix-synapse/conf.d/60-mas.yaml",
      )
      expect(state.stdout.trim().split('\n')).toEqual(['0', '1'])
      expect((await hs.exec(UNITS)).stdout).toBe(before)
      expect(existsSync(join(env.dir, 'backups'))).toBe(false)
      // The old login still works: nothing switched.
      const bob = client()
      await bob.login('bob', password('bob'))
      expect(bob.token).toMatch(/^syt_/)
    },
    PROVISION_TIMEOUT,
  )

  it(
    'the move: backup first; the same passwords log in through MAS, the old token still works, the messages are there',
    async () => {
      const r = await runCli(['mas-migrate', '--inventory', withMas, '--to', join(env.dir, 'backups')], { timeoutMs: PROVISION_TIMEOUT })
      expect(r.code, cliOutput(r)).toBe(0)
      console.log(
        `mas-migrate run ${r.durationMs} ms:\n${r.stdout
          .split('\n')
          .filter((l) => /^(Step| {2}(exit|stopped|warning)|.*migrated)/.test(l))
          .join('\n')}`,
      )
      expect(r.stdout).toMatch(/2 users migrated/)
      expect(r.stdout).toContain('now logs in through MAS')
      expect(readdirSync(join(env.dir, 'backups')).filter((d) => d.startsWith('old-'))).toHaveLength(1)
      ca = (await hs.exec(`cat /etc/ssl/matrix-provision/matrix.${SERVER}.crt`)).stdout
      // The token issued by Synapse before the move: syn2mas carried it (and its device) over.
      const old = client()
      old.token = aliceOldToken
      const who = await old.call<{ user_id: string; device_id: string }>('GET', '/_matrix/client/v3/account/whoami')
      expect(who.status, who.text).toBe(200)
      expect(who.json).toMatchObject({ user_id: `@alice:${SERVER}`, device_id: aliceOldDevice })
      const messages = await old.call<{ chunk: { type: string; content: { body?: string } }[] }>(
        'GET',
        `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=50`,
      )
      expect(messages.status, messages.text).toBe(200)
      const bodies = messages.json.chunk.filter((e) => e.type === 'm.room.message').map((e) => e.content.body)
      expect(bodies).toEqual(expect.arrayContaining(['hello from alice before MAS', 'hello from bob before MAS']))
      // bob's password, through MAS's compatibility layer (an old client's /login): a MAS token now.
      const bob = client()
      await bob.login('bob', password('bob'))
      expect(bob.token).toMatch(/^mct_/)
      expect((await bob.call<{ user_id: string }>('GET', '/_matrix/client/v3/account/whoami')).json.user_id).toBe(`@bob:${SERVER}`)
      // alice's password, through MAS's own login form (authorization code + PKCE).
      const fetchHttps = httpsTo(hs.port(443), ca)
      const oauth = new OAuthClient(fetchHttps, `https://matrix.${SERVER}`)
      expect((await oauth.discoverAndRegister()).issuer).toBe(`https://auth.${SERVER}/`)
      const tokens = await oauth.login('alice', password('alice'), `MIGRATED${Date.now().toString(36).toUpperCase()}`)
      const fresh = client()
      fresh.token = tokens.access_token
      const again = await fresh.call<{ user_id: string }>('GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/joined_members`)
      expect(again.status, again.text).toBe(200)
      // Synapse's own password login is off: /login belongs to MAS (a wrong password is MAS's 403).
      const wrong = await client().call('POST', '/_matrix/client/v3/login', {
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: 'bob' },
        password: 'not-his',
      })
      expect(wrong.status).toBe(403)
    },
    PROVISION_TIMEOUT,
  )

  it(
    'a second run changes nothing: mas-migrate finds Synapse on MAS, apply has no changes',
    async () => {
      const before = (await hs.exec(UNITS)).stdout
      const again = await runCli(['mas-migrate', '--inventory', withMas, '--to', join(env.dir, 'backups')], {
        timeoutMs: PROVISION_TIMEOUT,
      })
      expect(again.code, cliOutput(again)).toBe(0)
      expect(again.stdout).toContain('already hands logins to MAS: nothing to move, no changes')
      const apply = await runCli(['--inventory', withMas], { timeoutMs: PROVISION_TIMEOUT })
      expect(apply.code, cliOutput(apply)).toBe(0)
      expect(apply.stdout).toContain('old: no changes')
      expect((await hs.exec(UNITS)).stdout).toBe(before)
    },
    PROVISION_TIMEOUT,
  )
})
