import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { KEYRING, SOURCES } from '../../tasks/apt-keyring/index.js'
import { buildSignedAptRepo, buildUnrelatedKeyring, REPO_KEYRING_NAME, type SignedAptRepo } from '../support/apt-repo.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { provision, writeTestInventory } from '../support/inventory.js'

interface JsonReport {
  hosts: {
    host: string
    status: string
    error?: string
    tasks: {
      task: string
      changes: { resource: string; action: string }[]
      checks: { name: string; phase: string; ok: boolean; detail: string }[]
    }[]
  }[]
  totals: { add: number; change: number; restart: number; failedHosts: number }
}

/** The apt-keyring task against a real signed repository served by another host on the test network. */
describe.skipIf(!inject('docker'))('apt-keyring task against a signed repository on another host', () => {
  let env: TestHosts
  let target: TestHost
  let repo: SignedAptRepo
  let unrelated: { keyringGpg: string; fingerprint: string }

  const inventoryWith = (aptRepository: Record<string, unknown>, file: string) =>
    writeTestInventory(
      env,
      [{ name: 'target', roles: ['apt-keyring'] }],
      {
        serverName: 'example.test',
        aptRepository: { url: 'http://repo:8080/', suite: 'bookworm', components: ['main'], ...aptRepository },
      },
      file,
    )

  async function apply(inventory: string): Promise<{ code: number; report: JsonReport; stderr: string }> {
    const r = await provision(['--inventory', inventory, '--json'])
    return { code: r.code, report: JSON.parse(r.stdout) as JsonReport, stderr: r.stderr }
  }
  const afterChecks = (report: JsonReport) => report.hosts[0]!.tasks.flatMap((t) => t.checks.filter((c) => c.phase === 'after'))

  beforeAll(async () => {
    env = await startHosts(['repo', 'target'])
    target = env.get('target')
    repo = await buildSignedAptRepo({ dir: join(env.dir, 'repo'), suite: 'bookworm' })
    unrelated = await buildUnrelatedKeyring(join(env.dir, 'unrelated.gpg'))
    const server = env.get('repo')
    await server.container.copyDirectoriesToContainer([{ source: repo.dir, target: '/srv/repo' }])
    const started = await server.exec(
      'systemd-run --unit mp-apt-repo python3 -m http.server 8080 --directory /srv/repo && for i in $(seq 300); do curl -sf http://127.0.0.1:8080/dists/bookworm/InRelease >/dev/null && exit 0; sleep 0.2; done; exit 1',
    )
    expect(started.exitCode, started.output).toBe(0)
  })
  afterAll(async () => {
    await env?.stop()
  })

  it('installs the keyring and the source; apt verifies the repository and installs from it; a second run changes nothing', async () => {
    const inventory = await inventoryWith({ keyringFile: repo.keyringGpg, fingerprint: repo.fingerprint }, 'file.yaml')
    const { code, report, stderr } = await apply(inventory)
    expect(report.hosts[0]!.error ?? report.hosts[0]!.status, stderr).toBe('changed')
    expect(code).toBe(0)
    expect(afterChecks(report)).toEqual([expect.objectContaining({ name: 'apt sees the repository and its signature verifies', ok: true })])
    const installed = await target.exec(`sha256sum < ${KEYRING}; cat ${SOURCES}`)
    const { createHash } = await import('node:crypto')
    const { readFile } = await import('node:fs/promises')
    expect(installed.stdout).toBe(
      `${createHash('sha256')
        .update(await readFile(repo.keyringGpg))
        .digest('hex')}  -\ndeb [signed-by=${KEYRING}] http://repo:8080/ bookworm main\n`,
    )
    const probe = await target.exec(
      `DEBIAN_FRONTEND=noninteractive apt-get install -y ${repo.packageName} 2>&1 && cat /usr/share/${repo.packageName}/probe`,
    )
    expect(probe.exitCode, probe.output).toBe(0)
    expect(probe.stdout).toContain(`${repo.packageName} ${repo.packageVersion}`)

    const again = await apply(inventory)
    expect(again.code).toBe(0)
    expect(again.report.totals).toMatchObject({ add: 0, change: 0, restart: 0, failedHosts: 0 })
  })

  it('with an unrelated keyring the after-check fails: apt reports the repository as not signed by a key it has', async () => {
    const inventory = await inventoryWith({ keyringFile: unrelated.keyringGpg, fingerprint: unrelated.fingerprint }, 'unrelated.yaml')
    const { code, report } = await apply(inventory)
    expect(code).toBe(1)
    const host = report.hosts[0]!
    expect(host.status).toBe('failed')
    expect(host.error).toMatch(
      /after-checks failed: apt sees the repository and its signature verifies: apt-get update of http:\/\/repo:8080\/ failed:/,
    )
    expect(host.error).toMatch(/NO_PUBKEY|not signed/)
    expect(afterChecks(report)[0]!.ok).toBe(false)
  })

  it('a keyringFile that does not hold the expected fingerprint is refused on the controller, before anything changes', async () => {
    const before = await target.exec(`sha256sum ${KEYRING}`)
    const inventory = await inventoryWith({ keyringFile: unrelated.keyringGpg, fingerprint: repo.fingerprint }, 'mismatch.yaml')
    const { code, report } = await apply(inventory)
    expect(code).toBe(1)
    expect(report.hosts[0]!.error).toContain(`holds ${unrelated.fingerprint}, not the expected ${repo.fingerprint}`)
    expect(report.hosts[0]!.tasks.flatMap((t) => t.changes)).toEqual([])
    expect((await target.exec(`sha256sum ${KEYRING}`)).stdout).toBe(before.stdout)
  })

  it('keyringUrl: the key is downloaded by the host and installed when its fingerprint matches', async () => {
    const inventory = await inventoryWith(
      { keyringUrl: `http://repo:8080/${REPO_KEYRING_NAME}`, fingerprint: repo.fingerprint },
      'url.yaml',
    )
    const { code, report, stderr } = await apply(inventory)
    expect(report.hosts[0]!.error ?? report.hosts[0]!.status, stderr).toBe('changed')
    expect(code).toBe(0)
    expect(report.hosts[0]!.tasks[0]!.changes.map((c) => c.resource)).toEqual(['command:download the matrix.org keyring'])
    expect(afterChecks(report)[0]!.ok).toBe(true)
    const fpr = await target.exec(`gpg --batch --show-keys --with-colons ${KEYRING} | awk -F: '$1=="fpr" {print $10}'`)
    expect(fpr.stdout.trim()).toBe(repo.fingerprint)
    const again = await apply(inventory)
    expect(again.report.totals).toMatchObject({ add: 0, change: 0, restart: 0, failedHosts: 0 })
  })

  it('keyringUrl with a wrong fingerprint: the run fails and no keyring is installed', async () => {
    await target.exec(`rm -f ${KEYRING}`)
    const inventory = await inventoryWith(
      { keyringUrl: `http://repo:8080/${REPO_KEYRING_NAME}`, fingerprint: unrelated.fingerprint },
      'wrong-fpr.yaml',
    )
    const { code, report } = await apply(inventory)
    expect(code).toBe(1)
    const host = report.hosts[0]!
    expect(host.status).toBe('failed')
    expect(host.error).toContain(`the key at http://repo:8080/${REPO_KEYRING_NAME} does not have fingerprint ${unrelated.fingerprint}`)
    expect((await target.exec(`test -e ${KEYRING}`)).exitCode).not.toBe(0)
    expect((await target.exec(`ls -A /usr/share/keyrings/ /tmp`)).stdout).not.toMatch(/tmp\.\w+/)
  })
})
