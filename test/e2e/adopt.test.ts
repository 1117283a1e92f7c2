import { createHash } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { pipSynapseVars, SYNAPSE_VERSION, synapseWheelhouse } from '../support/artifacts.js'
import { runCli } from '../support/cli.js'
import { buildGuideHost, guideImage, guideWheelhouse, type GuideHost } from '../support/guide-host.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { writeTestInventory } from '../support/inventory.js'
import { MatrixClient } from '../support/matrix-client.js'

const SERVER = 'guide.test'
const PUBLIC = 'matrix.guide.test'
const KEY = `/etc/matrix-synapse/${SERVER}.signing.key`

interface JsonReport {
  hosts: { host: string; status: string; error?: string; adoption?: { notes: { kind: string; found: string; becomes: string }[]; secrets: { name: string }[] }; tasks: { task: string; changes: { resource: string; action: string }[]; restarts: { unit: string }[]; checks: { phase: string; ok: boolean; name: string; detail: string }[] }[] }[]
}

/**
 * A homeserver built by hand the guide's way (Synapse 1.87.0, its Postgres, Redis, two workers in the
 * 2022 form, Apache ProxyPass list, users, a room, messages and media), adopted by `provision adopt`
 * through the built CLI: nothing the users depend on changes, and the rest comes out in today's form.
 */
