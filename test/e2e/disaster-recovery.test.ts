import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { cp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { parse, stringify } from 'yaml'
import { readManifest, verifyBackupFiles, type Manifest } from '../../src/commands/backup/manifest.js'
import { pipSynapseVars, synapseWheelhouse } from '../support/artifacts.js'
import { cliOutput, runCli } from '../support/cli.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { writeTestInventory } from '../support/inventory.js'
import { binaryRequest, downloadMedia, MatrixClient, roomBodies } from '../support/matrix-client.js'
import { MANIFEST_FILE } from '../../src/synapse/backup/parts.js'

const SERVER = 'dr.test'
const PUBLIC = `matrix.${SERVER}`
const USERS = { alice: 'alice-pw-8d2f61c0', bob: 'bob-pw-41b9e7aa' }
const WORKERS = ['matrix-synapse-worker@federation_reader', 'matrix-synapse-worker@federation_sender']
const run = promisify(execFile)
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex')

/**
 * The disaster-recovery drill of the backup issue: host A is provisioned and used; `provision backup`
 * (the built CLI) copies it to this machine; A is destroyed; host B, a new container with another
 * address, provisioned from the same inventory with only the host's address changed, gets
 * `provision restore`; the same passwords log in, the messages and media are there, byte for byte, and
 * the signing key is the same file. On the way: the scheduled backup on A, and every bad input refused
 * on B with B left unchanged.
 */
describe.skipIf(!inject('docker'))('disaster recovery drill: backup of host A restored onto a new host B', () => {
  let env: TestHosts
  let a: TestHost
  let b: TestHost
  let inventoryA: string
  let inventoryB: string
  let backups: string
  let backupDir: string
  let encryptedBackups: string
  let encryptedDir: string
  let identity: string
  let roomId: string
  const messages: string[] = []
  const media: { mxc: string; sha256: string; bytes: number }[] = []
  let signingKeyA: string
  let verifyKeyA: unknown
  const timings: Record<string, number> = {}

  const client = async (host: TestHost) =>
    new MatrixClient({
      port: host.port(443),
      hostname: PUBLIC,
      ca: (await host.exec(`cat /etc/ssl/matrix-provision/${PUBLIC}.crt`)).stdout,
    })
  const loggedIn = async (host: TestHost, user: keyof typeof USERS) => {
    const c = await client(host)
    await c.login(user, USERS[user])
    return c
  }
  const timed = async <T>(name: string, f: () => Promise<T>) => {
    const t0 = Date.now()
    try {
      return await f()
    } finally {
      timings[name] = Date.now() - t0
    }
  }

  /** Everything a refused restore must leave as it was on B: database, key, secrets, media, running processes. */
  const fingerprint = async (host: TestHost) =>
    (
      await host.exec(
        [
          'sha256sum /etc/matrix-synapse/homeserver.signing.key',
          'cat /var/lib/matrix-provision/secrets/* | sha256sum',
          `runuser -u postgres -- psql -XAtc "select oid, datname from pg_database order by datname"`,
          `runuser -u postgres -- psql -XAt -d synapse -c "select count(*) from users" -c "select count(*) from events" -c "select count(*) from local_media_repository"`,
          '(cd /var/lib/matrix-synapse/media && find . -type f | sort | xargs -r sha256sum) | sha256sum',
          `systemctl show -p ActiveEnterTimestampMonotonic matrix-synapse ${WORKERS.join(' ')}`,
        ].join('; '),
      )
    ).stdout

  beforeAll(async () => {
    const wheelhouse = await synapseWheelhouse('3.11')
    env = await startHosts(['a', 'b'], { ports: [443] })
    a = env.get('a')
    b = env.get('b')
    expect(a.ip).not.toBe(b.ip)
    // One inventory, host `hs`; B's copy differs only in the host's address (and its mapped SSH port).
    const written = await writeTestInventory(
      env,
      [{ name: 'a', roles: ['postgres', 'redis', 'synapse', 'workers', 'apache', 'monitoring', 'backup'] }],
      {
        serverName: SERVER,
        synapse: pipSynapseVars(wheelhouse),
        backup: { directory: '/var/backups/matrix-provision', keep: 2 },
      },
    )
    const doc = parse(await readFile(written, 'utf8')) as {
      hosts: Record<string, { address: string; privateAddress: string; ssh: { port: number } }>
    }
    const hs = doc.hosts.a!
    doc.hosts = { hs }
    inventoryA = join(env.dir, 'inventory-a.yaml')
    await writeFile(inventoryA, stringify(doc))
    hs.privateAddress = b.ip
    hs.ssh.port = b.sshPort
    inventoryB = join(env.dir, 'inventory-b.yaml')
    await writeFile(inventoryB, stringify(doc))
    backups = join(env.dir, 'backups')
    encryptedBackups = join(env.dir, 'backups-encrypted')
  })
  afterAll(async () => {
    console.log(`disaster-recovery timings (ms): ${JSON.stringify(timings)}`)
    await env?.stop()
  })

  it(
    'provisions A and B from the same inventory (B only for later: it never sees A)',
    async () => {
      // Both at once: the drill's order (B after A is gone) changes nothing for B, which is a fresh host either way.
      // A loaded machine (other test files' hosts on the same 2 cores) can take far longer than the 10 minutes runCli allows by default.
      const slow = { timeoutMs: 45 * 60_000 }
      const [ra, rb] = await timed('provision A and B', () =>
        Promise.all([runCli(['--inventory', inventoryA], slow), runCli(['--inventory', inventoryB], slow)]),
      )
      expect(ra.code, cliOutput(ra)).toBe(0)
      expect(rb.code, cliOutput(rb)).toBe(0)
    },
    50 * 60_000,
  )

  it('on A: two users, a room, messages and about 20 MiB of media', async () => {
    for (const [user, password] of Object.entries(USERS)) {
      const reg = await a.exec(
        `printf '%s' '${password}' | /opt/venvs/matrix-synapse/bin/register_new_matrix_user -c /etc/matrix-synapse/conf.d/30-secrets.yaml -u ${user} --password-file /dev/stdin --no-admin http://127.0.0.1:8008`,
      )
      expect(reg.exitCode, reg.output).toBe(0)
    }
    const alice = await loggedIn(a, 'alice')
    const bob = await loggedIn(a, 'bob')
    const room = await alice.call<{ room_id: string }>('POST', '/_matrix/client/v3/createRoom', {
      name: 'drill',
      invite: [`@bob:${SERVER}`],
    })
    expect(room.status, room.text).toBe(200)
    roomId = room.json.room_id
    expect((await bob.call('POST', `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, {})).status).toBe(200)
    for (let i = 0; i < 4; i++) {
      const data = randomBytes(5 * 1024 * 1024 + i)
      const up = await binaryRequest(alice, 'POST', `/_matrix/media/v3/upload?filename=blob-${i}.bin`, data)
      expect(up.status, up.body.toString()).toBe(200)
      const mxc = (JSON.parse(up.body.toString()) as { content_uri: string }).content_uri
      media.push({ mxc, sha256: sha256(data), bytes: data.length })
      const sender = i % 2 ? bob : alice
      const text = `drill message ${i} from ${i % 2 ? 'bob' : 'alice'}`
      messages.push(text)
      expect(
        (
          await sender.call('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/m${i}`, {
            msgtype: 'm.text',
            body: text,
          })
        ).status,
      ).toBe(200)
      expect(
        (
          await sender.call('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/f${i}`, {
            msgtype: 'm.file',
            body: `blob-${i}.bin`,
            url: mxc,
          })
        ).status,
      ).toBe(200)
    }
    expect(media.reduce((s, m) => s + m.bytes, 0)).toBeGreaterThanOrEqual(20 * 1024 * 1024)
    signingKeyA = (await a.exec('sha256sum < /etc/matrix-synapse/homeserver.signing.key')).stdout.trim()
    verifyKeyA = (await (await client(a)).call<{ verify_keys: unknown }>('GET', '/_matrix/key/v2/server')).json.verify_keys
    expect(Object.keys(verifyKeyA as object)).toHaveLength(1)
  })

  it('scheduled backup on A: the timer service writes a complete backup, keeps 2, and its last result is an after-check', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await a.exec('systemctl start matrix-provision-backup.service && sleep 1')
      expect(r.exitCode, (await a.exec('journalctl -u matrix-provision-backup.service --no-pager | tail -20')).stdout).toBe(0)
    }
    const kept = (await a.exec('ls -1 /var/backups/matrix-provision')).stdout.trim().split('\n')
    expect(kept).toHaveLength(2)
    expect(kept.every((d) => /^hs-\d{8}T\d{6}Z$/.test(d))).toBe(true)
    expect((await a.exec('stat -c %a /var/backups/matrix-provision/' + kept[1])).stdout.trim()).toBe('700')
    // The same manifest as provision backup: copied here, it verifies (and restore would take it).
    const copy = join(env.dir, 'scheduled')
    await run('docker', ['cp', `${a.container.getId()}:/var/backups/matrix-provision/${kept[1]}`, copy])
    expect((await readdir(copy)).sort()).toEqual([
      'config.tar',
      'database.dump',
      'manifest.json',
      'media.tar',
      'secrets.tar',
      'signing.key',
    ])
    const manifest = await readManifest(copy)
    await verifyBackupFiles(copy, manifest)
    expect(manifest).toMatchObject({ host: 'hs', serverName: SERVER, encryption: null })
    expect(manifest.files.find((f) => f.part === 'media')!.bytes).toBeGreaterThan(20 * 1024 * 1024)

    const check = await runCli(['check', '--inventory', inventoryA, '--json'])
    const afterCheck = (
      JSON.parse(check.stdout) as { hosts: { tasks: { task: string; checks: { name: string; ok: boolean; detail: string }[] }[] }[] }
    ).hosts[0]!.tasks.find((t) => t.task === 'backup')!.checks
    expect(afterCheck.find((c) => c.name === 'last scheduled backup succeeded')).toMatchObject({ ok: true })

    // Too little free space: the run refuses before writing anything, and the after-check says so.
    await a.exec("sed -i 's/^BACKUP_MIN_FREE_MIB=.*/BACKUP_MIN_FREE_MIB=999999999/' /etc/matrix-provision/scheduled-backup.conf")
    try {
      const r = await a.exec('systemctl start matrix-provision-backup.service')
      expect(r.exitCode).not.toBe(0)
      expect((await a.exec('journalctl -u matrix-provision-backup.service --no-pager | tail -5')).stdout).toMatch(
        /MiB free in \/var\/backups\/matrix-provision/,
      )
      expect((await a.exec('ls -1A /var/backups/matrix-provision')).stdout.trim().split('\n')).toEqual(kept)
      const failed = await runCli(['check', '--inventory', inventoryA])
      expect(failed.code).toBe(1)
      expect(failed.stdout).toMatch(/last scheduled backup succeeded: the last scheduled backup failed/)
    } finally {
      await runCli(['--inventory', inventoryA, '--tasks', 'backup'])
    }
  })

  it('provision backup (bin/provision.js) copies A to this machine: 0700 directory, 0600 files, a manifest with sizes and hashes', async () => {
    // Text output (not --json, which keeps stderr quiet): the progress lines are checked below.
    const r = await timed('provision backup', () => runCli(['backup', '--inventory', inventoryA, '--to', backups]))
    expect(r.code, cliOutput(r)).toBe(0)
    const dirs = await readdir(backups)
    expect(dirs).toHaveLength(1)
    backupDir = join(backups, dirs[0]!)
    expect(r.stdout).toContain(backupDir)
    expect((await stat(backups)).mode & 0o777).toBe(0o700)
    expect((await stat(backupDir)).mode & 0o777).toBe(0o700)
    for (const f of await readdir(backupDir)) expect((await stat(join(backupDir, f))).mode & 0o777, f).toBe(0o600)
    const manifest = await readManifest(backupDir)
    await verifyBackupFiles(backupDir, manifest)
    expect(manifest).toMatchObject({ host: 'hs', serverName: SERVER, database: { host: 'hs', name: 'synapse' } })
    expect(manifest.synapse.schemaVersion).toBeGreaterThan(80)
    expect(manifest.signingKey.publicKey).toBe(Object.values(verifyKeyA as Record<string, { key: string }>)[0]!.key)
    expect(sha256(await readFile(join(backupDir, 'signing.key')))).toBe(signingKeyA.split(' ')[0])
    // CI: plain progress lines, no bars.
    expect(r.stderr).toMatch(/\[hs\] media\.tar: [\d.]+ MiB in [\d.]+ s/)
    expect(r.stderr).not.toContain('\r')
  })

  it('provision backup --encrypt-to (an age recipient): every part encrypted, nothing of the signing key or secrets readable without the identity', async () => {
    identity = join(env.dir, 'age-identity.txt')
    await run('age-keygen', ['-o', identity])
    const recipient = /^# public key: (age1\w+)$/m.exec(await readFile(identity, 'utf8'))![1]!
    const r = await timed('provision backup --encrypt-to', () =>
      runCli(['backup', '--inventory', inventoryA, '--to', encryptedBackups, '--encrypt-to', recipient, '--json']),
    )
    expect(r.code, cliOutput(r)).toBe(0)
    const dirs = await readdir(encryptedBackups)
    expect(dirs).toHaveLength(1)
    encryptedDir = join(encryptedBackups, dirs[0]!)
    const manifest = await readManifest(encryptedDir)
    await verifyBackupFiles(encryptedDir, manifest)
    const key = await readFile(join(backupDir, 'signing.key'), 'utf8')
    for (const f of await readdir(encryptedDir)) {
      if (f === MANIFEST_FILE) continue
      const bytes = await readFile(join(encryptedDir, f))
      expect(bytes.subarray(0, 21).toString('latin1'), f).toBe('age-encryption.org/v1')
      expect(bytes.includes(key.trim().split(' ').at(-1)!), f).toBe(false)
    }
  })

  it('host A is destroyed', async () => {
    await a.container.stop({ timeout: 2_000 })
    expect((await runCli(['check', '--inventory', inventoryA])).code).not.toBe(0)
  })

  it('bad input is refused with a clear error, exit 2, and B unchanged: missing file, hash mismatch, another server_name, a newer schema', async () => {
    const before = await fingerprint(b)
    const variant = async (name: string, change: (dir: string) => Promise<void>) => {
      const dir = join(env.dir, 'bad', name)
      await cp(backupDir, dir, { recursive: true })
      await change(dir)
      return dir
    }
    const manifestEdit = (edit: (m: Manifest) => void) => async (dir: string) => {
      const m = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as Manifest
      edit(m)
      await writeFile(join(dir, 'manifest.json'), JSON.stringify(m))
    }
    const cases: [string, (dir: string) => Promise<void>, RegExp][] = [
      ['missing', (dir) => rm(join(dir, 'signing.key')), /signing\.key: missing .*nothing was changed/],
      [
        'corrupted',
        async (dir) => {
          const f = join(dir, 'database.dump')
          const data = await readFile(f)
          data[data.length >> 1] = data[data.length >> 1]! ^ 0xff
          await writeFile(f, data)
        },
        /database\.dump: SHA-256 [0-9a-f]{64} does not match the manifest's/,
      ],
      ['other-server', manifestEdit((m) => (m.serverName = 'other.test')), /is a backup of other\.test, but hs serves dr\.test/],
      [
        'newer-schema',
        manifestEdit((m) => (m.synapse.schemaVersion += 1000)),
        /schema version \d+ .*newer than Synapse [\d.]+ on hs knows/,
      ],
    ]
    for (const [name, change, message] of cases) {
      const r = await runCli(['restore', '--inventory', inventoryB, '--limit', 'hs', '--from', await variant(name, change)])
      expect(r.code, `${name}: ${cliOutput(r)}`).toBe(2)
      expect(r.stdout + r.stderr, name).toMatch(message)
      expect(r.stdout + r.stderr).not.toMatch(/\n\s+at .*\.js:\d+/)
    }
    expect(await fingerprint(b)).toBe(before)
  })

  it(
    'provision restore onto B: the dry run prints the steps, the restore does them in that order',
    async () => {
      const before = await fingerprint(b)
      const plan = await runCli(['restore', '--inventory', inventoryB, '--limit', 'hs', '--from', backups, '--dry-run', '--json'])
      expect(plan.code, cliOutput(plan)).toBe(0)
      const planned = JSON.parse(plan.stdout) as { status: string; steps: { summary: string }[]; replaces: string[] }
      expect(planned.status).toBe('planned')
      expect(planned.replaces.join('\n')).toMatch(/database synapse on hs: 0 users/)
      expect(await fingerprint(b)).toBe(before)
      const r = await timed('provision restore', () =>
        runCli(['restore', '--inventory', inventoryB, '--limit', 'hs', '--from', backups, '--json'], { timeoutMs: 30 * 60_000 }),
      )
      expect(r.code, cliOutput(r)).toBe(0)
      const done = JSON.parse(r.stdout) as {
        status: string
        steps: { summary: string; done: boolean }[]
        apply: { hosts: { status: string; tasks: { checks: { phase: string; ok: boolean }[] }[] }[] }
      }
      expect(done.status).toBe('restored')
      expect(done.steps.map((s) => s.summary)).toEqual(planned.steps.map((s) => s.summary))
      expect(done.steps.every((s) => s.done)).toBe(true)
      const after = done.apply.hosts[0]!.tasks.flatMap((t) => t.checks.filter((c) => c.phase === 'after'))
      expect(after.length).toBeGreaterThanOrEqual(8)
      expect(after.filter((c) => !c.ok)).toEqual([])
      for (const unit of ['matrix-synapse', ...WORKERS])
        expect((await b.exec(`systemctl is-active ${unit}`)).stdout.trim(), unit).toBe('active')
    },
    35 * 60_000,
  )

  it('on B: the same passwords log in, the messages are there, the media downloads byte-equal, the signing key is the same file', async () => {
    const alice = await loggedIn(b, 'alice')
    await loggedIn(b, 'bob')
    const wrong = await client(b)
    await expect(wrong.login('alice', 'not-the-password')).rejects.toThrow(/403/)
    const bodies = await roomBodies(alice, roomId)
    for (const m of messages) expect(bodies).toContain(m)
    for (const m of media) {
      const dl = await downloadMedia(alice, m.mxc)
      expect(dl.status).toBe(200)
      expect(dl.body.length).toBe(m.bytes)
      expect(sha256(dl.body)).toBe(m.sha256)
    }
    expect((await b.exec('sha256sum < /etc/matrix-synapse/homeserver.signing.key')).stdout.trim()).toBe(signingKeyA)
    expect((await b.exec('stat -c "%U %a" /etc/matrix-synapse/homeserver.signing.key')).stdout.trim()).toBe('matrix-synapse 600')
    expect((await (await client(b)).call('GET', '/_matrix/key/v2/server')).json.verify_keys).toEqual(verifyKeyA)
    // No one-time key survives a restore (Synapse's backup guide; ESS truncates the table).
    expect(
      (await b.exec(`runuser -u postgres -- psql -XAt -d synapse -c "select count(*) from e2e_one_time_keys_json"`)).stdout.trim(),
    ).toBe('0')
  })

  it('a second restore without --force is refused: B now holds data, and nothing changes', async () => {
    const before = await fingerprint(b)
    const r = await runCli(['restore', '--inventory', inventoryB, '--limit', 'hs', '--from', backupDir])
    expect(r.code, cliOutput(r)).toBe(2)
    expect(r.stdout).toMatch(/already holds Synapse data \(2 users, 1 rooms, \d+ events, 4 local media/)
    expect(r.stdout).toMatch(/--force/)
    expect(await fingerprint(b)).toBe(before)
  })

  it(
    'restore --force --identity (the encrypted backup) onto B, which holds data of its own: the dry run names what it replaces, the restore brings back the backup and keeps the replaced database and media aside',
    async () => {
      // Data that exists only on B (written after the first restore): --force must replace it, and keep it.
      const alice = await loggedIn(b, 'alice')
      const onlyOnB = 'written on B after the restore, replaced by --force'
      expect(
        (
          await alice.call('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/only-b`, {
            msgtype: 'm.text',
            body: onlyOnB,
          })
        ).status,
      ).toBe(200)
      const upload = await binaryRequest(alice, 'POST', '/_matrix/media/v3/upload?filename=only-b.bin', randomBytes(4096))
      expect(upload.status, upload.body.toString()).toBe(200)
      const [, mediaServer = '', mediaOnlyB = ''] = /^mxc:\/\/([^/]+)\/(.+)$/.exec(
        (JSON.parse(upload.body.toString()) as { content_uri: string }).content_uri,
      )!

      const before = await fingerprint(b)
      // From the encrypted backup of A: --identity decrypts it (the same data as the plain one).
      const plan = await runCli([
        'restore',
        '--inventory',
        inventoryB,
        '--limit',
        'hs',
        '--from',
        encryptedDir,
        '--identity',
        identity,
        '--force',
        '--dry-run',
        '--json',
      ])
      expect(plan.code, cliOutput(plan)).toBe(0)
      const planned = JSON.parse(plan.stdout) as { status: string; steps: { summary: string }[]; replaces: string[] }
      expect(planned.status).toBe('planned')
      const kept =
        /database synapse on hs: 2 users, 1 rooms, \d+ events, 5 local media, schema \d+ \(kept as (synapse_replaced_1); drop it when satisfied\)/.exec(
          planned.replaces.join('\n'),
        )
      expect(kept, planned.replaces.join('\n')).not.toBeNull()
      const keptMedia = /\(kept in (\/var\/lib\/matrix-synapse\/media-replaced-1)\)/.exec(planned.replaces.join('\n'))
      expect(keptMedia, planned.replaces.join('\n')).not.toBeNull()
      expect(await fingerprint(b)).toBe(before)

      const r = await timed('provision restore --force', () =>
        runCli(
          ['restore', '--inventory', inventoryB, '--limit', 'hs', '--from', encryptedDir, '--identity', identity, '--force', '--json'],
          { timeoutMs: 30 * 60_000 },
        ),
      )
      expect(r.code, cliOutput(r)).toBe(0)
      const done = JSON.parse(r.stdout) as { status: string; replaces: string[]; steps: { summary: string; done: boolean }[] }
      expect(done.status).toBe('restored')
      // The plan is a promise: the same steps, and the same names for what is kept.
      expect(done.replaces).toEqual(planned.replaces)
      expect(done.steps.map((s) => s.summary)).toEqual(planned.steps.map((s) => s.summary))
      expect(done.steps.every((s) => s.done)).toBe(true)

      // The backup's state is back: its messages and media, and nothing written on B since.
      const after = await loggedIn(b, 'alice')
      const bodies = await roomBodies(after, roomId)
      for (const m of messages) expect(bodies).toContain(m)
      expect(bodies).not.toContain(onlyOnB)
      const first = media[0]!
      const dl = await downloadMedia(after, first.mxc)
      expect(dl.status).toBe(200)
      expect(sha256(dl.body)).toBe(first.sha256)
      expect((await binaryRequest(after, 'GET', `/_matrix/client/v1/media/download/${mediaServer}/${mediaOnlyB}`)).status).toBe(404)

      // What was replaced is kept under the names the plan gave: the old database still has B's message, the old media its file.
      const oldDb = kept![1]!
      const inOld = await b.exec(
        `runuser -u postgres -- psql -XAt -d ${oldDb} -c "select count(*) from event_json where json like '%replaced by --force%'"`,
      )
      expect(inOld.stdout.trim(), inOld.output).toBe('1')
      const oldMedia = await b.exec(
        `test -f ${keptMedia![1]}/local_content/${mediaOnlyB.slice(0, 2)}/${mediaOnlyB.slice(2, 4)}/${mediaOnlyB.slice(4)}`,
      )
      expect(oldMedia.exitCode, `${keptMedia![1]} lacks ${mediaOnlyB}`).toBe(0)
      expect((await b.exec('sha256sum < /etc/matrix-synapse/homeserver.signing.key')).stdout.trim()).toBe(signingKeyA)
      const check = await runCli(['check', '--inventory', inventoryB])
      expect(check.code, cliOutput(check)).toBe(0)
    },
    35 * 60_000,
  )
})
