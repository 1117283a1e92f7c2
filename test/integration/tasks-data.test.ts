import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { startHosts, type TestHosts } from '../support/hosts.js'
import { provision, writeTestInventory } from '../support/inventory.js'
import { DEFAULT_SUITE, debian13Suite, postgresCluster, suiteFacts } from '../support/suites.js'
import { jsonReport } from '../support/cli.js'

// Postgres and Redis on Debian 12 and Debian 13 at once: one inventory, two real hosts.
describe.skipIf(!inject('docker'))('postgres and redis tasks on bookworm and trixie', () => {
  let bookworm: TestHosts
  let trixie: TestHosts
  let inventory: string
  const env = { ...process.env, DB_PASSWORD: 'db-pass-0123456789' }

  beforeAll(async () => {
    ;[bookworm, trixie] = await Promise.all([startHosts(['db12']), startHosts(['db13'], { suite: debian13Suite() })])
    // One inventory over both: write known_hosts/keys of both into one file set.
    const { writeFile, readFile } = await import('node:fs/promises')
    await writeFile(
      bookworm.knownHostsFile,
      (await readFile(bookworm.knownHostsFile, 'utf8')) + (await readFile(trixie.knownHostsFile, 'utf8')),
    )
    const merged = { ...bookworm, get: (n: string) => (n === 'db13' ? trixie.get(n) : bookworm.get(n)) }
    inventory = await writeTestInventory(
      merged,
      [
        { name: 'db12', roles: ['postgres', 'redis'] },
        { name: 'db13', roles: ['postgres', 'redis'], vars: { postgres: { host: 'db13' }, redis: { host: 'db13' } } },
      ],
      { serverName: 'example.test', postgres: { host: 'db12', password: { env: 'DB_PASSWORD' } }, redis: { host: 'db12' } },
    )
  })
  afterAll(async () => {
    await Promise.all([bookworm?.stop(), trixie?.stop()])
  })

  it('a dry run on fresh hosts predicts the whole chain and changes nothing', async () => {
    const before = await bookworm.get('db12').exec('dpkg -l | wc -l; ls /etc/postgresql 2>&1; ls /var/lib/matrix-provision 2>&1')
    const r = await provision(['--inventory', inventory, '--dry-run', '--exit-code'], env)
    expect(r.stderr).not.toMatch(/\n\s+at /)
    expect(r.code).toBe(10)
    expect(r.stdout).toMatch(/\+ install postgresql/)
    expect(r.stdout).toMatch(/start postgresql.service \(unit comes with package postgresql/)
    expect(r.stdout).toMatch(/create Postgres role synapse_user.*may change: Postgres is not installed/)
    expect(r.stdout).toMatch(/Plan: \d+ to add/)
    const after = await bookworm.get('db12').exec('dpkg -l | wc -l; ls /etc/postgresql 2>&1; ls /var/lib/matrix-provision 2>&1')
    expect(after.output).toBe(before.output)
  })

  it('applies: role over TCP, UTF8/C database, Redis PONG on 32992; after-checks pass on both OSes', async () => {
    const r = await provision(['--inventory', inventory, '--json'], env)
    const report = jsonReport(r.stdout)
    expect(report.hosts.map((h: { status: string; error?: string }) => h.error ?? h.status)).toEqual(['changed', 'changed'])
    for (const h of report.hosts) {
      const checks = h.tasks.flatMap((t: { checks: { phase: string; ok: boolean; name: string }[] }) =>
        t.checks.filter((c) => c.phase === 'after'),
      )
      expect(checks.length).toBeGreaterThanOrEqual(2)
      expect(checks.every((c: { ok: boolean }) => c.ok)).toBe(true)
    }
    expect(r.stdout).not.toContain('db-pass-0123456789')
    const pg = await trixie
      .get('db13')
      .exec(
        'runuser -u postgres -- psql -Atc "select pg_encoding_to_char(encoding), datcollate, datctype from pg_database where datname=\'synapse\'"; ls /etc/postgresql',
      )
    expect(pg.stdout).toContain('UTF8|C|C')
    expect(pg.stdout).toContain(String(suiteFacts(debian13Suite()).postgres))
    const redis = await bookworm.get('db12').exec('redis-cli -p 32992 ping; ss -Htln | grep 32992')
    expect(redis.stdout).toContain('PONG')
    expect(redis.stdout).toMatch(/127\.0\.0\.1:32992/)
  })

  it('a second run changes nothing and restarts nothing', async () => {
    const starts = async () =>
      (await bookworm.get('db12').exec(`systemctl show -p ActiveEnterTimestampMonotonic ${postgresCluster(DEFAULT_SUITE)} redis-server`))
        .stdout
    const before = await starts()
    const r = await provision(['--inventory', inventory], env)
    expect(r.stdout + r.stderr).not.toMatch(/FAILED|✗/)
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/db12: no changes/)
    expect(r.stdout).toMatch(/db13: no changes/)
    expect(await starts()).toBe(before)
    const dry = await provision(['--inventory', inventory, '--dry-run', '--exit-code'], env)
    expect(dry.code).toBe(0)
    expect(dry.stdout).toContain('Plan: no changes.')
  })
})
