import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import type { Change, PerformedStep, Step } from '../../src/resources/resource.js'
import { buildSignedAptRepoFromDebs, serveOnLoopback, upstreamVersion, type SynapseDebRepo } from '../support/apt-repo.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { provision, writeTestInventory } from '../support/inventory.js'
import { MatrixClient } from '../support/matrix-client.js'
import { shellQuote } from '../../src/core/quote.js'
import { watchDowntime } from '../support/downtime.js'

type Report = {
  durationMs: number
  totals: { add: number; change: number; restart: number; failedHosts: number }
  hosts: {
    status: string
    error?: string
    tasks: {
      task: string
      status: string
      changes: Change[]
      restarts: unknown[]
      checks: { name: string; phase: string; ok: boolean; detail: string }[]
    }[]
  }[]
}
const RELEASE = 'synapse-release:/opt/venvs/matrix-synapse'
const releaseChange = (r: Report): Change | undefined =>
  r.hosts[0]!.tasks.find((t) => t.task === 'synapse')?.changes.find((c) => c.resource === RELEASE)
const seq = (steps: (Step | PerformedStep)[]) => steps.map((s) => `${s.kind} ${s.target}`)
const WORKERS = ['matrix-synapse-worker@federation_reader.service', 'matrix-synapse-worker@federation_sender.service']

/**
 * The apt method with the real matrix-synapse-py3 packages (../shared/packages/matrix-synapse-py3, or
 * SYNAPSE_DEB_DIR) in a signed repository served on the host's own loopback, reached through the
 * apt-keyring role's keyring and source: the guide's install path. One host for the whole file: each
 * test starts from the state the one before left, as a server's life does.
 */
