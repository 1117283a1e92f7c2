import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { elementRelease, pipSynapseVars, synapseWheelhouse } from '../support/artifacts.js'
import { startHosts, type TestHosts } from '../support/hosts.js'
import { provision, writeTestInventory } from '../support/inventory.js'
import { MatrixClient } from '../support/matrix-client.js'
import { DEFAULT_SUITE, suiteFacts } from '../support/suites.js'

/** Postgres and Redis on host db; Synapse, workers, Apache and Element on host hs; host other is a stranger. */
describe.skipIf(!inject('docker'))('two hosts: database host and homeserver host', () => {
  let env: TestHosts
  let inventory: string
  const secrets = { DB_PASSWORD: 'two-host-db-secret-1234', REDIS_PASSWORD: 'two-host-redis-secret-5678' }
  const runEnv = { ...process.env, ...secrets }

  beforeAll(async () => {
    const [wheelhouse, element] = await Promise.all([synapseWheelhouse('3.11'), elementRelease()])
    env = await startHosts(['db', 'hs', 'other'], { ports: [443], aliases: { hs: ['two.test', 'matrix.two.test', 'element.two.test'] } })
    inventory = await writeTestInventory(
      env,
      [
        { name: 'db', roles: ['postgres', 'redis'] },
        { name: 'hs', roles: ['synapse', 'workers', 'apache', 'element', 'monitoring'] },
      ],
      {
        serverName: 'two.test',
        postgres: { host: 'db', password: { env: 'DB_PASSWORD' } },
        redis: { host: 'db', password: { env: 'REDIS_PASSWORD' } },
        synapse: pipSynapseVars(wheelhouse),
        element: { version: '1.11.90', file: element.tarball, sha256: element.sha256 },
      },
    )
  })
  afterAll(async () => {
    await env?.stop()
  })

  it('provisions both hosts in one run, every after-check passing', async () => {
    const logFile = join(env.dir, 'first-run.log')
    const r = await provision(['--inventory', inventory, '--json', '--log-file', logFile], runEnv)
    const report = JSON.parse(r.stdout)
    console.log(`two-host first run ${report.durationMs} ms`)
    expect(report.hosts.map((h: { status: string; error?: string }) => h.error ?? h.status), r.stderr).toEqual(['changed', 'changed'])
    // Synapse on hs started its task only once Postgres and Redis on db were done (the log is in event order).
    const events = (await readFile(logFile, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { host?: string; task?: string; msg: string })
    const at = (pred: (e: (typeof events)[number]) => boolean) => events.findIndex(pred)
    const lastDb = (task: string) => events.map((e, i) => (e.host === 'db' && e.task === task ? i : -1)).reduce((a, b) => Math.max(a, b), -1)
    expect(at((e) => e.host === 'hs' && e.msg.startsWith('waiting for postgres on db'))).toBeGreaterThanOrEqual(0)
    const synapseStarts = at((e) => e.host === 'hs' && e.task === 'synapse' && e.msg === 'planning')
    expect(synapseStarts).toBeGreaterThan(lastDb('postgres'))
    expect(synapseStarts).toBeGreaterThan(lastDb('redis'))
    const failed = report.hosts.flatMap((h: { tasks: { checks: { ok: boolean; name: string }[] }[] }) => h.tasks.flatMap((t) => t.checks.filter((c) => !c.ok)))
    expect(failed).toEqual([])
    for (const value of Object.values(secrets)) expect(r.stdout + r.stderr).not.toContain(value)
  })

  it('the homeserver works through Apache with its database and Redis on the other host', async () => {
    const hs = env.get('hs')
    expect((await hs.exec('grep -h "host:" /etc/matrix-synapse/conf.d/20-database.yaml /etc/matrix-synapse/conf.d/40-workers.yaml')).stdout).toContain(env.get('db').ip)
    const reg = await hs.exec("printf 'pw-alice-123456' | /opt/venvs/matrix-synapse/bin/register_new_matrix_user -c /etc/matrix-synapse/conf.d/30-secrets.yaml -u alice --password-file /dev/stdin --no-admin http://127.0.0.1:8008")
    expect(reg.exitCode, reg.output).toBe(0)
    const ca = (await hs.exec('cat /etc/ssl/matrix-provision/matrix.two.test.crt')).stdout
    const client = new MatrixClient({ port: hs.port(443), hostname: 'matrix.two.test', ca })
    await client.login('alice', 'pw-alice-123456')
    const room = await client.call<{ room_id: string }>('POST', '/_matrix/client/v3/createRoom', {})
    const sent = await client.call('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(room.json.room_id)}/send/m.room.message/x1`, { msgtype: 'm.text', body: 'stored on the db host' })
    expect(sent.status).toBe(200)
    expect((await client.call('GET', '/_matrix/client/v3/sync?timeout=0')).text).toContain('stored on the db host')
    // The message really is in the Postgres on host db.
    const rows = await env.get('db').exec(`runuser -u postgres -- psql -d synapse -Atc "select count(*) from event_json where json like '%stored on the db host%'"`)
    expect(rows.stdout.trim()).toBe('1')
    const fed = await client.call('GET', '/_matrix/federation/v1/version')
    expect(fed.status).toBe(200)
    expect((await hs.exec("grep -c 'GET /_matrix/federation/v1/version' /var/log/matrix-synapse/federation_reader.log")).stdout.trim()).not.toBe('0')
  })

  it("db's Postgres and Redis accept only hs", async () => {
    const probe = (from: string, port: number) => env.get(from).exec(`timeout 4 bash -c 'exec 3<>/dev/tcp/db/${port}' && echo open || echo closed`)
    expect((await probe('hs', 5432)).stdout.trim()).toBe('open')
    expect((await probe('hs', 32992)).stdout.trim()).toBe('open')
    expect((await probe('other', 5432)).stdout.trim()).toBe('closed')
    expect((await probe('other', 32992)).stdout.trim()).toBe('closed')
    const hba = await env.get('db').exec(`grep -v "^#" /etc/postgresql/${suiteFacts(DEFAULT_SUITE).postgres}/main/pg_hba.conf | grep synapse`)
    expect(hba.stdout).toContain(`${env.get('hs').ip}/32`)
    expect(hba.stdout).not.toContain(env.get('other').ip)
  })

  it('a second run changes nothing on either host', async () => {
    const r = await provision(['--inventory', inventory], runEnv)
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toContain('db: no changes')
    expect(r.stdout).toContain('hs: no changes')
  })
})
