import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { ELEMENT_VERSION, elementRelease } from '../support/artifacts.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { provision, writeTestInventory } from '../support/inventory.js'
import { debian13Suite } from '../support/suites.js'
import { listening } from '../support/wait.js'
import { jsonReport } from '../support/cli.js'

// The apache task alone on Debian 13 (the full stack runs on Debian 12 in the e2e tests).
describe.skipIf(!inject('docker'))('apache task on trixie', () => {
  let env: TestHosts
  let web: TestHost
  let inventory: string

  beforeAll(async () => {
    env = await startHosts(['web13'], { suite: debian13Suite(), aliases: { web13: ['web.test', 'matrix.web.test'] } })
    web = env.get('web13')
    inventory = await writeTestInventory(env, [{ name: 'web13', roles: ['apache'] }], { serverName: 'web.test' })
  })
  afterAll(async () => {
    await env?.stop()
  })

  it('a port taken by another program refuses the host before anything changes, in the dry run too', async () => {
    expect((await web.exec(`systemd-run --unit squatter python3 -m http.server 443 && ${listening(443)}`)).exitCode).toBe(0)
    try {
      for (const args of [['--dry-run'], []]) {
        const r = await provision(['--inventory', inventory, ...args])
        expect(r.code).toBe(1)
        expect(r.stdout).toMatch(/port 443 \(for Apache HTTPS\) is taken by python3/)
      }
      expect((await web.exec('dpkg -s apache2 >/dev/null 2>&1 && echo installed || echo absent')).stdout.trim()).toBe('absent')
    } finally {
      await web.exec('systemctl stop squatter')
    }
  })

  it('applies: TLS vhosts, .well-known JSON, configtest clean; after-checks pass; a second run changes nothing', async () => {
    const r = await provision(['--inventory', inventory, '--json'])
    const host = jsonReport(r.stdout).hosts[0]!
    expect(host.error ?? host.status, r.stderr).toBe('changed')
    const after = host.tasks[0]!.checks.filter((c: { phase: string }) => c.phase === 'after')
    expect(after.map((c: { name: string; ok: boolean }) => [c.name, c.ok])).toEqual([
      ['https://matrix.web.test proxies the client API', true],
      ['.well-known/matrix/server and /client are valid JSON', true],
    ])
    const wk = await web.exec(
      'curl -sf --cacert /etc/ssl/matrix-provision/matrix.web.test.crt --resolve web.test:443:127.0.0.1 https://web.test/.well-known/matrix/server',
    )
    expect(JSON.parse(wk.stdout)).toEqual({ 'm.server': 'matrix.web.test:443' })
    expect((await web.exec('apache2ctl configtest 2>&1')).output).toContain('Syntax OK')
    const redirect = await web.exec(
      'curl -s -o /dev/null -w "%{http_code} %{redirect_url}" --resolve matrix.web.test:80:127.0.0.1 http://matrix.web.test/_matrix/client/versions',
    )
    expect(redirect.stdout).toBe('301 https://matrix.web.test/_matrix/client/versions')
    const started = (await web.exec('systemctl show -p ActiveEnterTimestampMonotonic apache2')).stdout
    const again = await provision(['--inventory', inventory])
    expect(again.code, again.stdout).toBe(0)
    expect(again.stdout).toContain('web13: no changes')
    expect((await web.exec('systemctl show -p ActiveEnterTimestampMonotonic apache2')).stdout).toBe(started)
  })

  it('Element from a URL: a download cut short is not reused; a truncated cache is fetched again and verified (SHA-256 + GPG)', async () => {
    const element = await elementRelease()
    const name = `element-v${ELEMENT_VERSION}.tar.gz`
    const cache = `/var/cache/matrix-provision/element/${name}`
    await web.container.copyFilesToContainer([
      { source: element.tarball, target: `/srv/element-dl/${name}` },
      { source: element.signature, target: `/srv/element-dl/${name}.asc` },
    ])
    const inventory = await writeTestInventory(
      env,
      [{ name: 'web13', roles: ['apache', 'element'] }],
      {
        serverName: 'web.test',
        element: {
          version: ELEMENT_VERSION,
          url: `http://127.0.0.1:8099/${name}`,
          signatureUrl: `http://127.0.0.1:8099/${name}.asc`,
          releaseKeyFile: element.releaseKey,
          sha256: element.sha256,
        },
      },
      'element-url.yaml',
    )
    // An earlier download cut short left the first KiB of the release in the cache.
    await web.exec(`mkdir -p /var/cache/matrix-provision/element && head -c 1024 /srv/element-dl/${name} > ${cache}`)

    // The server is down: the run fails on the download itself, not on the stale cache, and installs nothing.
    const down = await provision(['--inventory', inventory, '--json'])
    const failed = jsonReport(down.stdout).hosts[0]!
    expect(failed.status).toBe('failed')
    expect(JSON.stringify(failed)).toMatch(/curl: \(7\)/)
    expect((await web.exec('ls /var/www/element')).stdout).not.toContain('element-v')

    expect(
      (
        await web.exec(
          `systemd-run --unit element-dl python3 -m http.server 8099 --bind 127.0.0.1 --directory /srv/element-dl && ${listening(8099)}`,
        )
      ).exitCode,
    ).toBe(0)
    try {
      const r = await provision(['--inventory', inventory, '--json'])
      const host = jsonReport(r.stdout).hosts[0]!
      expect(host.error ?? host.status, r.stderr).toBe('changed')
      const element = host.tasks.find((t: { task: string }) => t.task === 'element')
      expect(element!.checks.filter((c: { phase: string }) => c.phase === 'after').map((c: { ok: boolean }) => c.ok)).toEqual([true])
      expect((await web.exec(`sha256sum < ${cache}`)).stdout.split(' ')[0]).toBe(
        (await web.exec(`sha256sum < /srv/element-dl/${name}`)).stdout.split(' ')[0],
      )
      expect((await web.exec('readlink /var/www/element/current')).stdout.trim()).toBe(`element-v${ELEMENT_VERSION}`)
      const again = await provision(['--inventory', inventory])
      expect(again.code, again.stdout).toBe(0)
      expect(again.stdout).toContain('web13: no changes')
    } finally {
      await web.exec('systemctl stop element-dl')
    }
  })
})
