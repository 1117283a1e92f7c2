import { writeFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { stringify, parse } from 'yaml'
import { readFile } from 'node:fs/promises'
import type { RawInventory } from '../../src/inventory/schema.js'
import { workerInstances } from '../../src/inventory/workers.js'
import { KINDS } from '../../src/synapse/worker-kinds.js'
import type { WorkerPreset } from '../../src/synapse/worker-presets.js'
import { matrixSettings } from '../unit/fixtures/matrix-settings.js'
import { pipSynapseVars, realElementRelease, synapseWheelhouse } from '../support/artifacts.js'
import { execFileSync } from 'node:child_process'
import { cliOutput, runCli } from '../support/cli.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { writeTestInventory } from '../support/inventory.js'
import { MatrixClient } from '../support/matrix-client.js'
import { unexpectedSynapseErrors } from '../support/synapse-journal.js'
import { streamWriterAndMediaRoutes } from '../support/worker-routes.js'

const element = realElementRelease()
const ONE_OF_EACH = workerInstances(matrixSettings({ workers: { preset: 'one-of-each' } }))
const PY = '/opt/venvs/matrix-synapse/bin/python'
const CONFIG = '--config-path=/etc/matrix-synapse/homeserver.yaml --config-path=/etc/matrix-synapse/conf.d/'
/** Fresh provisioning on a loaded 2-core machine took up to 8 minutes (157 s when quieter); the switches 83-109 s. */
const PROVISION_TIMEOUT = 40 * 60_000

/**
 * A live homeserver switched guide -> one-of-each -> guide through the built CLI: every route of the
 * one-of-each set proven by the serving worker's own log, a client flow through Apache, Synapse's own
 * config reader for the stream writers, no error in any log, no data lost, and second runs that
 * change nothing. One host, shared by every step (the steps build on each other).
 */
describe.skipIf(!inject('docker'))('worker topology: guide -> one-of-each -> guide on a live server', () => {
  let env: TestHosts
  let hs: TestHost
  let inventory: string
  let ca: string
  let alice: MatrixClient
  let bob: MatrixClient
  let roomId: string
  let mediaUri: string
  const sent: string[] = []
  const started = Date.now()

  const https = () => new MatrixClient({ port: hs.port(443), hostname: 'matrix.topo.test', ca })
  const setPreset = async (preset: WorkerPreset) => {
    const doc = parse(await readFile(inventory, 'utf8')) as RawInventory
    doc.defaults!.vars!.workers = { preset }
    await writeFile(inventory, stringify(doc))
  }
  const apply = async (args: string[] = []) => {
    const r = await runCli(['--inventory', inventory, ...args], { timeoutMs: PROVISION_TIMEOUT })
    return r
  }
  /** Lines of a worker's (or main's) log that carry this marker. */
  const logged = async (name: string, marker: string) =>
    Number((await hs.exec(`grep -c -- ${JSON.stringify(marker)} /var/log/matrix-synapse/${name}.log || true`)).stdout.trim() || 0)
  /** Errors of every Synapse process this host ever ran, but Synapse's own shutdown race (test/support/synapse-journal.ts). */
  const unexpectedErrors = async () =>
    unexpectedSynapseErrors((await hs.exec("journalctl --no-pager -o short-unix -u 'matrix-synapse*'")).stdout)
  const sendText = async (body: string) => {
    const r = await alice.call<{ event_id: string }>(
      'PUT',
      `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/${encodeURIComponent(body)}`,
      { msgtype: 'm.text', body },
    )
    expect(r.status, r.text).toBe(200)
    sent.push(body)
    return r.json.event_id
  }

  beforeAll(async () => {
    const wheelhouse = await synapseWheelhouse('3.11')
    env = await startHosts(['topo'], { ports: [443], aliases: { topo: ['topo.test', 'matrix.topo.test', 'element.topo.test'] } })
    hs = env.get('topo')
    inventory = await writeTestInventory(
      env,
      [{ name: 'topo', roles: ['postgres', 'redis', 'synapse', 'workers', 'apache', 'element', 'monitoring'] }],
      {
        serverName: 'topo.test',
        synapse: pipSynapseVars(wheelhouse),
        element: { version: element.version, file: element.file, sha256: element.sha256 },
        workers: { preset: 'guide' },
      },
    )
  })
  afterAll(async () => {
    console.log(`worker-topology file: ${Math.round((Date.now() - started) / 1000)} s`)
    await env?.stop()
  })

  it(
    'guide: provisions from nothing; users, a room and a message to keep',
    async () => {
      const r = await apply()
      expect(r.code, cliOutput(r)).toBe(0)
      console.log(`guide fresh run ${r.durationMs} ms`)
      ca = (await hs.exec('cat /etc/ssl/matrix-provision/matrix.topo.test.crt')).stdout
      for (const user of ['alice', 'bob']) {
        const reg = await hs.exec(
          `printf 'pw-${user}-123456' | ${PY.replace('python', 'register_new_matrix_user')} -c /etc/matrix-synapse/conf.d/30-secrets.yaml -u ${user} --password-file /dev/stdin --no-admin http://127.0.0.1:8008`,
        )
        expect(reg.exitCode, reg.output).toBe(0)
      }
      alice = https()
      bob = https()
      await alice.login('alice', 'pw-alice-123456')
      await bob.login('bob', 'pw-bob-123456')
      const room = await alice.call<{ room_id: string }>('POST', '/_matrix/client/v3/createRoom', { invite: ['@bob:topo.test'] })
      expect(room.status, room.text).toBe(200)
      roomId = room.json.room_id
      expect((await bob.call('POST', `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, {})).status).toBe(200)
      await sendText('sent under guide')
      const upload = await alice.call<{ content_uri: string }>('POST', '/_matrix/media/v3/upload?filename=guide.txt', Buffer.from('x'))
      expect(upload.status, upload.text).toBe(200)
      mediaUri = upload.json.content_uri
    },
    PROVISION_TIMEOUT,
  )

  it("the real Element release: every one of its files is served at its path through Apache (no 404: its icons/ are not Debian's)", async () => {
    const prefix = `element-v${element.version}/`
    const files = execFileSync('tar', ['-tzf', element.file], { encoding: 'utf8', maxBuffer: 64 << 20 })
      .split('\n')
      .filter((f) => f.startsWith(prefix) && !f.endsWith('/'))
      .map((f) => f.slice(prefix.length))
    expect(files.length).toBeGreaterThan(700)
    expect(files.filter((f) => f.startsWith('icons/')).length).toBeGreaterThan(70)
    const web = new MatrixClient({ port: hs.port(443), hostname: 'element.topo.test', ca })
    const failed: string[] = []
    // Eight at a time: 801 requests, a few seconds.
    for (let i = 0; i < files.length; i += 8) {
      const batch = files.slice(i, i + 8)
      const got = await Promise.all(batch.map((f) => web.raw('GET', '/' + f.split('/').map(encodeURIComponent).join('/'))))
      got.forEach((r, j) => r.status !== 200 && failed.push(`${r.status} /${batch[j]}`))
    }
    console.log(`real Element ${element.version}: ${files.length} files requested, ${failed.length} not 200`)
    expect(failed).toEqual([])
    // Apache's own icons are not what this vhost serves.
    expect((await web.raw('GET', '/icons/apache_pb.png')).status).toBe(404)
  })

  it(
    'one-of-each: the switch converges through the CLI, every unit up, and a second run changes nothing',
    async () => {
      await setPreset('one-of-each')
      const r = await apply()
      expect(r.code, cliOutput(r)).toBe(0)
      console.log(`guide -> one-of-each run ${r.durationMs} ms`)
      const units = ONE_OF_EACH.map((w) => `matrix-synapse-worker@${w.name}`)
      const active = await hs.exec(`systemctl is-active matrix-synapse ${units.join(' ')}`)
      expect(active.stdout.trim().split('\n')).toEqual(Array(units.length + 1).fill('active'))
      // The guide's federation_reader left (stopped, files gone); federation_sender is in both sets and stays.
      expect((await hs.exec('systemctl is-active matrix-synapse-worker@federation_reader || true')).stdout.trim()).toBe('inactive')
      expect((await hs.exec('ls /etc/matrix-synapse/workers')).stdout.trim().split('\n').sort()).toEqual(
        ONE_OF_EACH.map((w) => `${w.name}.yaml`).sort(),
      )
      const again = await apply()
      expect(again.code, cliOutput(again)).toBe(0)
      expect(again.stdout).toContain('topo: no changes')
      // The converged full-stack run with 16 processes (bench/workers.js times it too): where its time goes.
      const timed = await apply(['--json'])
      expect(timed.code, cliOutput(timed)).toBe(0)
      const report = JSON.parse(timed.stdout) as {
        durationMs: number
        totals: { add: number; change: number; restart: number }
        hosts: { tasks: { task: string; durationMs: number }[] }[]
      }
      expect(report.totals).toMatchObject({ add: 0, change: 0, restart: 0 })
      console.log(
        `converged one-of-each run: ${timed.durationMs} ms spawn to exit, ${report.durationMs} ms in the engine; tasks: ${report.hosts[0]!.tasks.map((t) => `${t.task} ${t.durationMs}`).join(', ')}`,
      )
      // Memory each process holds once started (README figures).
      const rss = await hs.exec(
        `for u in matrix-synapse ${units.join(' ')}; do echo "$u $(systemctl show -p MemoryCurrent --value $u)"; done`,
      )
      console.log(`memory per process (bytes):\n${rss.stdout}`)
    },
    PROVISION_TIMEOUT,
  )

  it("Synapse's own config reader confirms the stream writer map and the duties", async () => {
    const read = async (key: string) =>
      (await hs.exec(`cd /var/lib/matrix-synapse && runuser -u matrix-synapse -- ${PY} -m synapse.config read ${key} ${CONFIG}`)).stdout
    const writers = await read('worker.writers')
    for (const w of ONE_OF_EACH.filter((x) => KINDS[x.kind].streams.length > 0)) {
      for (const stream of KINDS[w.kind].streams) expect(writers, writers).toContain(`${stream}=['${w.name}']`)
    }
    expect(writers).toContain("thread_subscriptions=['master']")
    expect(await read('worker.send_federation')).toMatch(/False/)
    expect(await read('media.can_load_media_repo')).toMatch(/False/)
    expect(await read('worker.run_background_tasks')).toMatch(/False/)
  })

  it('a client flow through Apache: each route answered by its own worker (its log), main untouched', async () => {
    const m = `probe-${Date.now()}`
    const room = encodeURIComponent(roomId)
    const expectServedBy = async (name: string, marker: string) => {
      expect(await logged(name, marker), `${marker} in ${name}.log`).toBeGreaterThanOrEqual(1)
      expect(await logged('homeserver', marker), `${marker} not in homeserver.log`).toBe(0)
    }
    // Login and room creation: the generic worker.
    const fresh = https()
    const login = await fresh.call<{ access_token: string }>('POST', `/_matrix/client/v3/login?${m}-login`, {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: 'alice' },
      password: 'pw-alice-123456',
    })
    expect(login.status, login.text).toBe(200)
    await expectServedBy('generic', `${m}-login`)
    const created = await alice.call('POST', `/_matrix/client/v3/createRoom?${m}-create`, {})
    expect(created.status).toBe(200)
    await expectServedBy('generic', `${m}-create`)
    // A message: created by the generic worker, persisted by the events writer (the database says who wrote it).
    const send = await alice.call<{ event_id: string }>('PUT', `/_matrix/client/v3/rooms/${room}/send/m.room.message/t-${m}?${m}-send`, {
      msgtype: 'm.text',
      body: 'sent under one-of-each',
    })
    expect(send.status, send.text).toBe(200)
    sent.push('sent under one-of-each')
    await expectServedBy('generic', `${m}-send`)
    // Event IDs start with $: single-quoted for the shell, doubled quotes for SQL.
    const writer = await hs.exec(
      `runuser -u postgres -- psql -d synapse -Atc 'select instance_name from events where event_id = '"'"'${send.json.event_id}'"'"''`,
    )
    expect(writer.stdout.trim()).toBe('events')
    // Stream writers, the media worker, and sync on the generic worker.
    await streamWriterAndMediaRoutes({
      alice,
      bob,
      serverName: 'topo.test',
      roomId,
      sent: { eventId: send.json.event_id, body: 'sent under one-of-each' },
      marker: m,
      expectServedBy,
    })
    // The guide-era upload is still there.
    expect((await alice.call('GET', `/_matrix/client/v1/media/download/${mediaUri.replace('mxc://', '')}`)).text).toBe('x')
    // Element X's simplified sliding sync: the sync worker too (each list needs ranges, timeline_limit, required_state).
    const sliding = await bob.call<{ pos?: string; rooms?: Record<string, unknown> }>(
      'POST',
      `/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0&${m}-sliding`,
      {
        lists: { all: { ranges: [[0, 10]], timeline_limit: 1, required_state: [['m.room.name', '']] } },
      },
    )
    expect(sliding.status, sliding.text).toBe(200)
    expect(typeof sliding.json.pos).toBe('string')
    expect(Object.keys(sliding.json.rooms ?? {})).toContain(roomId)
    await expectServedBy('generic', `${m}-sliding`)
    // Federation requests: the generic worker too.
    expect((await https().call('GET', `/_matrix/federation/v1/version?${m}-fed`)).status).toBe(200)
    await expectServedBy('generic', `${m}-fed`)
  })

  it('every worker is scraped: each metrics listener answers', async () => {
    for (const w of ONE_OF_EACH) {
      const r = await hs.exec(`curl -sf http://127.0.0.1:${w.metricsPort}/_synapse/metrics | grep -c '^python_info'`)
      expect(r.stdout.trim(), w.name).toBe('1')
    }
  })

  it(
    'back to guide: converges, the one-of-each workers are gone, nothing lost, no error in any log, second run unchanged',
    async () => {
      await setPreset('guide')
      const r = await apply()
      expect(r.code, cliOutput(r)).toBe(0)
      console.log(`one-of-each -> guide run ${r.durationMs} ms`)
      expect((await hs.exec('ls /etc/matrix-synapse/workers')).stdout.trim().split('\n').sort()).toEqual([
        'federation_reader.yaml',
        'federation_sender.yaml',
      ])
      expect((await hs.exec('systemctl list-units --no-legend --state=active "matrix-synapse-worker@*" | wc -l')).stdout.trim()).toBe('2')
      await sendText('sent under guide again')
      const sync = await alice.call('GET', '/_matrix/client/v3/sync?timeout=0')
      for (const body of sent) expect(sync.text, body).toContain(body)
      // Media stored by the media worker is served by main again.
      expect((await alice.call('GET', `/_matrix/client/v1/media/download/${mediaUri.replace('mxc://', '')}`)).text).toBe('x')
      const again = await apply()
      expect(again.code, cliOutput(again)).toBe(0)
      expect(again.stdout).toContain('topo: no changes')
      expect(await unexpectedErrors()).toEqual([])
    },
    PROVISION_TIMEOUT,
  )
})
