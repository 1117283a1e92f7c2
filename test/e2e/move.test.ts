import { createHash } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { parseDocument } from 'yaml'
import { pipSynapseVars, SYNAPSE_VERSION } from '../support/artifacts.js'
import type { MoveReport } from '../../src/commands/move/report.js'
import { runCli } from '../support/cli.js'
import { buildGuideHost, type GuideHost } from '../support/guide-host.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { provision, writeTestInventory } from '../support/inventory.js'
import { MatrixClient, roomBodies } from '../support/matrix-client.js'
import { moveArtifacts, writeMoveInventory } from '../support/move-setup.js'
import { debian13Suite } from '../support/suites.js'
import { until } from '../support/wait.js'

const SERVER = 'old.test'
const PUBLIC = 'matrix.old.test'
const THIRD = 'third.test'
const OLD_VERSION = '1.141.0'
const OLD_KEY = `/etc/matrix-synapse/${SERVER}.signing.key`
const OLD_UNITS = [
  'matrix-synapse.service',
  'matrix-synapse-worker@federation_reader.service',
  'matrix-synapse-worker@federation_sender.service',
]

/**
 * `provision move` from a guide server kept up by hand until its system could go no further (Debian 11
 * standing in for Ubuntu 20.04: Python 3.9, PostgreSQL 13, Synapse 1.141.0, the guide's two workers
 * converted to instance_map) to a Debian 13 host (PostgreSQL 17) at the newest pinned Synapse. One pair
 * of hosts serves both cases: first a move whose restore on NEW is killed, and --abort (OLD serves
 * again, nothing lost); then the move itself, verified through the client API, and a second run.
 * A third homeserver, provisioned as the federation e2e's are (certificates from a local CA trusted
 * through federationCaFiles), federates with NEW after the move.
 */
