import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { cp, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { buildWheelhouse } from '../../src/artifacts/wheelhouse.js'
import { readLock } from '../../src/inventory/controller-files.js'
import { MANIFEST_FILE } from '../../src/synapse/backup/parts.js'
import type { RestoreReport } from '../../src/commands/backup/restore-types.js'
import { CACHE_DIR, LOCK_DIR } from '../support/artifacts.js'
import { cliOutput, runCli } from '../support/cli.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { writeTestInventory } from '../support/inventory.js'
import { binaryRequest, downloadMedia, MatrixClient, roomBodies } from '../support/matrix-client.js'

const run = promisify(execFile)
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex')
const OLD = '1.158.0'
const NEW = '1.163.2'
const SERVER = 'ro.test'
const PASSWORD = 'alice-pw-30c2d7e1'
const WORKERS = ['matrix-synapse-worker@federation_reader', 'matrix-synapse-worker@federation_sender']

/**
 * A backup taken on an older pinned Synapse (OLD) restored onto a host whose inventory pins the newer
 * one (NEW), in one plan: OLD installed side by side from its lock and wheelhouse (built beside NEW's,
 * as `provision lock --wheelhouse` does), the data restored, OLD started on it, then the inventory's
 * release procedure upgrades to NEW. One host plays both parts: it is provisioned at OLD, used and
 * backed up, upgraded to NEW through the inventory (so it holds data the restore must replace, with
 * --force), then restored from the OLD backup.
 */
describe.skipIf(!inject('docker'))(`restore of a ${OLD} backup onto an inventory pinned at ${NEW}`, () => {
  let env: TestHosts
  let hs: TestHost
  let ca: string
  let inventoryOld: string
  let inventoryNew: string
  let backups: string
  let roomId: string
  let token: string
  const messages: string[] = []
  const media: { mxc: string; sha256: string; bytes: number }[] = []
  const started = Date.now()
  const client = () => new MatrixClient({ port: hs.port(443), hostname: `matrix.${SERVER}`, ca })
  const serving = async () =>
    ((await hs.exec('curl -s http://127.0.0.1:8008/_matrix/federation/v1/version')).stdout.match(/"version":"([^" ]+)/) ?? [])[1]
  const psql = async (sql: string) => (await hs.exec(`runuser -u postgres -- psql -XAt -d synapse -c "${sql}"`)).stdout.trim()

  beforeAll(async () => {
    const wheelhouses: Record<string, string> = {}
    for (const version of [OLD, NEW]) {
      const lock = await readLock(LOCK_DIR, version, 'test/e2e/restore-older.test.ts')
      wheelhouses[version] = (await buildWheelhouse({ lock, pythonVersion: '3.11', cacheDir: `${CACHE_DIR}wheelhouse` })).dir
    }
    env = await startHosts(['ro'], { ports: [443], aliases: { ro: [SERVER, `matrix.${SERVER}`] } })
    hs = env.get('ro')
    const inventoryFor = (version: string) =>
      writeTestInventory(
        env,
        [{ name: 'ro', roles: ['postgres', 'redis', 'synapse', 'workers', 'apache', 'monitoring'] }],
        { serverName: SERVER, synapse: { install: 'pip', version, wheelhouse: wheelhouses[version], lockDir: LOCK_DIR } },
        `inventory-${version}.yaml`,
      )
    inventoryOld = await inventoryFor(OLD)
    inventoryNew = await inventoryFor(NEW)
    backups = join(env.dir, 'backups')
  })
  afterAll(async () => {
    console.log(`restore-older.test.ts wall time ${((Date.now() - started) / 1000).toFixed(1)} s`)
    await env?.stop()
  })

  it(
    `${OLD}: provisioned, a user, a room, messages, media and an access token; provision backup copies it here`,
    async () => {
      const r = await runCli(['--inventory', inventoryOld], { timeoutMs: 45 * 60_000 })
      expect(r.code, cliOutput(r)).toBe(0)
      expect(await serving()).toBe(OLD)
      ca = (await hs.exec(`cat /etc/ssl/matrix-provision/matrix.${SERVER}.crt`)).stdout
      const reg = await hs.exec(
        `printf '%s' '${PASSWORD}' | /opt/venvs/matrix-synapse/bin/register_new_matrix_user -c /etc/matrix-synapse/conf.d/30-secrets.yaml -u alice --password-file /dev/stdin --no-admin http://127.0.0.1:8008`,
      )
      expect(reg.exitCode, reg.output).toBe(0)
      const alice = client()
      await alice.login('alice', PASSWORD)
      token = alice.token!
      const room = await alice.call<{ room_id: string }>('POST', '/_matrix/client/v3/createRoom', { name: 'older' })
      expect(room.status, room.text).toBe(200)
      roomId = room.json.room_id
      for (let i = 0; i < 3; i++) {
        const data = randomBytes(256 * 1024 + i)
        const up = await binaryRequest(alice, 'POST', `/_matrix/media/v3/upload?filename=blob-${i}.bin`, data)
        expect(up.status, up.body.toString()).toBe(200)
        media.push({
          mxc: (JSON.parse(up.body.toString()) as { content_uri: string }).content_uri,
          sha256: sha256(data),
          bytes: data.length,
        })
        const body = `written on ${OLD}: message ${i}`
        messages.push(body)
        const sent = await alice.call('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t${i}`, {
          msgtype: 'm.text',
          body,
        })
        expect(sent.status, sent.text).toBe(200)
      }
      const b = await runCli(['backup', '--inventory', inventoryOld, '--to', backups])
      expect(b.code, cliOutput(b)).toBe(0)
    },
    50 * 60_000,
  )

  it(
    `the host is upgraded to ${NEW} through the inventory and written to afterwards (the restore replaces that)`,
    async () => {
      const r = await runCli(['--inventory', inventoryNew], { timeoutMs: 30 * 60_000 })
      expect(r.code, cliOutput(r)).toBe(0)
      expect(await serving()).toBe(NEW)
      const alice = client()
      alice.token = token
      const sent = await alice.call('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/after`, {
        msgtype: 'm.text',
        body: 'written after the backup',
      })
      expect(sent.status, sent.text).toBe(200)
      // A host that never ran OLD (the new machine of a disaster): its venv is not there to reuse.
      expect((await hs.exec(`rm -rf /opt/venvs/matrix-synapse-${OLD}`)).exitCode).toBe(0)
    },
    35 * 60_000,
  )

  it(`a backup from a newer Synapse than the inventory's is refused, exit 2, nothing changed`, async () => {
    const newer = join(env.dir, 'backup-newer')
    const [dir] = (await run('ls', [backups])).stdout.trim().split('\n')
    await cp(join(backups, dir!), newer, { recursive: true })
    const m = JSON.parse(await readFile(join(newer, MANIFEST_FILE), 'utf8')) as { synapse: { version: string } }
    m.synapse.version = '1.199.0'
    await writeFile(join(newer, MANIFEST_FILE), JSON.stringify(m))
    const before = await psql('select count(*) from events')
    const r = await runCli(['restore', '--inventory', inventoryNew, '--limit', 'ro', '--from', newer, '--force'])
    expect(r.code, cliOutput(r)).toBe(2)
    expect(r.stdout).toMatch(
      /taken with Synapse 1\.199\.0, newer than the inventory's 1\.163\.2: .*Set synapse\.version to "1\.199\.0" or newer/,
    )
    expect(await psql('select count(*) from events')).toBe(before)
    expect(await serving()).toBe(NEW)
  })

  it(
    `provision restore --force: the dry run says ${OLD} side by side, the data, ${OLD} started, the upgrade to ${NEW}; the restore does exactly that`,
    async () => {
      const plan = await runCli([
        'restore',
        '--inventory',
        inventoryNew,
        '--limit',
        'ro',
        '--from',
        backups,
        '--force',
        '--dry-run',
        '--json',
      ])
      expect(plan.code, cliOutput(plan)).toBe(0)
      const planned = JSON.parse(plan.stdout) as RestoreReport
      expect(planned.status).toBe('planned')
      expect(planned.route).toEqual({ from: OLD, to: NEW })
      expect(planned.steps.map((s) => s.action)).toEqual([
        'install-old',
        'stop',
        'signing-key',
        'secrets',
        'database',
        'media',
        'start-old',
        'apply',
      ])
      expect(planned.steps[0]!.summary).toContain(`install Synapse ${OLD} side by side in /opt/venvs/matrix-synapse-${OLD}`)
      expect(planned.steps.at(-1)!.details!.join('\n')).toMatch(
        new RegExp(
          `pg_dump .*synapse-${OLD}-before-${NEW}\\.2\\.dump[^]*switch /opt/venvs/matrix-synapse -> /opt/venvs/matrix-synapse-${NEW}`,
        ),
      )
      expect(await serving()).toBe(NEW)

      const r = await runCli(['restore', '--inventory', inventoryNew, '--limit', 'ro', '--from', backups, '--force', '--json'], {
        timeoutMs: 45 * 60_000,
      })
      expect(r.code, cliOutput(r)).toBe(0)
      const done = JSON.parse(r.stdout) as RestoreReport
      expect(done.status, done.error).toBe('restored')
      expect(done.steps.map((s) => s.summary)).toEqual(planned.steps.map((s) => s.summary))
      // OLD installed beside NEW while NEW served, started on the data (a switch to its venv), then the inventory's upgrade with its dump.
      const installedOld = done.older![0]!.hosts[0]!.tasks.flatMap((t) => t.changes)
      expect(installedOld.map((c) => c.summary).join('\n')).toContain(`install matrix-synapse ${OLD} into /opt/venvs/matrix-synapse-${OLD}`)
      const releaseOf = (rep: NonNullable<RestoreReport['apply']>) =>
        rep.hosts[0]!.tasks.find((t) => t.task === 'synapse')!.changes.find(
          (c) => c.resource === 'synapse-release:/opt/venvs/matrix-synapse',
        )
      const first = releaseOf(done.older!.at(-1)!)
      expect(first?.performed?.find((p) => p.kind === 'switch')?.target).toBe(`/opt/venvs/matrix-synapse-${OLD}`)
      const upgrade = releaseOf(done.apply!)!
      expect(upgrade.summary).toMatch(new RegExp(`upgrade Synapse ${OLD.replace(/\./g, '\\.')} -> ${NEW.replace(/\./g, '\\.')}`))
      expect(upgrade.performed!.filter((p) => p.status === 'failed')).toEqual([])
      // The dump the plan named (the host has the one of its first upgrade already: the next free name).
      const dumped = upgrade.performed!.find((p) => p.kind === 'backup')
      expect(dumped?.status).toBe('done')
      expect(planned.steps.at(-1)!.details![0]).toContain(`to ${dumped!.target} and the signing key`)
      expect(dumped!.target).toBe(`/var/backups/matrix-synapse/synapse-${OLD}-before-${NEW}.2.dump`)
      expect(await serving()).toBe(NEW)
      for (const unit of ['matrix-synapse', ...WORKERS])
        expect((await hs.exec(`systemctl is-active ${unit}`)).stdout.trim(), unit).toBe('active')
    },
    50 * 60_000,
  )

  it('the data is readable by a client, the access token from before works, check passes, a second run changes nothing', async () => {
    const alice = client()
    alice.token = token
    const who = await alice.call<{ user_id: string }>('GET', '/_matrix/client/v3/account/whoami')
    expect(who.status, who.text).toBe(200)
    expect(who.json.user_id).toBe(`@alice:${SERVER}`)
    const bodies = await roomBodies(alice, roomId)
    for (const m of messages) expect(bodies).toContain(m)
    expect(bodies).not.toContain('written after the backup')
    for (const m of media) {
      const dl = await downloadMedia(alice, m.mxc)
      expect(dl.status).toBe(200)
      expect(sha256(dl.body)).toBe(m.sha256)
    }
    const fresh = client()
    await fresh.login('alice', PASSWORD)
    // The data the restore replaced is kept, not dropped.
    expect(
      await hs.exec(`runuser -u postgres -- psql -XAtc "select datname from pg_database where datname like 'synapse_replaced_%'"`),
    ).toMatchObject({
      stdout: expect.stringContaining('synapse_replaced_1') as string,
    })
    const check = await runCli(['check', '--inventory', inventoryNew])
    expect(check.code, cliOutput(check)).toBe(0)
    const again = await runCli(['--inventory', inventoryNew])
    expect(again.code, cliOutput(again)).toBe(0)
    expect(again.stdout).toContain('ro: no changes')
  })
})
