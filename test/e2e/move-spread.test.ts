import { createHash } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { parse, parseDocument } from 'yaml'
import { pipSynapseVars, SYNAPSE_VERSION } from '../support/artifacts.js'
import type { MoveReport } from '../../src/commands/move/report.js'
import { runCli } from '../support/cli.js'
import { buildGuideHost, type GuideHost } from '../support/guide-host.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { MatrixClient, roomBodies } from '../support/matrix-client.js'
import { moveArtifacts, writeMoveInventory } from '../support/move-setup.js'
import { debian13Suite } from '../support/suites.js'

const SERVER = 'old.test'
const PUBLIC = 'matrix.old.test'
const OLD_VERSION = '1.141.0'
const OLD_KEY = `/etc/matrix-synapse/${SERVER}.signing.key`
/** Main, Apache, Redis and the federation reader on new; PostgreSQL, the media repository and the federation sender on newdb. */
const ON_NEWDB = ['matrix-synapse-worker@federation_sender.service', 'matrix-synapse-worker@media_repository.service']
const ON_NEW = ['matrix-synapse.service', 'matrix-synapse-worker@federation_reader.service']

/**
 * `provision move` onto a NEW spread over two hosts, from the same kind of OLD as move.test.ts (Debian 11,
 * Python 3.9, PostgreSQL 13, Synapse 1.141.0, the guide's workers): the dump goes into newdb's
 * PostgreSQL, the media to newdb (its media repository's store), the workers of both hosts start
 * after main on new serves. The inventory gives OLD's signing key and secrets (a spread homeserver's
 * hosts read the same values: the loader asks for them), as the README tells the operator to.
 */