describe.skipIf(!inject('docker'))('the apt method with the real matrix-synapse-py3 package', () => {
  let env: TestHosts
  let hs: TestHost
  let repo: SynapseDebRepo
  let url: string
  let ca: string
  let OLD: string
  let NEW: string
  const started = Date.now()

  const inventoryFor = (version: string, file = `inventory-${version}.yaml`) =>
    writeTestInventory(
      env,
      [{ name: 'apt', roles: ['apt-keyring', 'postgres', 'redis', 'synapse', 'workers', 'apache'] }],
      {
        serverName: 'apt.test',
        aptRepository: { url, suite: 'bookworm', components: ['main'], keyringFile: repo.keyringGpg, fingerprint: repo.fingerprint },
        synapse: { install: 'apt', version },
      },
      file,
    )
  const apply = async (inventory: string, ...extra: string[]) => {
    const r = await provision(['--inventory', inventory, '--json', ...extra])
    return { code: r.code, report: JSON.parse(r.stdout) as Report, stderr: r.stderr }
  }
  const client = () => new MatrixClient({ port: hs.port(443), hostname: 'matrix.apt.test', ca })
  /** Package version and hold, and the version each process serves (its federation or metrics listener). */
  const versions = async () => {
    const pkg = (await hs.exec("dpkg-query -W -f '${Version} ${db:Status-Abbrev}' matrix-synapse-py3")).stdout.trim()
    const build = async (port: number) =>
      ((await hs.exec(`curl -s http://127.0.0.1:${port}/_synapse/metrics | grep '^synapse_build_info'`)).stdout.match(
        /[{,]version="([^"]+)"/,
      ) ?? [])[1]
    return { pkg, main: await build(32982), federation_reader: await build(32981), federation_sender: await build(32980) }
  }
  const psql = async (sql: string) => {
    const r = await hs.exec(`runuser -u postgres -- psql -XAt -d synapse -c ${shellQuote(sql)}`)
    expect(r.exitCode, r.output).toBe(0)
    return r.stdout.trim()
  }
  const data = { alice: undefined as unknown as MatrixClient, room: '', bodies: [] as string[] }

  beforeAll(async () => {
    env = await startHosts(['apt'], { ports: [443], aliases: { apt: ['apt.test', 'matrix.apt.test'] } })
    hs = env.get('apt')
    repo = await buildSignedAptRepoFromDebs({ dir: join(env.dir, 'repo'), suite: 'bookworm' })
    expect(repo.versions.length, `two versions of matrix-synapse-py3 needed, found ${repo.versions.join(', ')}`).toBeGreaterThanOrEqual(2)
    OLD = upstreamVersion(repo.versions.at(-2)!)
    NEW = upstreamVersion(repo.versions.at(-1)!)
    url = await serveOnLoopback(hs, repo)
  })
  afterAll(async () => {
    console.log(`apt-package.test.ts wall time ${((Date.now() - started) / 1000).toFixed(1)} s`)
    await env?.stop()
  })

  it('a fresh host: the package at the inventory version with the guide workers; clients work through Apache; a second run changes nothing', async () => {
    const inventory = await inventoryFor(OLD)
    const r = await apply(inventory)
    const host = r.report.hosts[0]!
    console.log(
      `first run (apt, ${OLD}): ${r.report.durationMs} ms: ${host.tasks.map((t) => `${t.task} ${(t as { durationMs?: number }).durationMs}`).join(', ')}`,
    )
    expect(host.error ?? host.status, r.stderr).toBe('changed')
    expect(r.code).toBe(0)
    const after = host.tasks.flatMap((t) => t.checks.filter((c) => c.phase === 'after'))
    expect(after.filter((c) => !c.ok)).toEqual([])
    // Installed at the pinned version, held (status "hi"), every process on it.
    expect(await versions()).toEqual({ pkg: `${repo.versions.at(-2)} hi`, main: OLD, federation_reader: OLD, federation_sender: OLD })
    expect(
      (await hs.exec('ls /var/lib/matrix-synapse/*.db 2>/dev/null; test -e /usr/sbin/policy-rc.d && echo policy-rc.d left')).stdout.trim(),
    ).toBe('')
    ca = (await hs.exec('cat /etc/ssl/matrix-provision/matrix.apt.test.crt')).stdout
    // The package's unit runs main hardened like the workers (our drop-in; PrivateUsers is off only in test containers).
    expect(
      (await hs.exec('systemctl show -p ProtectSystem,NoNewPrivileges,RuntimeDirectoryPreserve matrix-synapse.service')).stdout
        .trim()
        .split('\n')
        .sort(),
    ).toEqual(['NoNewPrivileges=yes', 'ProtectSystem=strict', 'RuntimeDirectoryPreserve=yes'])
    expect((await hs.exec('systemctl show -p ExecStartPre --value matrix-synapse.service')).stdout.trim()).toBe('')
    // Every setting in conf.d: the package's homeserver.yaml is the empty base, readable by Synapse's group only.
    expect((await hs.exec('stat -c "%a %U:%G" /etc/matrix-synapse/homeserver.yaml')).stdout.trim()).toBe('640 root:matrix-synapse')
    expect((await hs.exec('stat -c %a /var/lib/matrix-synapse /var/log/matrix-synapse')).stdout.split('\n').filter(Boolean)).toEqual([
      '750',
      '750',
    ])

    for (const u of ['alice', 'bob']) {
      const reg = await hs.exec(
        `printf '${u}-pass-123456' | /opt/venvs/matrix-synapse/bin/register_new_matrix_user -c /etc/matrix-synapse/conf.d/30-secrets.yaml -u ${u} --password-file /dev/stdin --no-admin http://127.0.0.1:8008`,
      )
      expect(reg.exitCode, reg.output).toBe(0)
    }
    data.alice = client()
    const bob = client()
    await data.alice.login('alice', 'alice-pass-123456')
    await bob.login('bob', 'bob-pass-123456')
    const room = await data.alice.call<{ room_id: string }>('POST', '/_matrix/client/v3/createRoom', {
      name: 'apt',
      invite: ['@bob:apt.test'],
    })
    expect(room.status, room.text).toBe(200)
    data.room = room.json.room_id
    expect((await bob.call('POST', `/_matrix/client/v3/join/${encodeURIComponent(data.room)}`, {})).status).toBe(200)
    for (let i = 0; i < 4; i++) {
      const body = `message ${i} written on ${OLD} (apt)`
      const sent = await (i % 2 ? bob : data.alice).call(
        'PUT',
        `/_matrix/client/v3/rooms/${encodeURIComponent(data.room)}/send/m.room.message/t${i}`,
        { msgtype: 'm.text', body },
      )
      expect(sent.status, sent.text).toBe(200)
      data.bodies.push(body)
    }
    const sync = await bob.call('GET', '/_matrix/client/v3/sync?timeout=0')
    for (const b of data.bodies) expect(sync.text).toContain(b)
    // Inbound federation routes reach the federation_reader through Apache.
    const fed = await client().call('GET', '/_matrix/federation/v1/version')
    expect(fed.json).toMatchObject({ server: { name: 'Synapse', version: OLD } })

    const again = await apply(inventory)
    expect(
      again.report.hosts[0]!.tasks.flatMap((t) => [
        ...t.changes.map((c) => `${c.resource}: ${c.summary}`),
        ...t.restarts.map((x) => JSON.stringify(x)),
      ]),
    ).toEqual([])
    expect(again.report.hosts[0]!.error ?? again.report.hosts[0]!.status, again.stderr).toBe('ok')
    expect(again.report.totals).toMatchObject({ add: 0, change: 0, restart: 0, failedHosts: 0 })
  })
  /** Units' start times and pids: proof that a refused or failed run restarted nothing it should not have. */
  const unitStarts = async () =>
    (await hs.exec(`systemctl show -p MainPID,ActiveEnterTimestampMonotonic matrix-synapse.service ${WORKERS.join(' ')}`)).stdout

  it('a version the repository does not have is refused in the plan, before anything stops; apply refuses the same way', async () => {
    const [maj, min] = NEW.split('.').map(Number)
    const absent = `${maj}.${min! + 1}.0`
    const inventory = await inventoryFor(absent)
    const before = await unitStarts()
    const dry = await provision(['--inventory', inventory, '--dry-run'])
    expect(dry.code, dry.stdout + dry.stderr).toBe(1)
    const refusal = `refusing to install Synapse ${absent} with apt: matrix-synapse-py3 ${absent} is not in the repository (it offers ${[...repo.versions].reverse().join(', ')})`
    expect(dry.stdout + dry.stderr).toContain(refusal)
    const r = await apply(inventory)
    expect(r.code).toBe(1)
    expect(r.report.hosts[0]!.error).toContain(refusal)
    expect(r.report.hosts[0]!.error).toContain(`Nothing was changed: Synapse ${OLD} keeps serving.`)
    expect(releaseChange(r.report)).toBeUndefined()
    expect(await unitStarts()).toBe(before)
    expect(await versions()).toMatchObject({ main: OLD, federation_reader: OLD, federation_sender: OLD })
  })

  it('an install that fails anyway (dpkg lock held past the bound) leaves the old version serving, starts the stopped workers again and says so', async () => {
    await hs.exec(
      `systemd-run --unit mp-dpkg-holder python3 -c "import fcntl,time; f=open('/var/lib/dpkg/lock-frontend','a'); fcntl.lockf(f, fcntl.LOCK_EX); open('/run/mp-dpkg-holder','w').close(); time.sleep(900)"`,
    )
    const held = await hs.exec('for i in $(seq 600); do test -e /run/mp-dpkg-holder && exit 0; sleep 0.1; done; exit 1')
    expect(held.exitCode).toBe(0)
    process.env.MP_DPKG_LOCK_TIMEOUT = '3'
    let r: Awaited<ReturnType<typeof apply>>
    try {
      r = await apply(await inventoryFor(NEW))
    } finally {
      delete process.env.MP_DPKG_LOCK_TIMEOUT
      await hs.exec('systemctl stop mp-dpkg-holder')
    }
    expect(r.code).toBe(1)
    const error = r.report.hosts[0]!.error!
    const change = releaseChange(r.report)!
    console.log(
      `forced install failure: ${error}\n${change.performed!.map((s) => `  ${s.rollback ? 'rollback ' : ''}${s.status} ${s.kind} ${s.target}`).join('\n')}`,
    )
    expect(error).toContain(`installing matrix-synapse-py3=${repo.versions.at(-1)} failed:`)
    expect(error).toContain(
      `the package is unchanged at ${repo.versions.at(-2)} and main kept serving ${OLD}; the stopped workers were started again (${WORKERS.join(', ')})`,
    )
    expect(error).not.toMatch(/roll back by itself/)
    expect(seq(change.performed!.filter((s) => s.rollback))).toEqual(WORKERS.map((u) => `start ${u}`))
    for (const u of ['matrix-synapse.service', ...WORKERS])
      expect((await hs.exec(`systemctl is-active ${u}`)).stdout.trim(), u).toBe('active')
    expect(await versions()).toEqual({ pkg: `${repo.versions.at(-2)} hi`, main: OLD, federation_reader: OLD, federation_sender: OLD })
    expect((await hs.exec('test -e /usr/sbin/policy-rc.d')).exitCode).not.toBe(0)
  })

  it(`upgrades the older package to the newer with one restart of main: the plan's order is apply's, the dump precedes the migration, no worker runs old code on the migrated database, data read back, downtime printed`, async () => {
    const inventory = await inventoryFor(NEW)
    const dry = await provision(['--inventory', inventory, '--dry-run'])
    console.log(dry.stdout)
    const plan = JSON.parse((await provision(['--inventory', inventory, '--dry-run', '--json'])).stdout) as Report
    const planned = releaseChange(plan)!
    const order = seq(planned.steps!)
    expect(order).toEqual([
      expect.stringMatching(/^backup \/var\/backups\/matrix-synapse\/synapse-.*-before-.*\.dump$/),
      ...WORKERS.map((u) => `stop ${u}`),
      `apt-install matrix-synapse-py3 ${repo.versions.at(-1)}`,
      'start matrix-synapse.service',
      'wait-health http://127.0.0.1:8008/health',
      ...WORKERS.map((u) => `start ${u}`),
      'after-checks homeserver',
    ])
    expect(planned.steps!.find((s) => s.kind === 'apt-install')!.summary).toContain('policy-rc.d guard')
    const mainPid = (await hs.exec('systemctl show -p MainPID --value matrix-synapse.service')).stdout.trim()
    const journalFrom = (await hs.exec('date "+%Y-%m-%d %H:%M:%S"')).stdout.trim()

    const watcher = client()
    watcher.token = data.alice.token
    const watch = watchDowntime(watcher)
    const r = await apply(inventory)
    const outages = await watch.stop()
    expect(r.report.hosts[0]!.error ?? r.report.hosts[0]!.status, r.stderr).toBe('changed')
    const change = releaseChange(r.report)!
    console.log(
      `apt upgrade ${OLD} -> ${NEW}: ${r.report.durationMs} ms\n${change.performed!.map((s) => `  ${s.status} ${s.kind} ${s.target} (${s.durationMs} ms)${s.detail ? ': ' + s.detail.slice(0, 120) : ''}`).join('\n')}`,
    )
    expect(seq(change.performed!)).toEqual(order)
    expect(change.performed!.every((s) => s.status === 'done')).toBe(true)
    expect(r.report.hosts[0]!.tasks.flatMap((t) => t.restarts)).toEqual([])
    // The dump is there and holds the database from before the migration (no 94/05.. rows of the new package).
    const dump = planned.steps![0]!.target
    expect((await hs.exec(`stat -c '%a %s' ${dump}`)).stdout).toMatch(/^600 [1-9]\d+/)
    // Main started exactly once in the run (systemd's "Started" lines for its unit), and on the new code.
    const starts = (
      await hs.exec(`journalctl -u matrix-synapse.service --since '${journalFrom}' --no-pager -o cat | grep -c '^Started'`)
    ).stdout.trim()
    expect(starts).toBe('1')
    expect((await hs.exec('systemctl show -p MainPID --value matrix-synapse.service')).stdout.trim()).not.toBe(mainPid)
    expect(await versions()).toEqual({ pkg: `${repo.versions.at(-1)} hi`, main: NEW, federation_reader: NEW, federation_sender: NEW })
    // No worker ran the old code against the migrated database: each worker started after main's (re)start.
    const since = async (u: string) => Number((await hs.exec(`systemctl show -p ActiveEnterTimestampMonotonic --value ${u}`)).stdout.trim())
    const mainSince = await since('matrix-synapse.service')
    for (const u of WORKERS) expect(await since(u), u).toBeGreaterThan(mainSince)
    const downtimes = outages.map((o) => (o.to ?? Date.now()) - o.from)
    console.log(
      `client API (whoami through Apache, every 100 ms) unavailable during the apt upgrade: longest ${Math.max(0, ...downtimes)} ms, ${outages.length} window(s): ${downtimes.join(', ')} ms (load ${(await hs.exec('cut -d" " -f1-3 /proc/loadavg')).stdout.trim()})`,
    )
    expect(outages.every((o) => o.to !== undefined)).toBe(true)
    expect(outages.length).toBeLessThanOrEqual(1)
    // One window: main's one restart (the package's own restart is suppressed). Its length is load-bound: printed, loosely bounded.
    expect(Math.max(0, ...downtimes)).toBeLessThan(30_000)
    if (process.env.UPGRADE_APT_BENCH_FILE) {
      const load = (await hs.exec('cut -d" " -f1-3 /proc/loadavg')).stdout.trim()
      await writeFile(
        process.env.UPGRADE_APT_BENCH_FILE,
        JSON.stringify(
          {
            what: `apt upgrade ${OLD} -> ${NEW} with the real matrix-synapse-py3 packages (test/e2e/apt-package.test.ts)`,
            from: OLD,
            to: NEW,
            wallMs: r.report.durationMs,
            clientApiDowntimeMs: Math.max(0, ...downtimes),
            outages: downtimes,
            pollIntervalMs: 100,
            loadAverage: load,
            steps: change.performed!.map((s) => ({ kind: s.kind, target: s.target, ms: s.durationMs })),
            date: new Date().toISOString(),
          },
          null,
          2,
        ) + '\n',
      )
    }
    const fresh = client()
    await fresh.login('alice', 'alice-pass-123456')
    const read = await fresh.call<{ chunk: { content: { body?: string } }[] }>(
      'GET',
      `/_matrix/client/v3/rooms/${encodeURIComponent(data.room)}/messages?dir=b&limit=100`,
    )
    expect(read.status).toBe(200)
    for (const b of data.bodies) expect(read.json.chunk.map((e) => e.content.body)).toContain(b)
    expect(await psql("select count(*) from applied_schema_deltas where file like '94/%'")).not.toBe('0')

    const again = await apply(inventory)
    expect(again.report.totals).toMatchObject({ add: 0, change: 0, restart: 0, failedHosts: 0 })
  })

  /** The operator's hand: apt-get without the tool's guard, so the postinst restarts main alone (workers keep their code). */
  const byHand = async (command: string) => {
    const r = await hs.exec(
      `DEBIAN_FRONTEND=noninteractive apt-get ${command} -y -q -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef`,
    )
    expect(r.exitCode, r.output).toBe(0)
    expect(r.output).not.toContain('policy-rc.d returned 101')
  }
  const plain = (args: string[]) => provision(args, { ...process.env, NO_COLOR: '1' })
  const driftSeen = async (inventory: string, expected: { pkg: string; held: boolean; main: string; workers: string }, pinned: string) => {
    const named = `the inventory says ${pinned}; package matrix-synapse-py3 ${expected.pkg} (${expected.held ? 'held' : 'not held: changed outside matrix-provision?'}), main runs ${expected.main}, federation_reader runs ${expected.workers}, federation_sender runs ${expected.workers}`
    const check = await plain(['check', '--inventory', inventory])
    expect(check.code, check.stdout + check.stderr).toBe(1)
    expect(check.stdout).toContain(`Synapse versions drifted: ${named}; run provision to converge them`)
    const dry = await plain(['--inventory', inventory, '--dry-run'])
    expect(dry.code, dry.stdout + dry.stderr).toBe(0)
    expect(dry.stdout).toContain(`Synapse versions drifted: ${named}; this run converges them in the upgrade order`)
    const status = await plain(['status', '--inventory', inventory, '--window', '1'])
    const advice = status.stdout.split('\n').filter((l) => /^\s+[!-] /.test(l))
    expect(advice[0], status.stdout).toContain(
      `Synapse processes run mixed versions: main ${expected.main}, federation_reader ${expected.workers}, federation_sender ${expected.workers} (the inventory says ${pinned}): run provision to converge them`,
    )
    return dry.stdout
  }
  const converged = async (inventory: string, version: string, deb: string) => {
    expect(await versions()).toEqual({ pkg: `${deb} hi`, main: version, federation_reader: version, federation_sender: version })
    const check = await plain(['check', '--inventory', inventory])
    expect(check.code, check.stdout + check.stderr).toBe(0)
    const again = await apply(inventory)
    expect(again.report.totals).toMatchObject({ add: 0, change: 0, restart: 0, failedHosts: 0 })
  }

  it('versions changed by hand behind the tool (apt-get past the hold): plan, check and status say so naming every version; the next run converges them in the upgrade order', async () => {
    const [oldDeb, newDeb] = [repo.versions.at(-2)!, repo.versions.at(-1)!]
    // 1. A hand downgrade past the hold: the package and main on OLD, the workers still on NEW, the hold gone.
    await byHand(`install --allow-downgrades --allow-change-held-packages matrix-synapse-py3=${oldDeb}`)
    expect(await versions()).toEqual({ pkg: `${oldDeb} ii `.trim(), main: OLD, federation_reader: NEW, federation_sender: NEW })
    const pinnedOld = await inventoryFor(OLD)
    const plan = await driftSeen(pinnedOld, { pkg: oldDeb, held: false, main: OLD, workers: NEW }, OLD)
    console.log(plan)
    // The package is the inventory's: the workers restart on it (main already runs it) and the hold comes back.
    const dry = JSON.parse((await provision(['--inventory', pinnedOld, '--dry-run', '--json'])).stdout) as Report
    const drift = dry.hosts[0]!.tasks.find((t) => t.task === 'synapse')!.changes.find((c) => c.resource.startsWith('synapse-apt-drift'))!
    expect(seq(drift.steps!)).toEqual([...WORKERS.map((u) => `stop ${u}`), ...WORKERS.map((u) => `start ${u}`), 'hold matrix-synapse-py3'])
    const mainPid = (await hs.exec('systemctl show -p MainPID --value matrix-synapse.service')).stdout.trim()
    const r = await apply(pinnedOld)
    expect(r.report.hosts[0]!.error ?? r.report.hosts[0]!.status, r.stderr).toBe('changed')
    const done = r.report.hosts[0]!.tasks.find((t) => t.task === 'synapse')!.changes.find((c) => c.resource === drift.resource)!
    expect(seq(done.performed!)).toEqual(seq(drift.steps!))
    expect((await hs.exec('systemctl show -p MainPID --value matrix-synapse.service')).stdout.trim()).toBe(mainPid)
    await converged(pinnedOld, OLD, oldDeb)

    // 2. The operator's apt upgrade (unhold, upgrade): the postinst restarts main on NEW (it migrates), the workers stay on OLD.
    const hold = await hs.exec('apt-mark unhold matrix-synapse-py3')
    expect(hold.exitCode, hold.output).toBe(0)
    await byHand('install --only-upgrade matrix-synapse-py3')
    expect(await versions()).toEqual({ pkg: `${newDeb} ii `.trim(), main: NEW, federation_reader: OLD, federation_sender: OLD })
    // Pinned at OLD the plan says so and converges with the release (a downgrade in the upgrade order);
    // the operator pins what now runs: the plan restarts the workers on it and holds the package.
    expect(await driftSeen(pinnedOld, { pkg: newDeb, held: false, main: NEW, workers: OLD }, OLD)).toMatch(
      new RegExp(`downgrade Synapse ${NEW.replace(/\./g, '\\.')} -> ${OLD.replace(/\./g, '\\.')}`),
    )
    const pinnedNew = await inventoryFor(NEW)
    await driftSeen(pinnedNew, { pkg: newDeb, held: false, main: NEW, workers: OLD }, NEW)
    const up = await apply(pinnedNew)
    expect(up.report.hosts[0]!.error ?? up.report.hosts[0]!.status, up.stderr).toBe('changed')
    const since = async (u: string) => Number((await hs.exec(`systemctl show -p ActiveEnterTimestampMonotonic --value ${u}`)).stdout.trim())
    for (const u of WORKERS) expect(await since(u), u).toBeGreaterThan(await since('matrix-synapse.service'))
    await converged(pinnedNew, NEW, newDeb)
    const fresh = client()
    await fresh.login('alice', 'alice-pass-123456')
    const read = await fresh.call<{ chunk: { content: { body?: string } }[] }>(
      'GET',
      `/_matrix/client/v3/rooms/${encodeURIComponent(data.room)}/messages?dir=b&limit=100`,
    )
    for (const b of data.bodies) expect(read.json.chunk.map((e) => e.content.body)).toContain(b)
  })

  it("a downgrade to a package whose code cannot run the database's schema is refused in the plan (read from the .deb), naming the backup; nothing stops", async () => {
    // Both packages share SCHEMA_COMPAT_VERSION 84, so the newer release that already ran is simulated as
    // Synapse leaves it: schema_compat_version raised to 95 (which 1.156.0's SCHEMA_VERSION 94 does not reach).
    expect(await psql('select compat_version from schema_compat_version')).toBe('84')
    await psql('update schema_compat_version set compat_version = 95')
    try {
      const inventory = await inventoryFor(OLD, 'inventory-downgrade.yaml')
      const before = await unitStarts()
      const dry = await provision(['--inventory', inventory, '--dry-run'])
      expect(dry.code, dry.stdout + dry.stderr).toBe(1)
      const refusal = `refusing the downgrade ${NEW} -> ${OLD}: `
      expect(dry.stdout + dry.stderr).toContain(refusal)
      expect(dry.stdout + dry.stderr).toMatch(
        /or restore the backup \/var\/backups\/matrix-synapse\/synapse-[\d.]+-before-[\d.]+(\.\d+)?\.dump/,
      )
      const r = await apply(inventory)
      expect(r.code).toBe(1)
      expect(r.report.hosts[0]!.error).toContain(refusal)
      expect(releaseChange(r.report)).toBeUndefined()
      expect(await unitStarts()).toBe(before)
      expect(await versions()).toEqual({ pkg: `${repo.versions.at(-1)} hi`, main: NEW, federation_reader: NEW, federation_sender: NEW })
    } finally {
      await psql('update schema_compat_version set compat_version = 84')
    }
  })

  it(`provision rollback to the previous package: refused while the database does not accept its code, naming the dump; with --restore-dump the dump is restored, ${'the older version'} serves the data from before the upgrade; check passes and a run pinned there changes nothing`, async () => {
    // The upgrade recorded the change: from, to, and the dump it wrote.
    const record = JSON.parse((await hs.exec('cat /var/lib/matrix-provision/synapse-release.json')).stdout) as Record<string, unknown>
    expect(record).toMatchObject({
      method: 'apt',
      active: NEW,
      previous: OLD,
    })
    const dump = record.backup as string
    expect(dump).toMatch(/\/synapse-.*-before-.*\.dump$/)
    expect((await hs.exec(`test -f ${dump}`)).exitCode).toBe(0)
    // A message written on NEW after the upgrade: the restore loses it, as the refusal says.
    const lost = `written on ${NEW} after the upgrade`
    const sent = await data.alice.call(
      'PUT',
      `/_matrix/client/v3/rooms/${encodeURIComponent(data.room)}/send/m.room.message/after-upgrade`,
      {
        msgtype: 'm.text',
        body: lost,
      },
    )
    expect(sent.status, sent.text).toBe(200)
    // 1.156.0 and 1.157.0 share SCHEMA_COMPAT_VERSION 84, so 1.156.0 could run on this database as soon as the
    // background updates 1.157.0 adds are done: a newer release that raised it is simulated as in the test above.
    await psql('update schema_compat_version set compat_version = 95')
    const pinnedNew = await inventoryFor(NEW, 'inventory-rollback.yaml')
    const before = await unitStarts()
    const refused = await plain(['rollback', '--inventory', pinnedNew, '--limit', 'apt'])
    console.log(refused.stdout)
    expect(refused.code, refused.stdout + refused.stderr).toBe(1)
    expect(refused.stdout, refused.stderr).toContain(`NOT rolled back to ${OLD}: the database's schema_compat_version is 95`)
    expect(refused.stdout).toContain(`${dump} holds the database from just before the upgrade`)
    expect(refused.stdout).toContain('provision rollback --restore-dump')
    expect(await unitStarts()).toBe(before)

    const dry = await plain(['rollback', '--inventory', pinnedNew, '--limit', 'apt', '--restore-dump', '--dry-run'])
    console.log(dry.stdout)
    expect(dry.code, dry.stdout + dry.stderr).toBe(0)
    expect(dry.stdout, dry.stderr).toContain(
      `would roll back ${NEW} -> ${OLD} (matrix-synapse-py3 ${repo.versions.at(-2)}) after restoring ${dump}`,
    )
    expect(await unitStarts()).toBe(before)

    const r = await provision(['rollback', '--inventory', pinnedNew, '--limit', 'apt', '--restore-dump', '--json'])
    const [report] = JSON.parse(r.stdout) as { ok: boolean; message: string; decision: string; change: Change }[]
    console.log(
      `apt rollback ${NEW} -> ${OLD}: ${report!.message}\n${report!.change.performed!.map((x) => `  ${x.status} ${x.kind} ${x.target} (${x.durationMs} ms)`).join('\n')}`,
    )
    expect(r.code, r.stderr).toBe(0)
    expect(report).toMatchObject({ ok: true, decision: 'restore' })
    expect(seq(report!.change.performed!)).toEqual(seq(report!.change.steps!))
    expect(seq(report!.change.steps!)).toEqual([
      ...WORKERS.map((u) => `stop ${u}`),
      'stop matrix-synapse.service',
      `restore-dump ${dump}`,
      `apt-install matrix-synapse-py3 ${repo.versions.at(-2)}`,
      'start matrix-synapse.service',
      'wait-health http://127.0.0.1:8008/health',
      ...WORKERS.map((u) => `start ${u}`),
      'after-checks homeserver',
    ])
    expect(await versions()).toEqual({ pkg: `${repo.versions.at(-2)} hi`, main: OLD, federation_reader: OLD, federation_sender: OLD })
    expect(await psql('select compat_version from schema_compat_version')).toBe('84')
    const fresh = client()
    await fresh.login('alice', 'alice-pass-123456')
    const read = await fresh.call<{ chunk: { content: { body?: string } }[] }>(
      'GET',
      `/_matrix/client/v3/rooms/${encodeURIComponent(data.room)}/messages?dir=b&limit=100`,
    )
    expect(read.status, read.text).toBe(200)
    const bodies = read.json.chunk.map((e) => e.content.body)
    for (const b of data.bodies) expect(bodies).toContain(b)
    expect(bodies).not.toContain(lost)

    // The operator pins the version now running: check passes, the next run changes nothing.
    const pinnedOld = await inventoryFor(OLD, 'inventory-after-rollback.yaml')
    await converged(pinnedOld, OLD, repo.versions.at(-2)!)
  })
})