describe.skipIf(!inject('docker'))('adopting a homeserver built by hand from the guide', () => {
  let env: TestHosts
  let hs: TestHost
  let guide: GuideHost
  let inventory: string
  let ca: string
  const started = Date.now()
  const client = (token?: string) => {
    const c = new MatrixClient({ port: hs.port(443), hostname: PUBLIC, ca })
    c.token = token
    return c
  }
  // What a run must not touch before adoption (the host lock's own files aside).
  const state = async () =>
    (await hs.exec('ls /var/lib/matrix-provision/host.json /var/lib/matrix-provision/secrets 2>&1; sha256sum /etc/matrix-synapse/homeserver.yaml /etc/matrix-synapse/workers/*.yaml /etc/apache2/sites-enabled/* /etc/redis/redis.conf; systemctl show -p MainPID matrix-synapse')).stdout

  beforeAll(async () => {
    const [wheelhouse, suite] = await Promise.all([guideWheelhouse(), guideImage()])
    env = await startHosts(['guide'], { suite, ports: [443], aliases: { guide: [SERVER, PUBLIC] } })
    hs = env.get('guide')
    guide = await buildGuideHost(hs, { serverName: SERVER, publicHost: PUBLIC, wheelhouse: wheelhouse.dir })
    ca = guide.ca
    inventory = await writeTestInventory(env, [{ name: 'guide', roles: ['postgres', 'redis', 'synapse', 'workers', 'apache'] }], {
      serverName: SERVER,
      publicHost: PUBLIC,
      synapse: pipSynapseVars(wheelhouse),
    })
    console.log(`guide host built in ${((Date.now() - started) / 1000).toFixed(0)} s`)
  })
  afterAll(async () => {
    await env?.stop()
    console.log(`adopt.test.ts took ${((Date.now() - started) / 1000).toFixed(0)} s`)
  })

  it('the hand-built server works before adoption: users log in through Apache, the room has its messages', async () => {
    const alice = client(guide.token)
    const whoami = await alice.call<{ user_id: string }>('GET', '/_matrix/client/v3/account/whoami')
    expect(whoami.json.user_id).toBe(`@alice:${SERVER}`)
    const fed = await client().call('GET', '/_matrix/federation/v1/version')
    expect(fed.status).toBe(200)
  })

  it('a plain run and its dry run refuse the host at a before-check that names what it found and points to adopt; nothing changes', async () => {
    const before = await state()
    for (const args of [['--inventory', inventory, '--dry-run'], ['--inventory', inventory]]) {
      const r = await runCli(args)
      expect(r.code, r.stdout + r.stderr).toBe(1)
      expect(r.stdout).toContain('no Synapse set up by hand on this host')
      expect(r.stdout).toContain(`config /etc/matrix-synapse/homeserver.yaml, signing key ${KEY}, database with Synapse data synapse`)
      expect(r.stdout).toContain(`provision adopt --inventory ${inventory} --limit guide --dry-run`)
    }
    expect(await state()).toBe(before)
    expect((await hs.exec('test -e /var/lib/matrix-provision/host.json || test -e /var/lib/matrix-provision/secrets; echo $?')).stdout.trim()).toBe('1')
  })

  let plan: JsonReport
  it('adopt --dry-run reads the server: keeps its identity, takes over its secrets, maps or replaces the rest, changes nothing', async () => {
    const before = await state()
    const text = await runCli(['adopt', '--inventory', inventory, '--limit', 'guide', '--dry-run', '--diff'])
    expect(text.code, text.stdout + text.stderr).toBe(0)
    const json = await runCli(['adopt', '--inventory', inventory, '--limit', 'guide', '--dry-run', '--json'])
    expect(json.code, json.stderr).toBe(0)
    plan = JSON.parse(json.stdout) as JsonReport
    const notes = plan.hosts[0]!.adoption!.notes
    const line = (kind: string, found: string) => notes.find((n) => n.kind === kind && n.found.includes(found))
    expect(line('kept', 'signing_key_path')?.becomes).toContain(KEY)
    expect(line('kept', 'media_store_path')?.becomes).toContain('/var/lib/matrix-synapse/media_store')
    expect(line('kept', 'database')?.becomes).toContain('postgres.database synapse, postgres.user synapse_user')
    expect(plan.hosts[0]!.adoption!.secrets.map((s) => s.name).sort()).toEqual(['form-secret', 'macaroon-secret', 'postgres-password', 'registration-shared-secret'])
    expect(line('replaced', 'daemonize')).toBeDefined()
    expect(line('replaced', 'send_federation')?.becomes).toContain('federation_sender_instances')
    expect(line('replaced', 'workers/federation_reader.yaml: worker_replication_host')).toBeDefined()
    expect(line('retired', `${PUBLIC}.conf`)?.becomes).toContain('get_groups_publicised')
    expect(line('retired', 'daemonize.conf')).toBeDefined()
    // Masked: no secret of the server in either output.
    const secrets = (await hs.exec("grep -E '^(macaroon_secret_key|form_secret|registration_shared_secret):' /etc/matrix-synapse/homeserver.yaml | cut -d'\"' -f2")).stdout.trim().split('\n')
    expect(secrets).toHaveLength(3)
    for (const value of [...secrets, guide.dbPassword]) {
      expect(text.stdout.includes(value) || json.stdout.includes(value), 'a secret in the plan').toBe(false)
    }
    expect(await state()).toBe(before)
    // The example in the README is this output (CAPTURE_EXAMPLES=1 refreshes docs/examples/adopt-plan.txt).
    if (process.env.CAPTURE_EXAMPLES) {
      await mkdir('docs/examples', { recursive: true })
      await writeFile('docs/examples/adopt-plan.txt', text.stdout.replaceAll(inventory, 'guide.yaml'))
    }
  })

  it('adopt applies what the dry run planned, in its order, and every after-check passes', async () => {
    const r = await runCli(['adopt', '--inventory', inventory, '--limit', 'guide', '--json'], { timeoutMs: 900_000 })
    const report = JSON.parse(r.stdout) as JsonReport
    const host = report.hosts[0]!
    console.log(`adopt apply: ${host.tasks.map((t) => `${t.task} ${t.changes.length}`).join(', ')}`)
    expect(host.error ?? host.status, r.stderr).toBe('changed')
    const changes = (x: JsonReport) => x.hosts[0]!.tasks.map((t) => ({ task: t.task, changes: t.changes.map((c) => c.resource), restarts: t.restarts.map((s) => s.unit) }))
    expect(changes(report)).toEqual(changes(plan))
    const after = host.tasks.flatMap((t) => t.checks.filter((c) => c.phase === 'after'))
    expect(after.filter((c) => !c.ok)).toEqual([])
    ca = (await hs.exec(`cat /etc/ssl/matrix-provision/${PUBLIC}.crt`)).stdout
    expect(ca).toContain('BEGIN CERTIFICATE')
  })

  it('the same users log in with the same passwords; the token issued before adoption still works; messages and media are intact', async () => {
    for (const u of guide.users) {
      const c = client()
      await c.login(u.name, u.password)
      expect(c.token).toBeTruthy()
    }
    const alice = client(guide.token)
    const whoami = await alice.call<{ user_id: string }>('GET', '/_matrix/client/v3/account/whoami')
    expect(whoami.status, whoami.text).toBe(200)
    expect(whoami.json.user_id).toBe(`@alice:${SERVER}`)
    const messages = await alice.call<{ chunk: { type: string; content: { body?: string } }[] }>('GET', `/_matrix/client/v3/rooms/${encodeURIComponent(guide.roomId)}/messages?dir=b&limit=50`)
    expect(messages.status).toBe(200)
    const bodies = messages.json.chunk.filter((e) => e.type === 'm.room.message').map((e) => e.content.body).reverse()
    expect(bodies).toEqual(guide.messages)
    const mxc = guide.mediaUri.replace('mxc://', '')
    const media = await alice.raw('GET', `/_matrix/media/v3/download/${mxc}`)
    expect(media.status).toBe(200)
    expect(createHash('sha256').update(media.body).digest('hex')).toBe(guide.mediaSha256)
    expect((await hs.exec(`sha256sum ${KEY} | cut -d' ' -f1`)).stdout.trim()).toBe(guide.signingKeySha256)
    // The server's own key still signs: its key id is what the server publishes.
    const keyId = (await hs.exec(`cut -d' ' -f1-2 ${KEY} | tr ' ' ':'`)).stdout.trim()
    const published = await client().call<{ verify_keys: Record<string, unknown> }>('GET', '/_matrix/key/v2/server')
    expect(Object.keys(published.json.verify_keys)).toEqual([keyId])
  })

  it("the workers run in today's form and serve their routes (the federation_reader's own log)", async () => {
    const files = (await hs.exec('cat /etc/matrix-synapse/workers/federation_reader.yaml /etc/matrix-synapse/workers/federation_sender.yaml')).stdout
    expect(files).not.toContain('worker_replication_host')
    expect(files).not.toContain('synapse.app.federation_sender')
    expect((await hs.exec('grep -c instance_map /etc/matrix-synapse/conf.d/40-workers.yaml')).stdout.trim()).toBe('1')
    for (const unit of ['matrix-synapse', 'matrix-synapse-worker@federation_reader', 'matrix-synapse-worker@federation_sender']) {
      expect((await hs.exec(`systemctl is-active ${unit}`)).stdout.trim(), unit).toBe('active')
    }
    expect((await hs.exec('systemctl show -p Type --value matrix-synapse')).stdout.trim()).toBe('notify')
    const marker = `adopt-${Date.now()}`
    const fed = await client().call('GET', `/_matrix/federation/v1/version?probe=${marker}`)
    expect(fed.status).toBe(200)
    expect(Number((await hs.exec(`grep -c 'probe=${marker}' /var/log/matrix-synapse/federation_reader.log`)).stdout.trim())).toBeGreaterThanOrEqual(1)
    expect(Number((await hs.exec(`grep -c 'probe=${marker}' /var/log/matrix-synapse/homeserver.log`)).stdout.trim() || 0)).toBe(0)
  })

  it('a second run (plain, and adopt again) changes nothing; the host record says adopted', async () => {
    const plain = await runCli(['--inventory', inventory])
    expect(plain.code, plain.stdout + plain.stderr).toBe(0)
    expect(plain.stdout).toContain('guide: no changes')
    const again = await runCli(['adopt', '--inventory', inventory, '--limit', 'guide', '--dry-run'])
    expect(again.code).toBe(0)
    expect(again.stdout).toContain('nothing left to take over; this is a plain run')
    expect(again.stdout).toContain('guide: no changes')
    const record = JSON.parse((await hs.exec('cat /var/lib/matrix-provision/host.json')).stdout)
    expect(record).toMatchObject({ managedBy: 'matrix-provision', origin: 'adopted', adopted: { signingKeyPath: KEY, mediaStorePath: '/var/lib/matrix-synapse/media_store' } })
    expect((await hs.exec('ls /var/lib/matrix-provision/adopted/etc/matrix-synapse/')).stdout).toContain('homeserver.yaml')
  })

  it(`upgrades to the newest pinned Synapse (${SYNAPSE_VERSION}) through the upgrade path; users, the old token, messages, media and the key survive`, async () => {
    const newest = await synapseWheelhouse('3.11')
    await writeTestInventory(env, [{ name: 'guide', roles: ['postgres', 'redis', 'synapse', 'workers', 'apache'] }], { serverName: SERVER, publicHost: PUBLIC, synapse: pipSynapseVars(newest) })
    const r = await runCli(['--inventory', inventory], { timeoutMs: 1_800_000 })
    expect(r.code, r.stdout + r.stderr).toBe(0)
    const version = await client().call<{ server: { version: string } }>('GET', '/_matrix/federation/v1/version')
    expect(version.json.server.version).toBe(SYNAPSE_VERSION)
    for (const u of guide.users) await client().login(u.name, u.password)
    const alice = client(guide.token)
    expect((await alice.call('GET', '/_matrix/client/v3/account/whoami')).status).toBe(200)
    const messages = await alice.call<{ chunk: { type: string; content: { body?: string } }[] }>('GET', `/_matrix/client/v3/rooms/${encodeURIComponent(guide.roomId)}/messages?dir=b&limit=50`)
    expect(messages.json.chunk.filter((e) => e.type === 'm.room.message').map((e) => e.content.body).reverse()).toEqual(guide.messages)
    const media = await alice.raw('GET', `/_matrix/media/v3/download/${guide.mediaUri.replace('mxc://', '')}`)
    expect(createHash('sha256').update(media.body).digest('hex')).toBe(guide.mediaSha256)
    expect((await hs.exec(`sha256sum ${KEY} | cut -d' ' -f1`)).stdout.trim()).toBe(guide.signingKeySha256)
    const again = await runCli(['--inventory', inventory])
    expect(again.code, again.stdout + again.stderr).toBe(0)
    expect(again.stdout).toContain('guide: no changes')
  })
})