describe.skipIf(!inject('docker'))('moving a homeserver to a new machine', () => {
  let oldEnv: TestHosts
  let newEnv: TestHosts
  let oldHost: TestHost
  let newHost: TestHost
  let guide: GuideHost
  let inventory: string
  let ca: string
  let third: TestHost
  let encryptedRoom: string
  let oldCounts: string
  const media: { uri: string; sha256: string }[] = []
  const started = Date.now()
  const client = (host: TestHost, ca: string, token?: string) => new MatrixClient({ port: host.port(443), hostname: PUBLIC, ca, token })
  const countsSql = `SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM events), (SELECT count(*) FROM local_media_repository), (SELECT count(*) FROM access_tokens)`
  const oldDbCounts = async () => (await oldHost.exec(`runuser -u postgres -- psql -At -d synapse -c "${countsSql}"`)).stdout.trim()
  const unitStates = async (h: TestHost) => (await h.exec(`systemctl is-active ${OLD_UNITS.join(' ')}; true`)).stdout.trim().split('\n')

  beforeAll(async () => {
    const { oldWheels, newWheels, oldSuite, localCa, ca: newCa } = await moveArtifacts(OLD_VERSION)
    ca = newCa
    ;[oldEnv, newEnv] = await Promise.all([
      startHosts(['old'], { suite: oldSuite, ports: [443], aliases: { old: [SERVER, PUBLIC] } }),
      startHosts(['new', 'third'], {
        suite: debian13Suite(),
        ports: [443],
        aliases: { new: [SERVER, PUBLIC], third: [THIRD, `matrix.${THIRD}`] },
      }),
    ])
    oldHost = oldEnv.get('old')
    newHost = newEnv.get('new')
    third = newEnv.get('third')
    // NEW and the third server: the federation e2e's setup (private CA trusted by each Synapse, the test
    // network allowed, keys fetched from the servers themselves: matrix.org is unreachable here).
    const federation = {
      federationCaFiles: [localCa.caFile],
      extraConfig: { ip_range_whitelist: [third.ip.split('.').slice(0, 2).join('.') + '.0.0/16'], trusted_key_servers: [] },
    }
    const [newCert, thirdCert] = await Promise.all([
      localCa.issue('new', [PUBLIC, SERVER]),
      localCa.issue('third', [`matrix.${THIRD}`, THIRD]),
    ])
    const thirdInventory = await writeTestInventory(
      newEnv,
      [{ name: 'third', roles: ['postgres', 'redis', 'synapse', 'apache'] }],
      {
        serverName: THIRD,
        apache: { tls: { mode: 'files', certificateFile: thirdCert.certFile, keyFile: thirdCert.keyFile } },
        synapse: { ...pipSynapseVars(newWheels), ...federation },
      },
      'third.yaml',
    )
    const thirdReady = (async () => {
      const r = await provision(['--inventory', thirdInventory, '--json'])
      expect(r.code, r.stdout + r.stderr).toBe(0)
      const reg = await third.exec(
        `printf 'pw-carol-123456' | /opt/venvs/matrix-synapse/bin/register_new_matrix_user -c /etc/matrix-synapse/conf.d/30-secrets.yaml -u carol --password-file /dev/stdin --no-admin http://127.0.0.1:8008`,
      )
      expect(reg.exitCode, reg.output).toBe(0)
    })()
    thirdReady.catch(() => undefined) // awaited below; a failure meanwhile is not an unhandled rejection
    guide = await buildGuideHost(oldHost, {
      serverName: SERVER,
      publicHost: PUBLIC,
      install: { method: 'pip', wheelhouse: oldWheels.dir, instanceMap: true },
    })
    // What the guide host lacks: an encrypted room with an encrypted event, more media.
    const alice = client(oldHost, guide.ca, guide.token)
    const room = await alice.call<{ room_id: string }>('POST', '/_matrix/client/v3/createRoom', {
      name: 'secret',
      preset: 'private_chat',
      initial_state: [{ type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } }],
    })
    expect(room.status, room.text).toBe(200)
    encryptedRoom = room.json.room_id
    const sent = await alice.call('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(encryptedRoom)}/send/m.room.encrypted/e2e-1`, {
      algorithm: 'm.megolm.v1.aes-sha2',
      ciphertext: 'AwgAEnAC',
      sender_key: 'k',
      session_id: 's',
      device_id: 'D',
    })
    expect(sent.status, sent.text).toBe(200)
    media.push({ uri: guide.mediaUri, sha256: guide.mediaSha256 })
    for (let i = 0; i < 4; i++) {
      const data = Buffer.alloc(300_000 + i, i + 1)
      media.push({
        uri: await alice.upload(data, 'application/octet-stream', `m${i}.bin`),
        sha256: createHash('sha256').update(data).digest('hex'),
      })
    }
    // One inventory, both hosts: OLD is only named, as the self-contained server it is (no task ever runs on it).
    inventory = await writeMoveInventory(
      oldEnv,
      newEnv,
      { old: [oldHost, ['postgres', 'synapse']], new: [newHost, ['postgres', 'redis', 'synapse', 'workers', 'apache']] },
      {
        serverName: SERVER,
        publicHost: PUBLIC,
        apache: { tls: { mode: 'files', certificateFile: newCert.certFile, keyFile: newCert.keyFile } },
        synapse: { ...pipSynapseVars(newWheels), ...federation },
      },
      'move.yaml',
    )
    oldCounts = await oldDbCounts()
    await thirdReady
    console.log(`old host built (${OLD_VERSION}, counts ${oldCounts}) in ${((Date.now() - started) / 1000).toFixed(0)} s`)
  })
  afterAll(async () => {
    await Promise.all([oldEnv?.stop(), newEnv?.stop()])
    console.log(`move.test.ts took ${((Date.now() - started) / 1000).toFixed(0)} s`)
  })

  const move = async (extra: string[] = []) => {
    const r = await runCli(['move', '--inventory', inventory, '--from', 'old', '--to', 'new', '--json', ...extra], { timeoutMs: 1_800_000 })
    return { ...r, report: JSON.parse(r.stdout || '{}') as MoveReport }
  }

  it('--dry-run: the preflight passes (server name, route 1.141.0 -> newest, PostgreSQL 17, Python, space, TLS) and the plan is printed; nothing changes', async () => {
    const r = await move(['--dry-run'])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.report.status).toBe('planned')
    expect(r.report.preflight.filter((c) => !c.ok)).toEqual([])
    expect(r.report.preflight.find((c) => c.name === 'version route')?.detail).toContain(`${OLD_VERSION} -> ${SYNAPSE_VERSION} directly`)
    expect(r.report.steps.map((s) => s.name)).toEqual([
      'provision',
      'media-1',
      'stop-old',
      'media-2',
      'database',
      'mask-old',
      'start-main',
      'start',
      'verify',
    ])
    expect(await unitStates(oldHost)).toEqual(['active', 'active', 'active'])
    expect((await newHost.exec('test -e /opt/venvs/matrix-synapse; echo $?')).stdout.trim()).toBe('1')
  })

  it('a move whose restore on NEW is killed fails and says so; --abort returns OLD to service with nothing lost', async () => {
    // Kills pg_restore on NEW the moment it starts (the dump's other end: OLD's pg_dump must end too).
    const killer = newHost.exec('until [ -e /root/stop-killer ]; do pkill -KILL -x pg_restore && exit 0; sleep 0.05; done; exit 1')
    const r = await move()
    await newHost.exec('touch /root/stop-killer')
    expect((await killer).exitCode, r.stdout + r.stderr).toBe(0)
    expect(r.code, r.stdout + r.stderr).toBe(1)
    expect(r.report.status).toBe('failed')
    expect(r.report.error).toContain('database stream')
    expect(r.report.next.join(' ')).toContain('--abort')
    expect((await oldHost.exec('pgrep -x pg_dump || true')).stdout.trim()).toBe('')
    expect((await oldHost.exec('systemctl is-enabled matrix-synapse.service; true')).stdout.trim()).toBe('masked')
    const aborted = await move(['--abort'])
    expect(aborted.code, aborted.stdout + aborted.stderr).toBe(0)
    expect(aborted.report.status).toBe('aborted')
    expect(await unitStates(oldHost)).toEqual(['active', 'active', 'active'])
    expect((await newHost.exec('systemctl is-active matrix-synapse.service; true')).stdout.trim()).not.toBe('active')
    expect(await oldDbCounts()).toBe(oldCounts)
    const alice = client(oldHost, guide.ca, guide.token)
    for (
      let i = 0;
      i < 60 && (await alice.call('GET', '/_matrix/client/v3/account/whoami').catch(() => ({ status: 0 }))).status !== 200;
      i++
    )
      await new Promise((res) => setTimeout(res, 1000))
    expect((await alice.call('GET', '/_matrix/client/v3/account/whoami')).status).toBe(200)
  }, 1_800_000)

  let report: MoveReport
  it(`moves OLD (${OLD_VERSION}, PostgreSQL 13) to NEW (${SYNAPSE_VERSION}, PostgreSQL 17): downtime reported, background updates done`, async () => {
    const r = await move()
    expect(r.code, r.stdout + r.stderr).toBe(0)
    report = r.report
    expect(report.status, report.error).toBe('moved')
    expect(report.steps.every((s) => s.done)).toBe(true)
    expect(report.downtimeMs).toBeGreaterThan(0)
    expect(report.downtimeMs).toBeLessThan(600_000)
    console.log(
      `move: downtime ${((report.downtimeMs ?? 0) / 1000).toFixed(1)} s, background updates ${((report.backgroundUpdatesMs ?? 0) / 1000).toFixed(1)} s after the start`,
    )
    expect(
      (await newHost.exec('runuser -u postgres -- psql -At -d synapse -c "SELECT count(*) FROM background_updates"')).stdout.trim(),
    ).toBe('0')
  }, 1_800_000)

  it('NEW is the same server: key id and verify key, passwords, the old token, messages, the encrypted room, every media file', async () => {
    const anon = client(newHost, ca)
    const keyFile = (await oldHost.exec(`cat ${OLD_KEY}`)).stdout.trim().split(/\s+/)
    const published = await anon.call<{ verify_keys: Record<string, { key: string }> }>('GET', '/_matrix/key/v2/server')
    expect(Object.keys(published.json.verify_keys)).toEqual([`ed25519:${keyFile[1]}`])
    const { signingKeyIdentity } = await import('../../src/resources/homeserver-state.js')
    expect(published.json.verify_keys[`ed25519:${keyFile[1]}`]!.key).toBe(signingKeyIdentity(keyFile.join(' ')).publicKey)
    const version = await anon.call<{ server: { version: string } }>('GET', '/_matrix/federation/v1/version')
    expect(version.json.server.version).toBe(SYNAPSE_VERSION)
    for (const u of guide.users) {
      const c = client(newHost, ca)
      await c.login(u.name, u.password)
      expect(c.token).toBeTruthy()
    }
    const alice = client(newHost, ca, guide.token)
    expect((await alice.call<{ user_id: string }>('GET', '/_matrix/client/v3/account/whoami')).json.user_id).toBe(`@alice:${SERVER}`)
    expect((await roomBodies(alice, guide.roomId)).filter((b) => b !== undefined).reverse()).toEqual(guide.messages)
    const state = await alice.call<{ algorithm: string }>(
      'GET',
      `/_matrix/client/v3/rooms/${encodeURIComponent(encryptedRoom)}/state/m.room.encryption/`,
    )
    expect(state.json.algorithm).toBe('m.megolm.v1.aes-sha2')
    const secret = await alice.call<{ chunk: { type: string }[] }>(
      'GET',
      `/_matrix/client/v3/rooms/${encodeURIComponent(encryptedRoom)}/messages?dir=b&limit=50`,
    )
    expect(secret.json.chunk.some((e) => e.type === 'm.room.encrypted')).toBe(true)
    for (const m of media) {
      const got = await alice.raw('GET', `/_matrix/client/v1/media/download/${m.uri.replace('mxc://', '')}`)
      expect(got.status, m.uri).toBe(200)
      expect(createHash('sha256').update(got.body).digest('hex')).toBe(m.sha256)
    }
    // As the README's next steps say: OLD leaves the inventory; the rest of it checks NEW.
    const after = join(newEnv.dir, 'after-move.yaml')
    const doc = parseDocument(await readFile(inventory, 'utf8'))
    doc.deleteIn(['hosts', 'old'])
    await writeFile(after, doc.toString())
    const check = await runCli(['check', '--inventory', after], { timeoutMs: 900_000 })
    expect(check.code, check.stdout + check.stderr).toBe(0)
  })

  it("a federating third server accepts NEW's signatures: it fetches OLD's key from NEW, joins a room created on OLD and reads its history signed there, and messages cross both ways", async () => {
    const keyFile = (await oldHost.exec(`cat ${OLD_KEY}`)).stdout.trim().split(/\s+/)
    const keyId = `ed25519:${keyFile[1]}`
    const { signingKeyIdentity } = await import('../../src/resources/homeserver-state.js')
    const thirdClient = (token?: string) => new MatrixClient({ port: third.port(443), hostname: `matrix.${THIRD}`, ca, token })
    const alice = client(newHost, ca, guide.token)
    const carol = thirdClient()
    await carol.login('carol', 'pw-carol-123456')
    const room = encodeURIComponent(guide.roomId)
    const invite = await alice.call('POST', `/_matrix/client/v3/rooms/${room}/invite`, { user_id: `@carol:${THIRD}` })
    expect(invite.status, invite.text).toBe(200)
    await until('the invite on the third server', async () => {
      const s = await carol.call<{ rooms?: { invite?: Record<string, unknown> } }>('GET', '/_matrix/client/v3/sync?timeout=0')
      return s.json.rooms?.invite?.[guide.roomId] ? true : undefined
    })
    // send_join: the third server checks the room's state and auth chain, every event signed by OLD's key.
    const join = await carol.call('POST', `/_matrix/client/v3/join/${room}`, {})
    expect(join.status, join.text).toBe(200)
    type Chunk = { chunk: { type: string; sender: string; content: { body?: string } }[] }
    const bodies = async (c: MatrixClient) =>
      (await c.call<Chunk>('GET', `/_matrix/client/v3/rooms/${room}/messages?dir=b&limit=50`)).json.chunk
        .filter((e) => e.type === 'm.room.message')
        .map((e) => e.content.body)
        .reverse()
    // The history written on OLD before the move, backfilled from NEW (shared history visibility).
    await until('the messages from before the move on the third server', async () =>
      (await bodies(carol)).join('\n') === guide.messages.join('\n') ? true : undefined,
    )
    // The third server's notary endpoint: the key it holds for the server, fetched from NEW (no key server in between).
    const notary = await thirdClient().call<{ server_keys: { server_name: string; verify_keys: Record<string, { key: string }> }[] }>(
      'GET',
      `/_matrix/key/v2/query/${SERVER}`,
    )
    expect(notary.status, notary.text).toBe(200)
    expect(notary.json.server_keys.length).toBeGreaterThan(0)
    for (const k of notary.json.server_keys)
      expect([k.server_name, k.verify_keys[keyId]?.key]).toEqual([SERVER, signingKeyIdentity(keyFile.join(' ')).publicKey])
    const fromNew = `from NEW after the move ${Date.now()}`
    const sent = await alice.call('PUT', `/_matrix/client/v3/rooms/${room}/send/m.room.message/after-move-1`, {
      msgtype: 'm.text',
      body: fromNew,
    })
    expect(sent.status, sent.text).toBe(200)
    await until('the message signed by NEW on the third server', async () => ((await bodies(carol)).includes(fromNew) ? true : undefined))
    const fromThird = `from ${THIRD} ${Date.now()}`
    const reply = await carol.call('PUT', `/_matrix/client/v3/rooms/${room}/send/m.room.message/third-1`, {
      msgtype: 'm.text',
      body: fromThird,
    })
    expect(reply.status, reply.text).toBe(200)
    await until("the third server's message on NEW", async () => ((await bodies(alice)).includes(fromThird) ? true : undefined))
    expect(await bodies(carol)).toEqual([...guide.messages, fromNew, fromThird])
  })

  it('OLD is stopped and masked with its data untouched; a second run changes nothing', async () => {
    expect(await unitStates(oldHost)).not.toContain('active')
    for (const u of OLD_UNITS) expect((await oldHost.exec(`systemctl is-enabled ${u}; true`)).stdout.trim(), u).toBe('masked')
    expect((await oldHost.exec('ls /var/lib/matrix-provision/moved-units/')).stdout.trim()).toBe('matrix-synapse.target')
    expect(await oldDbCounts()).toBe(oldCounts)
    expect((await oldHost.exec(`sha256sum ${OLD_KEY} | cut -d' ' -f1`)).stdout.trim()).toBe(guide.signingKeySha256)
    const pid = (await newHost.exec('systemctl show -p MainPID --value matrix-synapse')).stdout.trim()
    const again = await move()
    expect(again.code, again.stdout + again.stderr).toBe(0)
    expect(again.report.status).toBe('unchanged')
    expect((await newHost.exec('systemctl show -p MainPID --value matrix-synapse')).stdout.trim()).toBe(pid)
  })
})