describe.skipIf(!inject('docker'))('moving a homeserver onto a NEW spread over two hosts', () => {
  let oldEnv: TestHosts
  let newEnv: TestHosts
  let oldHost: TestHost
  let newHost: TestHost
  let newDb: TestHost
  let guide: GuideHost
  let inventory: string
  let ca: string
  const media: { uri: string; sha256: string }[] = []
  const runEnv: Record<string, string> = {
    DB_PASSWORD: 'spread-db-secret-1234',
    REDIS_PASSWORD: 'spread-redis-5678',
    REPLICATION: 'spread-repl-0123456789',
  }
  const started = Date.now()
  const client = (host: TestHost, token?: string) =>
    new MatrixClient({ port: host.port(443), hostname: PUBLIC, ca: host === oldHost ? guide.ca : ca, token })
  const active = async (h: TestHost, units: string[]) =>
    (await h.exec(`systemctl is-active ${units.join(' ')}; true`)).stdout.trim().split('\n')

  beforeAll(async () => {
    const { oldWheels, newWheels, oldSuite, localCa, ca: newCa } = await moveArtifacts(OLD_VERSION)
    ca = newCa
    ;[oldEnv, newEnv] = await Promise.all([
      startHosts(['old'], { suite: oldSuite, ports: [443], aliases: { old: [SERVER, PUBLIC] } }),
      startHosts(['new', 'newdb'], { suite: debian13Suite(), ports: [443], aliases: { new: [SERVER, PUBLIC] } }),
    ])
    oldHost = oldEnv.get('old')
    newHost = newEnv.get('new')
    newDb = newEnv.get('newdb')
    guide = await buildGuideHost(oldHost, {
      serverName: SERVER,
      publicHost: PUBLIC,
      install: { method: 'pip', wheelhouse: oldWheels.dir, instanceMap: true },
    })
    const alice = client(oldHost, guide.token)
    media.push({ uri: guide.mediaUri, sha256: guide.mediaSha256 })
    for (let i = 0; i < 3; i++) {
      const data = Buffer.alloc(200_000 + i, i + 7)
      media.push({
        uri: await alice.upload(data, 'application/octet-stream', `s${i}.bin`),
        sha256: createHash('sha256').update(data).digest('hex'),
      })
    }
    // What the operator copies from OLD to the controller: the key file, and the secrets of its homeserver.yaml.
    await writeFile(join(newEnv.dir, 'old.signing.key'), (await oldHost.exec(`cat ${OLD_KEY}`)).stdout)
    const conf = parse((await oldHost.exec('cat /etc/matrix-synapse/homeserver.yaml')).stdout) as Record<string, string>
    Object.assign(runEnv, { MACAROON: conf.macaroon_secret_key, FORM: conf.form_secret, REGISTRATION: conf.registration_shared_secret })
    // A certificate from a private CA (standing in for OLD's), trusted by NEW through federationCaFiles as the preflight says.
    const cert = await localCa.issue('new', [PUBLIC, SERVER])
    inventory = await writeMoveInventory(
      oldEnv,
      newEnv,
      {
        old: [oldHost, ['postgres', 'synapse']],
        new: [newHost, ['redis', 'synapse', 'workers', 'apache']],
        newdb: [newDb, ['postgres', 'workers']],
      },
      {
        serverName: SERVER,
        publicHost: PUBLIC,
        apache: { tls: { mode: 'files', certificateFile: cert.certFile, keyFile: cert.keyFile } },
        postgres: { host: 'newdb', password: { env: 'DB_PASSWORD' } },
        redis: { password: { env: 'REDIS_PASSWORD' } },
        synapse: {
          ...pipSynapseVars(newWheels),
          federationCaFiles: [localCa.caFile],
          signingKey: { file: join(newEnv.dir, 'old.signing.key') },
          macaroonSecret: { env: 'MACAROON' },
          formSecret: { env: 'FORM' },
          registrationSharedSecret: { env: 'REGISTRATION' },
        },
        workers: {
          replicationSecret: { env: 'REPLICATION' },
          instances: [
            { name: 'federation_reader', kind: 'federation_reader' },
            { name: 'federation_sender', kind: 'federation_sender', host: 'newdb' },
            { name: 'media_repository', kind: 'media_repository', host: 'newdb' },
          ],
        },
      },
      'move-spread.yaml',
    )
    console.log(`old host built in ${((Date.now() - started) / 1000).toFixed(0)} s`)
  })
  afterAll(async () => {
    await Promise.all([oldEnv?.stop(), newEnv?.stop()])
    console.log(`move-spread.test.ts took ${((Date.now() - started) / 1000).toFixed(0)} s`)
  })

  const move = async (extra: string[] = []) => {
    const r = await runCli(['move', '--inventory', inventory, '--from', 'old', '--to', 'new', '--json', ...extra], {
      env: { ...process.env, ...runEnv },
      timeoutMs: 1_800_000,
    })
    return { ...r, report: JSON.parse(r.stdout || '{}') as MoveReport }
  }

  it('--dry-run checks every NEW host and prints the procedure per host; nothing changes', async () => {
    const r = await move(['--dry-run'])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.report.status).toBe('planned')
    expect(r.report.layout).toMatchObject({ main: 'new', database: 'newdb', media: 'newdb', hosts: ['new', 'newdb'] })
    expect(r.report.preflight.filter((c) => !c.ok)).toEqual([])
    const names = r.report.preflight.map((c) => c.name)
    for (const name of [
      "newdb's PostgreSQL",
      "new's Python",
      "newdb's Python",
      'free space on newdb',
      "synapse.signingKey is OLD's",
      "synapse.macaroonSecret is OLD's",
    ])
      expect(names).toContain(name)
    expect(Object.fromEntries(r.report.steps.map((s) => [s.name, s.hosts]))).toMatchObject({
      provision: ['new', 'newdb'],
      'media-1': ['newdb'],
      database: ['newdb'],
      'start-main': ['new'],
      start: ['new', 'newdb'],
    })
    const text = await runCli(['move', '--inventory', inventory, '--from', 'old', '--to', 'new', '--dry-run'], {
      env: { ...process.env, ...runEnv },
    })
    expect(text.stdout).toContain('new spread: main new, database newdb, media newdb')
    expect((await newDb.exec('test -e /opt/venvs/matrix-synapse; echo $?')).stdout.trim()).toBe('1')
  })

  it(`moves OLD (${OLD_VERSION}) onto new + newdb (${SYNAPSE_VERSION}): the database in newdb's PostgreSQL, the media on newdb, every worker running`, async () => {
    const r = await move()
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.report.status, r.report.error).toBe('moved')
    console.log(
      `spread move: downtime ${((r.report.downtimeMs ?? 0) / 1000).toFixed(1)} s; ${r.report.steps.map((s) => `${s.name} ${((s.durationMs ?? 0) / 1000).toFixed(1)}`).join(', ')}`,
    )
    // Where main's start after the cut-over goes (the downtime's last part): its own log, from the last start.
    const startLog = await newHost.exec(
      `tac /var/log/matrix-synapse/homeserver.log | sed '/Server hostname:/q' | tac | grep -E 'Server hostname|Preparing database|Upgrading schema|Applying schema|Applying engine|Synapse now listening|Loading' | head -40; true`,
    )
    console.log(`main's start on new after the cut-over:\n${startLog.stdout}`)
    expect(await active(newHost, ON_NEW)).toEqual(['active', 'active'])
    expect(await active(newDb, ON_NEWDB)).toEqual(['active', 'active'])
    // The data is in newdb's PostgreSQL; new runs none.
    const users = await newDb.exec('runuser -u postgres -- psql -At -d synapse -c "SELECT count(*) FROM users"')
    expect(Number(users.stdout.trim())).toBe(guide.users.length)
    expect((await newHost.exec('systemctl is-active postgresql; true')).stdout.trim()).not.toBe('active')
    expect(
      (await newDb.exec('runuser -u postgres -- psql -At -d synapse -c "SELECT count(*) FROM background_updates"')).stdout.trim(),
    ).toBe('0')
    // Every media file sits in newdb's store; main's host keeps none.
    expect(Number((await newDb.exec('find /var/lib/matrix-synapse/media -type f | wc -l')).stdout.trim())).toBeGreaterThanOrEqual(
      media.length,
    )
    expect((await newHost.exec('find /var/lib/matrix-synapse/media -type f 2>/dev/null | wc -l')).stdout.trim()).toBe('0')
  }, 1_800_000)

  it('NEW is the same server: key, passwords, the old token, messages, every media file through the media worker; check passes', async () => {
    const anon = client(newHost)
    const keyFile = (await oldHost.exec(`cat ${OLD_KEY}`)).stdout.trim().split(/\s+/)
    const published = await anon.call<{ verify_keys: Record<string, { key: string }> }>('GET', '/_matrix/key/v2/server')
    expect(Object.keys(published.json.verify_keys)).toEqual([`ed25519:${keyFile[1]}`])
    for (const u of guide.users) {
      const c = client(newHost)
      await c.login(u.name, u.password)
      expect(c.token).toBeTruthy()
    }
    const alice = client(newHost, guide.token)
    expect((await alice.call<{ user_id: string }>('GET', '/_matrix/client/v3/account/whoami')).json.user_id).toBe(`@alice:${SERVER}`)
    expect((await roomBodies(alice, guide.roomId)).filter((b) => b !== undefined).reverse()).toEqual(guide.messages)
    const servedBefore = Number(
      (
        await newDb.exec('grep -c "GET /_matrix/client/v1/media/download" /var/log/matrix-synapse/media_repository.log || true')
      ).stdout.trim() || 0,
    )
    for (const m of media) {
      const got = await alice.raw('GET', `/_matrix/client/v1/media/download/${m.uri.replace('mxc://', '')}`)
      expect(got.status, m.uri).toBe(200)
      expect(createHash('sha256').update(got.body).digest('hex')).toBe(m.sha256)
    }
    // Served by the media repository on newdb, from its store.
    const servedAfter = Number(
      (
        await newDb.exec('grep -c "GET /_matrix/client/v1/media/download" /var/log/matrix-synapse/media_repository.log || true')
      ).stdout.trim() || 0,
    )
    expect(servedAfter - servedBefore).toBeGreaterThanOrEqual(media.length)
    const after = join(newEnv.dir, 'after-move.yaml')
    const doc = parseDocument(await readFile(inventory, 'utf8'))
    doc.deleteIn(['hosts', 'old'])
    await writeFile(after, doc.toString())
    const check = await runCli(['check', '--inventory', after], { env: { ...process.env, ...runEnv }, timeoutMs: 900_000 })
    expect(check.code, check.stdout + check.stderr).toBe(0)
  })

  it('OLD is stopped and masked; a second run changes nothing; --abort is refused now that NEW has served', async () => {
    for (const u of ['matrix-synapse.service', 'matrix-synapse-worker@federation_reader.service'])
      expect((await oldHost.exec(`systemctl is-enabled ${u}; true`)).stdout.trim(), u).toBe('masked')
    expect((await oldHost.exec(`sha256sum ${OLD_KEY} | cut -d' ' -f1`)).stdout.trim()).toBe(guide.signingKeySha256)
    const pids = async () => [
      (await newHost.exec('systemctl show -p MainPID --value matrix-synapse')).stdout.trim(),
      (await newDb.exec('systemctl show -p MainPID --value matrix-synapse-worker@media_repository')).stdout.trim(),
    ]
    const before = await pids()
    const again = await move()
    expect(again.code, again.stdout + again.stderr).toBe(0)
    expect(again.report.status).toBe('unchanged')
    expect(await pids()).toEqual(before)
    const aborted = await move(['--abort'])
    expect(aborted.report.status).toBe('refused')
    expect(await active(newDb, ON_NEWDB)).toEqual(['active', 'active'])
  })
})
