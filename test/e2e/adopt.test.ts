import { createHash } from 'node:crypto'
import { readdirSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { LOCK_DIR, pipSynapseVars, SYNAPSE_VERSION, synapseWheelhouse } from '../support/artifacts.js'
import { lockDrift, parseVenvContents, VENV_CONTENTS_SCRIPT } from '../../src/synapse/lock/drift.js'
import { readLock } from '../../src/inventory/controller-files.js'
import { shellQuote } from '../../src/core/quote.js'
import type { Change, Step } from '../../src/resources/resource.js'
import { runCli } from '../support/cli.js'
import { buildGuideHost, guideImage, guideWheelhouse, type GuideHost } from '../support/guide-host.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { writeTestInventory } from '../support/inventory.js'
import { MatrixClient, roomBodies } from '../support/matrix-client.js'

const SERVER = 'guide.test'
const PUBLIC = 'matrix.guide.test'
const KEY = `/etc/matrix-synapse/${SERVER}.signing.key`

interface JsonReport {
  hosts: {
    host: string
    status: string
    error?: string
    adoption?: { notes: { kind: string; found: string; becomes: string }[]; secrets: { name: string }[] }
    tasks: {
      task: string
      changes: Change[]
      restarts: { unit: string }[]
      checks: { phase: string; ok: boolean; name: string; detail: string }[]
    }[]
  }[]
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
  const client = (token?: string) => new MatrixClient({ port: hs.port(443), hostname: PUBLIC, ca, token })
  // What a run must not touch before adoption (the host lock's own files aside).
  const state = async () =>
    (
      await hs.exec(
        'ls /var/lib/matrix-provision/host.json /var/lib/matrix-provision/secrets 2>&1; sha256sum /etc/matrix-synapse/homeserver.yaml /etc/matrix-synapse/workers/*.yaml /etc/apache2/sites-enabled/* /etc/redis/redis.conf; systemctl show -p MainPID matrix-synapse',
      )
    ).stdout

  beforeAll(async () => {
    const [wheelhouse, suite] = await Promise.all([guideWheelhouse(), guideImage()])
    env = await startHosts(['guide'], { suite, ports: [443], aliases: { guide: [SERVER, PUBLIC] } })
    hs = env.get('guide')
    guide = await buildGuideHost(hs, { serverName: SERVER, publicHost: PUBLIC, install: { method: 'pip', wheelhouse: wheelhouse.dir } })
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
    for (const args of [
      ['--inventory', inventory, '--dry-run'],
      ['--inventory', inventory],
    ]) {
      const r = await runCli(args)
      expect(r.code, r.stdout + r.stderr).toBe(1)
      expect(r.stdout).toContain('no Synapse set up by hand on this host')
      expect(r.stdout).toContain(`config /etc/matrix-synapse/homeserver.yaml, signing key ${KEY}, database with Synapse data synapse`)
      expect(r.stdout).toContain(`provision adopt --inventory ${inventory} --limit guide --dry-run`)
    }
    expect(await state()).toBe(before)
    expect(
      (await hs.exec('test -e /var/lib/matrix-provision/host.json || test -e /var/lib/matrix-provision/secrets; echo $?')).stdout.trim(),
    ).toBe('1')
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
    expect(plan.hosts[0]!.adoption!.secrets.map((s) => s.name).sort()).toEqual([
      'form-secret',
      'macaroon-secret',
      'postgres-password',
      'registration-shared-secret',
    ])
    expect(line('replaced', 'daemonize')).toBeDefined()
    expect(line('replaced', 'send_federation')?.becomes).toContain('federation_sender_instances')
    expect(line('replaced', 'workers/federation_reader.yaml: worker_replication_host')).toBeDefined()
    expect(line('retired', `${PUBLIC}.conf`)?.becomes).toContain('get_groups_publicised')
    expect(line('retired', 'daemonize.conf')).toBeDefined()
    // Masked: no secret of the server in either output.
    const secrets = (
      await hs.exec(
        "grep -E '^(macaroon_secret_key|form_secret|registration_shared_secret):' /etc/matrix-synapse/homeserver.yaml | cut -d'\"' -f2",
      )
    ).stdout
      .trim()
      .split('\n')
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
    const changes = (x: JsonReport) =>
      x.hosts[0]!.tasks.map((t) => ({ task: t.task, changes: t.changes.map((c) => c.resource), restarts: t.restarts.map((s) => s.unit) }))
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
    expect((await roomBodies(alice, guide.roomId)).filter((b) => b !== undefined).reverse()).toEqual(guide.messages)
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
    const files = (
      await hs.exec('cat /etc/matrix-synapse/workers/federation_reader.yaml /etc/matrix-synapse/workers/federation_sender.yaml')
    ).stdout
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
    expect(
      Number((await hs.exec(`grep -c 'probe=${marker}' /var/log/matrix-synapse/federation_reader.log`)).stdout.trim()),
    ).toBeGreaterThanOrEqual(1)
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
    const record: unknown = JSON.parse((await hs.exec('cat /var/lib/matrix-provision/host.json')).stdout)
    expect(record).toMatchObject({
      managedBy: 'matrix-provision',
      origin: 'adopted',
      adopted: { signingKeyPath: KEY, mediaStorePath: '/var/lib/matrix-synapse/media_store' },
    })
    expect((await hs.exec('ls /var/lib/matrix-provision/adopted/etc/matrix-synapse/')).stdout).toContain('homeserver.yaml')
  })

  it(`upgrades to the newest pinned Synapse (${SYNAPSE_VERSION}) through the upgrade path; users, the old token, messages, media and the key survive`, async () => {
    const newest = await synapseWheelhouse('3.11')
    await writeTestInventory(env, [{ name: 'guide', roles: ['postgres', 'redis', 'synapse', 'workers', 'apache'] }], {
      serverName: SERVER,
      publicHost: PUBLIC,
      synapse: pipSynapseVars(newest),
    })
    const r = await runCli(['--inventory', inventory], { timeoutMs: 1_800_000 })
    expect(r.code, r.stdout + r.stderr).toBe(0)
    const version = await client().call<{ server: { version: string } }>('GET', '/_matrix/federation/v1/version')
    expect(version.json.server.version).toBe(SYNAPSE_VERSION)
    for (const u of guide.users) await client().login(u.name, u.password)
    const alice = client(guide.token)
    expect((await alice.call('GET', '/_matrix/client/v3/account/whoami')).status).toBe(200)
    expect((await roomBodies(alice, guide.roomId)).filter((b) => b !== undefined).reverse()).toEqual(guide.messages)
    const media = await alice.raw('GET', `/_matrix/media/v3/download/${guide.mediaUri.replace('mxc://', '')}`)
    expect(createHash('sha256').update(media.body).digest('hex')).toBe(guide.mediaSha256)
    expect((await hs.exec(`sha256sum ${KEY} | cut -d' ' -f1`)).stdout.trim()).toBe(guide.signingKeySha256)
    const again = await runCli(['--inventory', inventory])
    expect(again.code, again.stdout + again.stderr).toBe(0)
    expect(again.stdout).toContain('guide: no changes')
  })

  // Issue 21: a running venv is never modified. Drift of the running venv from its lock (a pin changed by
  // hand with pip) is repaired by a venv built beside it and switched to in the upgrade's order; a rebuild
  // whose install fails (no index reachable) leaves the running venv byte-identical and Synapse serving.
  const LINK = '/opt/venvs/matrix-synapse'
  const V = SYNAPSE_VERSION
  const WORKER_UNITS = ['matrix-synapse-worker@federation_reader.service', 'matrix-synapse-worker@federation_sender.service']
  const seq = (steps: Step[]) => steps.map((x) => `${x.kind} ${x.target}`)
  const releaseOf = (r: JsonReport) =>
    r.hosts[0]!.tasks.find((t) => t.task === 'synapse')!.changes.find((c) => c.resource === `synapse-release:${LINK}`)
  /** Every name, type, mode, owner, size, mtime and link target under a venv, and every file's bytes, as one digest. */
  const treeHash = async (dir: string) => {
    const r = await hs.exec(
      `cd ${dir} && { find . -printf '%p %y %m %U:%G %s %T@ %l\\n' | LC_ALL=C sort; find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; } | sha256sum | cut -d' ' -f1`,
    )
    expect(r.exitCode, r.output).toBe(0)
    return r.stdout.trim()
  }
  const liveDrift = async () => {
    const listed = await hs.exec(`${LINK}/bin/python -c ${shellQuote(VENV_CONTENTS_SCRIPT)}`)
    return lockDrift(await readLock(LOCK_DIR, V, 'test/e2e/adopt.test.ts'), parseVenvContents(listed.stdout, listed.exitCode)!)
  }
  /** certifi from the guide's 1.87.0-era wheelhouse: another version than the lock's, and nothing Synapse checks at start. */
  let handPin = { file: '', version: '' }
  const changePinByHand = async () => {
    if (!handPin.file) {
      const dir = (await guideWheelhouse()).dir
      const wheel = readdirSync(dir).find((f) => /^certifi-.*-py3-none-any\.whl$/.test(f))!
      await hs.container.copyFilesToContainer([{ source: join(dir, wheel), target: `/root/${wheel}` }])
      handPin = { file: `/root/${wheel}`, version: wheel.split('-')[1]! }
    }
    const pip = await hs.exec(`${LINK}/bin/pip install --disable-pip-version-check --no-index --no-deps ${handPin.file}`)
    expect(pip.exitCode, pip.output).toBe(0)
    const drift = await liveDrift()
    expect(drift.differ.map((d) => `${d.name} ${d.installed}`)).toEqual([`certifi ${handPin.version}`])
  }
  const serving = async () => {
    for (const u of ['matrix-synapse.service', ...WORKER_UNITS])
      expect((await hs.exec(`systemctl is-active ${u}`)).stdout.trim(), u).toBe('active')
    const version = await client().call<{ server: { version: string } }>('GET', '/_matrix/federation/v1/version')
    expect(version.json.server.version).toBe(V)
    for (const u of guide.users) await client().login(u.name, u.password)
    expect((await client(guide.token).call('GET', '/_matrix/client/v3/account/whoami')).status).toBe(200)
  }

  it('a pin changed by hand in the running venv: check names it; the plan rebuilds a venv beside it and switches in the upgrade order; apply does exactly that, the running venv is never written, users log in', async () => {
    await changePinByHand()
    const liveBefore = await treeHash(`${LINK}-${V}`)
    const check = await runCli(['check', '--inventory', inventory])
    expect(check.code, check.stdout).toBe(1)
    expect(check.stdout).toMatch(
      new RegExp(
        `the running venv holds the lock .*${LINK}-${V} differs from the lock synapse-lock/${V}.txt \\(1: certifi ${handPin.version.replace(/\./g, '\\.')} -> `,
      ),
    )
    const dry = await runCli(['--inventory', inventory, '--dry-run'])
    console.log(dry.stdout)
    expect(dry.stdout).toContain(
      `rebuild Synapse ${V} side by side in ${LINK}-${V}-r2 and switch to it: the running ${LINK}-${V} differs from the lock`,
    )
    const planned = releaseOf(JSON.parse((await runCli(['--inventory', inventory, '--dry-run', '--json'])).stdout) as JsonReport)!
    expect(seq(planned.steps!)).toEqual([
      `install ${LINK}-${V}-r2`,
      `check-config ${LINK}-${V}-r2`,
      ...WORKER_UNITS.map((u) => `stop ${u}`),
      `switch ${LINK}-${V}-r2`,
      'start matrix-synapse.service',
      'wait-health http://127.0.0.1:8008/health',
      ...WORKER_UNITS.map((u) => `start ${u}`),
      'after-checks homeserver',
      // keepVenvs 2: the rebuilt venv and the drifted one to roll back to; the adopted 1.87.0 goes.
      `prune ${LINK}-1.87.0`,
    ])
    const r = await runCli(['--inventory', inventory, '--json'], { timeoutMs: 1_200_000 })
    const report = JSON.parse(r.stdout) as JsonReport
    expect(report.hosts[0]!.error ?? report.hosts[0]!.status, r.stderr).toBe('changed')
    const done = releaseOf(report)!
    console.log(
      done
        .performed!.map((x) => `  ${x.status} ${x.kind} ${x.target} (${x.durationMs} ms)${x.detail ? ': ' + x.detail.slice(0, 120) : ''}`)
        .join('\n'),
    )
    expect(seq(done.performed!)).toEqual(seq(planned.steps!))
    expect(done.performed!.every((x) => x.status === 'done')).toBe(true)
    expect(report.hosts[0]!.tasks.flatMap((t) => t.restarts)).toEqual([]) // the switch restarted in order; nothing again
    expect((await hs.exec(`readlink ${LINK}`)).stdout.trim()).toBe(`matrix-synapse-${V}-r2`)
    expect(await liveDrift()).toEqual({ missing: [], differ: [], extra: [] })
    expect(await treeHash(`${LINK}-${V}`)).toBe(liveBefore)
    expect((await hs.exec('ls -d /opt/venvs/matrix-synapse-*')).stdout.trim().split('\n')).toEqual([`${LINK}-${V}`, `${LINK}-${V}-r2`])
    await serving()
    const after = await runCli(['check', '--inventory', inventory])
    expect(after.code, after.stdout).toBe(0)
    const again = await runCli(['--inventory', inventory])
    expect(again.code, again.stdout + again.stderr).toBe(0)
    expect(again.stdout).toContain('guide: no changes')
  })

  it('a rebuild whose install fails (no package index reachable) leaves the running venv byte-identical and main not restarted, says so, exits 1; check fails on the drift; a later run repairs it', async () => {
    await changePinByHand()
    const live = `${LINK}-${V}-r2`
    const before = await treeHash(live)
    const pid = (await hs.exec('systemctl show -p MainPID --value matrix-synapse')).stdout.trim()
    const noIndex = await writeTestInventory(
      env,
      [{ name: 'guide', roles: ['postgres', 'redis', 'synapse', 'workers', 'apache'] }],
      {
        serverName: SERVER,
        publicHost: PUBLIC,
        synapse: { install: 'pip', version: V, lockDir: LOCK_DIR, pipIndexUrl: 'http://127.0.0.1:9/simple/' },
      },
      'inventory-no-index.yaml',
    )
    const planned = releaseOf(JSON.parse((await runCli(['--inventory', noIndex, '--dry-run', '--json'])).stdout) as JsonReport)!
    expect(planned.summary).toContain(
      `rebuild Synapse ${V} side by side in ${LINK}-${V}-r3 and switch to it: the running ${live} differs from the lock`,
    )
    expect(planned.steps![0]!.summary).toContain('(from http://127.0.0.1:9/simple/)')
    const r = await runCli(['--inventory', noIndex, '--json'], { timeoutMs: 900_000 })
    expect(r.code, r.stdout + r.stderr).toBe(1)
    const report = JSON.parse(r.stdout) as JsonReport
    const error = report.hosts[0]!.error!
    console.log(error)
    expect(error).toContain(`pip install of the lock synapse-lock/${V}.txt`)
    expect(error).toContain(
      `nothing running was changed: Synapse ${V} keeps serving from ${live}, which still differs from the lock (a later run or check reports it); ${LINK}-${V}-r3 removed`,
    )
    expect(seq(releaseOf(report)!.performed!)).toEqual([`install ${LINK}-${V}-r3`])
    expect(await treeHash(live)).toBe(before)
    expect((await hs.exec(`readlink ${LINK}; ls -d /opt/venvs/matrix-synapse-*`)).stdout.trim().split('\n')).toEqual([
      `matrix-synapse-${V}-r2`,
      `${LINK}-${V}`,
      live,
    ])
    expect((await hs.exec('systemctl show -p MainPID --value matrix-synapse')).stdout.trim()).toBe(pid)
    await serving()
    const check = await runCli(['check', '--inventory', inventory])
    expect(check.code, check.stdout).toBe(1)
    expect(check.stdout).toContain(`${live} differs from the lock synapse-lock/${V}.txt (1: certifi ${handPin.version} -> `)
    // With the wheelhouse back, the next run rebuilds it beside (-r3) and prunes the oldest.
    const fixed = await runCli(['--inventory', inventory], { timeoutMs: 1_200_000 })
    expect(fixed.code, fixed.stdout + fixed.stderr).toBe(0)
    expect((await hs.exec(`readlink ${LINK}; ls -d /opt/venvs/matrix-synapse-*`)).stdout.trim().split('\n')).toEqual([
      `matrix-synapse-${V}-r3`,
      live,
      `${LINK}-${V}-r3`,
    ])
    expect(await liveDrift()).toEqual({ missing: [], differ: [], extra: [] })
    await serving()
  })
})
