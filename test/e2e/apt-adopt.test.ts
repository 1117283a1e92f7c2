import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { buildSignedAptRepoFromDebs, serveOnLoopback, upstreamVersion, type SynapseDebRepo } from '../support/apt-repo.js'
import { runCli } from '../support/cli.js'
import { buildGuideHost, guideImage, type GuideHost } from '../support/guide-host.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { writeTestInventory } from '../support/inventory.js'
import { MatrixClient, roomBodies } from '../support/matrix-client.js'

const SERVER = 'pkgguide.test'
const PUBLIC = 'matrix.pkgguide.test'
const KEY = '/etc/matrix-synapse/homeserver.signing.key'

interface JsonReport {
  hosts: {
    status: string
    error?: string
    adoption?: { notes: { kind: string; found: string; becomes: string }[]; secrets: { name: string }[] }
    tasks: {
      task: string
      changes: { resource: string; summary: string }[]
      restarts: unknown[]
      checks: { ok: boolean; phase: string; name: string; detail: string }[]
    }[]
  }[]
  totals: { add: number; change: number; restart: number; failedHosts: number }
}

/**
 * The guide's own install path taken over: a server built by hand from the real matrix-synapse-py3
 * package (test/support/guide-host.ts, install: apt) is adopted with install: apt, a second run changes
 * nothing, and the next version comes through the inventory in the upgrade order.
 */
