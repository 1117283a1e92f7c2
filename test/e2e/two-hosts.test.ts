import { randomBytes } from 'node:crypto'
import { readdirSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { parse, stringify } from 'yaml'
import type { RawInventory } from '../../src/inventory/schema.js'
import { workerInstances } from '../../src/inventory/workers.js'
import { KINDS } from '../../src/synapse/worker-kinds.js'
import { matrixSettings } from '../unit/fixtures/matrix-settings.js'
import { elementRelease, LOCK_DIR, pipSynapseVars, synapseWheelhouse } from '../support/artifacts.js'
import { lockDrift, parseVenvContents, VENV_CONTENTS_SCRIPT } from '../../src/synapse/lock/drift.js'
import { readLock } from '../../src/inventory/controller-files.js'
import { shellQuote } from '../../src/core/quote.js'
import type { Change, Step } from '../../src/resources/resource.js'
import { guideWheelhouse } from '../support/guide-host.js'
import { cliOutput, jsonReport, runCli } from '../support/cli.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { provision, writeTestInventory } from '../support/inventory.js'
import { MatrixClient } from '../support/matrix-client.js'
import { unexpectedSynapseErrors } from '../support/synapse-journal.js'
import { streamWriterAndMediaRoutes } from '../support/worker-routes.js'
import { DEFAULT_SUITE, suiteFacts } from '../support/suites.js'

const run = promisify(execFile)
const ONE_OF_EACH = workerInstances(matrixSettings({ workers: { preset: 'one-of-each' } }))
/** The workers the spread set places on db: the generic worker and the media repository. */
const ON_DB = ['generic', 'media_repository']
const PY = '/opt/venvs/matrix-synapse/bin/python'
const CONFIG = '--config-path=/etc/matrix-synapse/homeserver.yaml --config-path=/etc/matrix-synapse/conf.d/'
/** Starting 15 workers on two hosts of a loaded 2-core machine takes long. */
const SPREAD_TIMEOUT = 30 * 60_000

/**
 * Postgres and Redis on host db; Synapse, workers, Apache and Element on host hs; host other is a
 * stranger. Then the same live server spread over both hosts: one-of-each, its generic worker and
 * media repository on db (beside Postgres and Redis), main and the stream writers on hs.
 */
describe.skipIf(!inject('docker'))('two hosts: database host and homeserver host', () => {
  let env: TestHosts
  let inventory: string
  // Every secret the workers on db read too is given, not generated on hs (the loader asks for it once they spread).
  const secrets = {
    DB_PASSWORD: 'two-host-db-secret-1234',
    REDIS_PASSWORD: 'two-host-redis-secret-5678',
    MACAROON: 'two-host-macaroon-secret-0123456789',
    FORM: 'two-host-form-secret-0123456789',
    REGISTRATION: 'two-host-registration-secret-0123456789',
    REPLICATION: 'two-host-replication-secret-0123456789',
    SIGNING_KEY: `ed25519 a_two ${randomBytes(32).toString('base64').replace(/=+$/, '')}`,
  }
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
        synapse: {
          ...pipSynapseVars(wheelhouse),
          macaroonSecret: { env: 'MACAROON' },
          formSecret: { env: 'FORM' },
          registrationSharedSecret: { env: 'REGISTRATION' },
          signingKey: { env: 'SIGNING_KEY' },
        },
        workers: { replicationSecret: { env: 'REPLICATION' } },
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
    const report = jsonReport(r.stdout)
    console.log(`two-host first run ${report.durationMs} ms`)
    expect(
      report.hosts.map((h: { status: string; error?: string }) => h.error ?? h.status),
      r.stderr,
    ).toEqual(['changed', 'changed'])
    // Synapse on hs started its task only once Postgres and Redis on db were done (the log is in event order).
    const events = (await readFile(logFile, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { host?: string; task?: string; msg: string })
    const at = (pred: (e: (typeof events)[number]) => boolean) => events.findIndex(pred)
    const lastDb = (task: string) =>
      events.map((e, i) => (e.host === 'db' && e.task === task ? i : -1)).reduce((a, b) => Math.max(a, b), -1)
    expect(at((e) => e.host === 'hs' && e.msg.startsWith('waiting for postgres on db'))).toBeGreaterThanOrEqual(0)
    const synapseStarts = at((e) => e.host === 'hs' && e.task === 'synapse' && e.msg === 'planning')
    expect(synapseStarts).toBeGreaterThan(lastDb('postgres'))
    expect(synapseStarts).toBeGreaterThan(lastDb('redis'))
    const failed = report.hosts.flatMap((h: { tasks: { checks: { ok: boolean; name: string }[] }[] }) =>
      h.tasks.flatMap((t) => t.checks.filter((c) => !c.ok)),
    )
    expect(failed).toEqual([])
    for (const value of Object.values(secrets)) expect(r.stdout + r.stderr).not.toContain(value)
  })

  it('the homeserver works through Apache with its database and Redis on the other host', async () => {
    const hs = env.get('hs')
    expect(
      (await hs.exec('grep -h "host:" /etc/matrix-synapse/conf.d/20-database.yaml /etc/matrix-synapse/conf.d/40-workers.yaml')).stdout,
    ).toContain(env.get('db').ip)
    const reg = await hs.exec(
      "printf 'pw-alice-123456' | /opt/venvs/matrix-synapse/bin/register_new_matrix_user -c /etc/matrix-synapse/conf.d/30-secrets.yaml -u alice --password-file /dev/stdin --no-admin http://127.0.0.1:8008",
    )
    expect(reg.exitCode, reg.output).toBe(0)
    const ca = (await hs.exec('cat /etc/ssl/matrix-provision/matrix.two.test.crt')).stdout
    const client = new MatrixClient({ port: hs.port(443), hostname: 'matrix.two.test', ca })
    await client.login('alice', 'pw-alice-123456')
    const room = await client.call<{ room_id: string }>('POST', '/_matrix/client/v3/createRoom', {})
    const sent = await client.call('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(room.json.room_id)}/send/m.room.message/x1`, {
      msgtype: 'm.text',
      body: 'stored on the db host',
    })
    expect(sent.status).toBe(200)
    expect((await client.call('GET', '/_matrix/client/v3/sync?timeout=0')).text).toContain('stored on the db host')
    // The message really is in the Postgres on host db.
    const rows = await env
      .get('db')
      .exec(`runuser -u postgres -- psql -d synapse -Atc "select count(*) from event_json where json like '%stored on the db host%'"`)
    expect(rows.stdout.trim()).toBe('1')
    const fed = await client.call('GET', '/_matrix/federation/v1/version')
    expect(fed.status).toBe(200)
    expect(
      (await hs.exec("grep -c 'GET /_matrix/federation/v1/version' /var/log/matrix-synapse/federation_reader.log")).stdout.trim(),
    ).not.toBe('0')
  })

  it("db's Postgres and Redis accept only hs", async () => {
    const probe = (from: string, port: number) =>
      env.get(from).exec(`timeout 4 bash -c 'exec 3<>/dev/tcp/db/${port}' && echo open || echo closed`)
    expect((await probe('hs', 5432)).stdout.trim()).toBe('open')
    expect((await probe('hs', 32992)).stdout.trim()).toBe('open')
    expect((await probe('other', 5432)).stdout.trim()).toBe('closed')
    expect((await probe('other', 32992)).stdout.trim()).toBe('closed')
    const hba = await env
      .get('db')
      .exec(`grep -v "^#" /etc/postgresql/${suiteFacts(DEFAULT_SUITE).postgres}/main/pg_hba.conf | grep synapse`)
    expect(hba.stdout).toContain(`${env.get('hs').ip}/32`)
    expect(hba.stdout).not.toContain(env.get('other').ip)
  })

  it('a second run changes nothing on either host', async () => {
    const r = await provision(['--inventory', inventory], runEnv)
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toContain('db: no changes')
    expect(r.stdout).toContain('hs: no changes')
  })

  // ---- The same server spread over both hosts: one-of-each, generic and media_repository on db ----

  let hs: TestHost
  let db: TestHost
  let ca: string
  let alice: MatrixClient
  let bob: MatrixClient
  let roomId: string
  /** Unix time the spread run started at: journals are read from here. */
  let since: number
  const spreadApply = () => runCli(['--inventory', inventory], { env: runEnv, timeoutMs: SPREAD_TIMEOUT })
  /** The host a worker of the spread set runs on. */
  const hostOf = (name: string) => (ON_DB.includes(name) ? db : hs)
  const logged = async (host: TestHost, name: string, marker: string) =>
    Number((await host.exec(`grep -c -- ${JSON.stringify(marker)} /var/log/matrix-synapse/${name}.log || true`)).stdout.trim() || 0)
  const https = () => new MatrixClient({ port: hs.port(443), hostname: 'matrix.two.test', ca })

  it(
    'spreads to one-of-each over both hosts through bin/provision.js: generic and media on db, main and the stream writers on hs',
    async () => {
      hs = env.get('hs')
      db = env.get('db')
      const doc = parse(await readFile(inventory, 'utf8')) as RawInventory
      const vars = doc.defaults!.vars!
      vars.workers = { ...vars.workers, preset: 'one-of-each', placement: { generic: 'db', media_repository: 'db' } }
      doc.hosts.db!.roles = [...doc.hosts.db!.roles, 'workers']
      await writeFile(inventory, stringify(doc))
      // Users and a room from before the switch, kept across it.
      for (const user of ['bob']) {
        const reg = await hs.exec(
          `printf 'pw-${user}-123456' | /opt/venvs/matrix-synapse/bin/register_new_matrix_user -c /etc/matrix-synapse/conf.d/30-secrets.yaml -u ${user} --password-file /dev/stdin --no-admin http://127.0.0.1:8008`,
        )
        expect(reg.exitCode, reg.output).toBe(0)
      }
      since = Math.floor(Date.now() / 1000)
      const r = await spreadApply()
      expect(r.code, cliOutput(r)).toBe(0)
      console.log(`guide -> one-of-each over two hosts: ${r.durationMs} ms`)
      const onHs = ONE_OF_EACH.filter((w) => !ON_DB.includes(w.name)).map((w) => `matrix-synapse-worker@${w.name}`)
      expect((await hs.exec(`systemctl is-active matrix-synapse ${onHs.join(' ')}`)).stdout.trim().split('\n')).toEqual(
        Array(onHs.length + 1).fill('active'),
      )
      expect(
        (await db.exec(`systemctl is-active ${ON_DB.map((n) => `matrix-synapse-worker@${n}`).join(' ')}`)).stdout.trim().split('\n'),
      ).toEqual(['active', 'active'])
      // Each host runs only its own workers; db has no main process.
      expect((await hs.exec('ls /etc/matrix-synapse/workers')).stdout.trim().split('\n').sort()).toEqual(
        onHs.map((u) => `${u.replace('matrix-synapse-worker@', '')}.yaml`).sort(),
      )
      expect((await db.exec('ls /etc/matrix-synapse/workers')).stdout.trim().split('\n').sort()).toEqual(
        ON_DB.map((n) => `${n}.yaml`).sort(),
      )
      expect((await db.exec('systemctl is-active matrix-synapse || true')).stdout.trim()).not.toBe('active')
      // The same signing key on both, the service user's alone.
      for (const host of [hs, db]) {
        expect((await host.exec('stat -c "%U %a" /etc/matrix-synapse/homeserver.signing.key')).stdout.trim()).toBe('matrix-synapse 600')
        expect((await host.exec('cat /etc/matrix-synapse/homeserver.signing.key')).stdout.trim()).toBe(secrets.SIGNING_KEY)
      }
      for (const value of Object.values(secrets)) expect(r.stdout + r.stderr).not.toContain(value)
    },
    SPREAD_TIMEOUT,
  )

  it("listeners other hosts reach bind to the private addresses, instance_map names them, and only the homeserver's hosts get through", async () => {
    const listening = async (host: TestHost) => (await host.exec("ss -Htln | awk '{print $4}'")).stdout
    const hsListen = await listening(hs)
    expect(hsListen).toContain(`${hs.ip}:32993`) // main's replication listener
    const typing = ONE_OF_EACH.find((w) => w.name === 'typing')!
    expect(hsListen).toContain(`${hs.ip}:${typing.replicationPort}`)
    expect(hsListen).not.toMatch(/0\.0\.0\.0:(32993|18\d\d\d)\b/)
    const generic = ONE_OF_EACH.find((w) => w.name === 'generic')!
    const dbListen = await listening(db)
    expect(dbListen).toContain(`${db.ip}:${generic.port}`)
    expect(dbListen).toContain(`${db.ip}:${generic.metricsPort}`)
    expect(dbListen).not.toMatch(/0\.0\.0\.0:18\d\d\d\b/)
    const map = (await hs.exec('grep -A40 instance_map /etc/matrix-synapse/conf.d/40-workers.yaml')).stdout
    expect(map).toContain(hs.ip)
    const probe = (from: string, host: string, port: number) =>
      env.get(from).exec(`timeout 4 bash -c 'exec 3<>/dev/tcp/${host}/${port}' && echo open || echo closed`)
    expect((await probe('db', 'hs', 32993)).stdout.trim()).toBe('open')
    expect((await probe('hs', 'db', generic.port!)).stdout.trim()).toBe('open')
    expect((await probe('other', 'hs', 32993)).stdout.trim()).toBe('closed')
    expect((await probe('other', 'hs', typing.replicationPort!)).stdout.trim()).toBe('closed')
    expect((await probe('other', 'db', generic.port!)).stdout.trim()).toBe('closed')
    expect((await probe('other', 'db', generic.metricsPort)).stdout.trim()).toBe('closed')
    // Our own table, beside any other: nothing else flushed.
    expect((await hs.exec('nft list tables')).stdout).toContain('inet mp_synapse')
  })

  it("Synapse's own config reader confirms the stream writer map, on both hosts", async () => {
    for (const host of [hs, db]) {
      const read = async (key: string) =>
        (await host.exec(`cd /var/lib/matrix-synapse && runuser -u matrix-synapse -- ${PY} -m synapse.config read ${key} ${CONFIG}`)).stdout
      const writers = await read('worker.writers')
      for (const w of ONE_OF_EACH.filter((x) => KINDS[x.kind].streams.length > 0)) {
        for (const stream of KINDS[w.kind].streams) expect(writers, writers).toContain(`${stream}=['${w.name}']`)
      }
      expect(await read('worker.instance_map')).toContain(hs.ip)
    }
  })

  it('a client flow through Apache on hs: each route answered by its own worker on its host (its log), main untouched', async () => {
    ca = (await hs.exec('cat /etc/ssl/matrix-provision/matrix.two.test.crt')).stdout
    alice = https()
    bob = https()
    const m = `probe-${Date.now()}`
    const expectServedBy = async (name: string, marker: string) => {
      expect(await logged(hostOf(name), name, marker), `${marker} in ${name}.log`).toBeGreaterThanOrEqual(1)
      expect(await logged(hs, 'homeserver', marker), `${marker} not in homeserver.log`).toBe(0)
    }
    const login = await https().call<{ access_token: string }>('POST', `/_matrix/client/v3/login?${m}-login`, {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: 'alice' },
      password: 'pw-alice-123456',
    })
    expect(login.status, login.text).toBe(200)
    await alice.login('alice', 'pw-alice-123456')
    await expectServedBy('generic', `${m}-login`)
    await bob.login('bob', 'pw-bob-123456')
    const created = await alice.call<{ room_id: string }>('POST', `/_matrix/client/v3/createRoom?${m}-create`, {
      invite: ['@bob:two.test'],
    })
    expect(created.status, created.text).toBe(200)
    roomId = created.json.room_id
    await expectServedBy('generic', `${m}-create`)
    const room = encodeURIComponent(roomId)
    expect((await bob.call('POST', `/_matrix/client/v3/join/${room}`, {})).status).toBe(200)
    const send = await alice.call<{ event_id: string }>('PUT', `/_matrix/client/v3/rooms/${room}/send/m.room.message/t-${m}?${m}-send`, {
      msgtype: 'm.text',
      body: 'sent over two hosts',
    })
    expect(send.status, send.text).toBe(200)
    await expectServedBy('generic', `${m}-send`)
    // Created by the generic worker on db, persisted by the events writer on hs (the database says who wrote it).
    const writer = await db.exec(
      `runuser -u postgres -- psql -d synapse -Atc 'select instance_name from events where event_id = '"'"'${send.json.event_id}'"'"''`,
    )
    expect(writer.stdout.trim()).toBe('events')
    // Stream writers on hs, media on db, sync on db's generic worker.
    await streamWriterAndMediaRoutes({
      alice,
      bob,
      serverName: 'two.test',
      roomId,
      sent: { eventId: send.json.event_id, body: 'sent over two hosts' },
      marker: m,
      expectServedBy,
    })
    expect((await db.exec(`grep -rl -- bytes-${m} /var/lib/matrix-synapse/media/local_content`)).stdout.trim()).not.toBe('')
    expect((await https().call('GET', `/_matrix/federation/v1/version?${m}-fed`)).status).toBe(200)
    await expectServedBy('generic', `${m}-fed`)
    // The message from before the spread is still there.
    expect((await alice.call('GET', '/_matrix/client/v3/sync?timeout=0')).text).toContain('stored on the db host')
  })

  it("every worker's metrics answer from hs, where monitoring scrapes them: those on db at db's private address", async () => {
    for (const w of ONE_OF_EACH) {
      const address = ON_DB.includes(w.name) ? db.ip : '127.0.0.1'
      const r = await hs.exec(`curl -sf http://${address}:${w.metricsPort}/_synapse/metrics | grep -c '^python_info'`)
      expect(r.stdout.trim(), w.name).toBe('1')
    }
  })

  it(
    'no error in any Synapse log or journal on either host, and a second run changes nothing',
    async () => {
      const again = await spreadApply()
      expect(again.code, cliOutput(again)).toBe(0)
      expect(again.stdout).toContain('db: no changes')
      expect(again.stdout).toContain('hs: no changes')
      for (const host of [hs, db]) {
        // Synapse's own shutdown race (a send-cmd in flight loses Redis after "Shutting down...") is allowed; nothing else.
        const journal = (await host.exec(`journalctl --since @${since} -u 'matrix-synapse*' --no-pager -o short-unix`)).stdout
        expect(unexpectedSynapseErrors(journal), host.name).toEqual([])
      }
    },
    SPREAD_TIMEOUT,
  )

  it('provision backup of the spread server takes the media from db, where the media repository stores it', async () => {
    const to = join(env.dir, 'backups-spread')
    const r = await runCli(['backup', '--inventory', inventory, '--to', to, '--json'], { env: runEnv })
    expect(r.code, cliOutput(r)).toBe(0)
    const report = JSON.parse(r.stdout) as { hosts: { host: string; status: string; dir: string }[] }
    expect(report.hosts.map((h) => [h.host, h.status])).toEqual([['hs', 'ok']])
    // The bytes uploaded through the media worker on db (the client flow above) are in the backup's media part.
    const media = await run('tar', ['-xOf', join(report.hosts[0]!.dir, 'media.tar')], { maxBuffer: 1 << 26, encoding: 'latin1' })
    expect(media.stdout).toMatch(/bytes-\w/)
    expect((await hs.exec('find /var/lib/matrix-synapse/media/local_content -type f 2>/dev/null | wc -l')).stdout.trim()).toBe('0')
  })

  // Issue 21 on a worker host: its running venv is never installed into either. Drift from the lock (a pin
  // changed by hand) is repaired by a venv built beside it; a rebuild whose install fails (no index
  // reachable) leaves the running venv byte-identical and the workers serving.
  it(
    "a worker host's running venv that drifted from its lock is rebuilt beside it: a failed rebuild leaves it byte-identical and its workers running; a later run switches to the rebuilt one",
    async () => {
      const LINK = '/opt/venvs/matrix-synapse'
      const live = (await db.exec(`readlink -f ${LINK}`)).stdout.trim()
      const V = live.replace(`${LINK}-`, '')
      const DB_UNITS = ON_DB.map((n) => `matrix-synapse-worker@${n}.service`)
      type Json = { hosts: { host: string; error?: string; tasks: { task: string; changes: Change[] }[] }[] }
      const releaseOn = (r: Json) =>
        r.hosts
          .find((h) => h.host === 'db')!
          .tasks.flatMap((t) => t.changes)
          .find((c) => c.resource === `synapse-release:${LINK}`)
      const seq = (steps: Step[]) => steps.map((x) => `${x.kind} ${x.target}`)
      const treeHash = async (dir: string) => {
        const r = await db.exec(
          `cd ${dir} && { find . -printf '%p %y %m %U:%G %s %T@ %l\\n' | LC_ALL=C sort; find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; } | sha256sum | cut -d' ' -f1`,
        )
        expect(r.exitCode, r.output).toBe(0)
        return r.stdout.trim()
      }
      const pids = async () => (await db.exec(`systemctl show -p MainPID --value ${DB_UNITS.join(' ')}`)).stdout.trim()
      type CheckJson = { hosts: { host: string; tasks: { task: string; checks: { name: string; ok: boolean; detail: string }[] }[] }[] }
      const checkOnDb = async () => {
        const r = await runCli(['check', '--inventory', inventory, '--json'], { env: runEnv, timeoutMs: SPREAD_TIMEOUT })
        const hosts = (JSON.parse(r.stdout) as CheckJson).hosts
        const failed = hosts.flatMap((h) =>
          h.tasks.flatMap((t) => t.checks.filter((c) => !c.ok).map((c) => `${h.host} ${t.task}: ${c.name}`)),
        )
        const checks = hosts.find((h) => h.host === 'db')!.tasks.find((t) => t.task === 'workers')!.checks
        return { code: r.code, output: cliOutput(r), failed, lockCheck: checks.find((c) => c.name.includes('holds the lock'))! }
      }
      const running = async () =>
        expect((await db.exec(`systemctl is-active ${DB_UNITS.join(' ')}`)).stdout.trim().split('\n')).toEqual(['active', 'active'])
      // certifi of another release (the guide's 1.87.0-era wheelhouse): nothing a running worker reads.
      const dir = (await guideWheelhouse()).dir
      const wheel = readdirSync(dir).find((f) => /^certifi-.*-py3-none-any\.whl$/.test(f))!
      await db.container.copyFilesToContainer([{ source: join(dir, wheel), target: `/root/${wheel}` }])
      const pip = await db.exec(`${LINK}/bin/pip install --disable-pip-version-check --no-index --no-deps /root/${wheel}`)
      expect(pip.exitCode, pip.output).toBe(0)
      const before = await treeHash(live)
      const pidsBefore = await pids()

      // The install of the rebuild fails: no wheelhouse, an index nobody answers.
      const doc = parse(await readFile(inventory, 'utf8')) as { defaults: { vars: { synapse: Record<string, unknown> } } }
      delete doc.defaults.vars.synapse.wheelhouse
      doc.defaults.vars.synapse.pipIndexUrl = 'http://127.0.0.1:9/simple/'
      const noIndex = join(env.dir, 'inventory-no-index.yaml')
      await writeFile(noIndex, stringify(doc))
      const planned = releaseOn(
        JSON.parse((await runCli(['--inventory', noIndex, '--dry-run', '--json'], { env: runEnv })).stdout) as Json,
      )!
      expect(planned.summary).toContain(
        `rebuild Synapse ${V} side by side in ${live}-r2 and switch to it: the running ${live} differs from the lock`,
      )
      expect(seq(planned.steps!)).toEqual([`install ${live}-r2`, `check-config ${live}-r2`, `switch ${live}-r2`])
      const failed = await runCli(['--inventory', noIndex, '--json'], { env: runEnv, timeoutMs: SPREAD_TIMEOUT })
      expect(failed.code, cliOutput(failed)).toBe(1)
      const report = JSON.parse(failed.stdout) as Json
      const error = report.hosts.find((h) => h.host === 'db')!.error!
      console.log(error)
      expect(error).toContain(`pip install of the lock synapse-lock/${V}.txt`)
      expect(error).toContain(
        `nothing running was changed: Synapse ${V} keeps serving from ${live}, which still differs from the lock (a later run or check reports it); ${live}-r2 removed`,
      )
      expect(seq(releaseOn(report)!.performed!)).toEqual([`install ${live}-r2`])
      expect(await treeHash(live)).toBe(before)
      expect((await db.exec(`readlink -f ${LINK}; ls -d ${LINK}-*`)).stdout.trim().split('\n')).toEqual([live, live])
      await running()
      expect(await pids()).toBe(pidsBefore)
      // check fails on db, naming its workers and the drifted venv; nothing else fails.
      const drifted = await checkOnDb()
      expect(drifted.code, drifted.output).toBe(1)
      expect(drifted.failed).toEqual([`db workers: the venv ${DB_UNITS.join(', ')} run from holds the lock synapse-lock/${V}.txt`])
      expect(drifted.lockCheck.detail).toContain(`${live} differs from the lock synapse-lock/${V}.txt (1: certifi `)

      // With the wheelhouse back: the rebuilt venv, switched to; the drifted one stays, unchanged, for rollback.
      const plan = releaseOn(JSON.parse((await runCli(['--inventory', inventory, '--dry-run', '--json'], { env: runEnv })).stdout) as Json)!
      const fixed = await runCli(['--inventory', inventory, '--json'], { env: runEnv, timeoutMs: SPREAD_TIMEOUT })
      expect(fixed.code, cliOutput(fixed)).toBe(0)
      expect(seq(releaseOn(JSON.parse(fixed.stdout) as Json)!.performed!)).toEqual(seq(plan.steps!))
      expect((await db.exec(`readlink -f ${LINK}`)).stdout.trim()).toBe(`${live}-r2`)
      expect(await treeHash(live)).toBe(before)
      const listed = await db.exec(`${LINK}/bin/python -c ${shellQuote(VENV_CONTENTS_SCRIPT)}`)
      expect(
        lockDrift(await readLock(LOCK_DIR, V, 'test/e2e/two-hosts.test.ts'), parseVenvContents(listed.stdout, listed.exitCode)!),
      ).toEqual({
        missing: [],
        differ: [],
        extra: [],
      })
      await running()
      expect(await pids()).not.toBe(pidsBefore) // restarted on the rebuilt venv
      const again = await spreadApply()
      expect(again.code, cliOutput(again)).toBe(0)
      expect(again.stdout).toContain('db: no changes')
      const clean = await checkOnDb()
      expect(clean.code, clean.output).toBe(0)
      expect(clean.lockCheck.ok).toBe(true)
      expect(clean.lockCheck.detail).toMatch(/^\/opt\/venvs\/matrix-synapse-[\d.]+-r2: \d+ distributions as locked$/)
    },
    SPREAD_TIMEOUT,
  )
})