describe.skipIf(!inject('docker'))('adopting a homeserver the guide built from the matrix-synapse-py3 package', () => {
  let env: TestHosts
  let hs: TestHost
  let repo: SynapseDebRepo
  let guide: GuideHost
  let url: string
  let OLD: string
  let NEW: string
  /** The CA clients trust: the guide's self-signed certificate, then the one the adoption makes. */
  let ca: string
  const started = Date.now()
  const client = (token?: string) => new MatrixClient({ port: hs.port(443), hostname: PUBLIC, ca, token })
  const inventoryFor = (version: string) =>
    writeTestInventory(
      env,
      [{ name: 'pkg', roles: ['apt-keyring', 'postgres', 'redis', 'synapse', 'workers', 'apache'] }],
      {
        serverName: SERVER,
        publicHost: PUBLIC,
        aptRepository: { url, suite: 'bookworm', components: ['main'], keyringFile: repo.keyringGpg, fingerprint: repo.fingerprint },
        synapse: { install: 'apt', version },
      },
      `inventory-${version}.yaml`,
    )
  const versions = async () => {
    const pkg = (await hs.exec("dpkg-query -W -f '${Version} ${db:Status-Abbrev}' matrix-synapse-py3")).stdout.trim()
    const build = async (port: number) =>
      ((await hs.exec(`curl -s http://127.0.0.1:${port}/_synapse/metrics | grep '^synapse_build_info'`)).stdout.match(
        /[{,]version="([^"]+)"/,
      ) ?? [])[1]
    return { pkg, main: await build(32982), federation_reader: await build(32981), federation_sender: await build(32980) }
  }
  const dataIntact = async () => {
    const alice = client(guide.token)
    const whoami = await alice.call<{ user_id: string }>('GET', '/_matrix/client/v3/account/whoami')
    expect(whoami.json.user_id, whoami.text).toBe(`@alice:${SERVER}`)
    const bob = client()
    await bob.login('bob', guide.users[1]!.password)
    const read = await roomBodies(bob, guide.roomId)
    for (const m of guide.messages) expect(read).toContain(m)
    expect((await hs.exec(`sha256sum ${KEY} | cut -d' ' -f1`)).stdout.trim()).toBe(guide.signingKeySha256)
  }

  beforeAll(async () => {
    const suite = await guideImage()
    env = await startHosts(['pkg'], { suite, ports: [443], aliases: { pkg: [SERVER, PUBLIC] } })
    hs = env.get('pkg')
    repo = await buildSignedAptRepoFromDebs({ dir: join(env.dir, 'repo'), suite: 'bookworm' })
    OLD = upstreamVersion(repo.versions.at(-2)!)
    NEW = upstreamVersion(repo.versions.at(-1)!)
    url = await serveOnLoopback(hs, repo)
    guide = await buildGuideHost(hs, {
      serverName: SERVER,
      publicHost: PUBLIC,
      install: { method: 'apt', repo, url, debVersion: repo.versions.at(-2)! },
    })
    ca = guide.ca
    console.log(`package guide host built in ${((Date.now() - started) / 1000).toFixed(0)} s`)
  })
  afterAll(async () => {
    await env?.stop()
    console.log(`apt-adopt.test.ts took ${((Date.now() - started) / 1000).toFixed(0)} s`)
  })

  /**
   * Every file holding one of the server's secrets (the database password, the secret store's values),
   * with its mode and owner, under the places the guide and the tool write.
   */
  const filesWithSecrets = async () => {
    const r = await hs.exec(
      `{ printf '%s\\n' ${JSON.stringify(guide.dbPassword)}; for f in /var/lib/matrix-provision/secrets/*; do [ -f "$f" ] && cat "$f" && echo; done | awk 'length >= 16'; } > /tmp/secret-patterns && grep -rlF -f /tmp/secret-patterns /etc /var/lib/matrix-provision /var/lib/matrix-synapse /var/backups 2>/dev/null | grep -v '^/var/lib/matrix-synapse/media' | xargs -r stat -c '%a %U:%G %n'; rm -f /tmp/secret-patterns`,
    )
    return r.stdout.trim().split('\n').filter(Boolean)
  }
  const worldReadable = (lines: string[]) => lines.filter((l) => (parseInt(l.split(' ')[0]!, 8) & 0o004) !== 0)

  it('adopt keeps install apt, the package and its units, the signing key, the database and the data; a second run changes nothing', async () => {
    await dataIntact()
    expect(await versions()).toMatchObject({ main: OLD, federation_reader: OLD, federation_sender: OLD })
    // What the guide's package-built server is: its edited homeserver.yaml holds the database password,
    // readable by all (the package's conffile mode); it sets no macaroon_secret_key, form_secret or
    // registration_shared_secret (the package removes them); the package's first start left an SQLite file.
    const before = await filesWithSecrets()
    console.log(`files holding a secret before adoption:\n  ${before.join('\n  ')}`)
    expect(worldReadable(before).filter((l) => l.endsWith(' /etc/matrix-synapse/homeserver.yaml'))).toHaveLength(1)
    expect((await hs.exec('grep -hE "^(macaroon_secret_key|form_secret|registration_shared_secret):" -r /etc/matrix-synapse')).stdout).toBe(
      '',
    )
    expect((await hs.exec('stat -c %s /var/lib/matrix-synapse/homeserver.db')).exitCode).toBe(0)
    const inventory = await inventoryFor(OLD)
    const dry = await runCli(['adopt', '--inventory', inventory, '--limit', 'pkg', '--dry-run'])
    console.log(dry.stdout)
    expect(dry.code, dry.stdout + dry.stderr).toBe(0)
    expect(dry.stdout).not.toContain('Synapse 1.')
    // The stray SQLite database is named and left; the macaroon key Synapse derived from the signing key cannot be kept, and the plan says what that changes.
    expect(dry.stdout).toMatch(/kept\s+\/var\/lib\/matrix-synapse\/homeserver\.db \(SQLite, \d+ KiB\)\s+-> left in place, unused/)
    expect(dry.stdout).toContain('no macaroon_secret_key (Synapse derives one from the signing key)')
    expect(dry.stdout).toMatch(/secret\s+homeserver\.yaml: database\.args\.password\s+-> secret store postgres-password/)
    const r = await runCli(['adopt', '--inventory', inventory, '--limit', 'pkg', '--json'], { timeoutMs: 900_000 })
    const report = JSON.parse(r.stdout) as JsonReport
    const host = report.hosts[0]!
    console.log(`adopt apply: ${host.tasks.map((t) => `${t.task} ${t.changes.length}`).join(', ')}`)
    expect(host.error ?? host.status, r.stderr).toBe('changed')
    expect(host.tasks.flatMap((t) => t.checks.filter((c) => c.phase === 'after' && !c.ok))).toEqual([])
    ca = (await hs.exec(`cat /etc/ssl/matrix-provision/${PUBLIC}.crt`)).stdout
    // The same package, held now, every process on it; the package's venv and unit in place.
    expect(await versions()).toEqual({ pkg: `${repo.versions.at(-2)} hi`, main: OLD, federation_reader: OLD, federation_sender: OLD })
    expect((await hs.exec('systemctl show -p FragmentPath --value matrix-synapse.service')).stdout.trim()).toBe(
      '/lib/systemd/system/matrix-synapse.service',
    )
    // alice's access token from before the adoption still works (dataIntact), and no file holding a secret is readable by all.
    await dataIntact()
    const after = await filesWithSecrets()
    console.log(`files holding a secret after adoption:\n  ${after.join('\n  ')}`)
    expect(worldReadable(after)).toEqual([])
    expect(after).toContain('640 root:matrix-synapse /etc/matrix-synapse/conf.d/20-database.yaml')
    expect((await hs.exec('stat -c "%a %U:%G" /etc/matrix-synapse/homeserver.yaml')).stdout.trim()).toBe('640 root:matrix-synapse')
    expect((await hs.exec('test -f /var/lib/matrix-synapse/homeserver.db')).exitCode).toBe(0)
    const again = JSON.parse((await runCli(['--inventory', inventory, '--json'])).stdout) as JsonReport
    expect(again.hosts[0]!.tasks.flatMap((t) => t.changes.map((c) => `${c.resource}: ${c.summary}`))).toEqual([])
    expect(again.totals).toMatchObject({ add: 0, change: 0, restart: 0, failedHosts: 0 })
    const check = await runCli(['check', '--inventory', inventory])
    expect(check.code, check.stdout).toBe(0)
  })

  it('then the next version through the inventory: upgraded in the upgrade order, data read back', async () => {
    const inventory = await inventoryFor(NEW)
    const r = await runCli(['--inventory', inventory, '--json'], { timeoutMs: 900_000 })
    const report = JSON.parse(r.stdout) as JsonReport
    expect(report.hosts[0]!.error ?? report.hosts[0]!.status, r.stderr).toBe('changed')
    expect(await versions()).toEqual({ pkg: `${repo.versions.at(-1)} hi`, main: NEW, federation_reader: NEW, federation_sender: NEW })
    await dataIntact()
    const check = await runCli(['check', '--inventory', inventory])
    expect(check.code, check.stdout).toBe(0)
  })
})
