import { execFile } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { withCacheLock } from '../../src/artifacts/cache-lock.js'
import { CACHE_DIR } from './artifacts.js'
import type { TestHost } from './hosts.js'
import type { createLocalCa } from './local-ca.js'

const run = promisify(execFile)

/** A .deb from Debian's archive, downloaded on this machine once (apt-get download) and cached. */
async function debFromArchive(name: string): Promise<string> {
  const dir = join(CACHE_DIR, 'debs')
  mkdirSync(dir, { recursive: true })
  const have = () => readdirSync(dir).find((f) => f.startsWith(`${name}_`) && f.endsWith('.deb'))
  // apt-get download writes the .deb in place: another test file at once must not take a half-written one.
  await withCacheLock(join(dir, `.${name}.lock`), async () => {
    if (have()) return
    // Package lists may be missing or stale on a fresh machine: update once, then try again.
    await run('apt-get', ['download', '-q', name], { cwd: dir })
      .catch(() => run('apt-get', ['update', '-qq']).then(() => run('apt-get', ['download', '-q', name], { cwd: dir })))
      .catch((error: Error & { stderr?: string }) => {
        throw new Error(`apt-get download ${name} failed (is Debian's archive reachable?): ${error.stderr ?? error.message}`, {
          cause: error,
        })
      })
  })
  return join(dir, have()!)
}

export interface Pebble {
  /** The ACME directory URL, as the other hosts of the test network reach it. */
  directoryUrl: string
  /** The root pebble issues certificates under (generated at its start). */
  rootPem(): Promise<string>
}

/**
 * Pebble, Let's Encrypt's ACME test server (Debian's package), on one test host: the real ACME
 * protocol and HTTP-01 validation over the test network, where Let's Encrypt itself is unreachable.
 * Its own HTTPS certificate comes from the local CA; it validates challenges on port 80.
 */
export async function startPebble(host: TestHost, ca: Awaited<ReturnType<typeof createLocalCa>>): Promise<Pebble> {
  const deb = await debFromArchive('pebble')
  const tls = await ca.issue('pebble', [host.name])
  const config = {
    pebble: {
      listenAddress: '0.0.0.0:14000',
      managementListenAddress: '0.0.0.0:15000',
      certificate: '/etc/pebble/cert.pem',
      privateKey: '/etc/pebble/key.pem',
      httpPort: 80,
      tlsPort: 5001,
      ocspResponderURL: '',
      externalAccountBindingRequired: false,
    },
  }
  // Not /tmp: a tmpfs in the container hides what docker cp puts there.
  await host.container.copyFilesToContainer([{ source: deb, target: '/root/pebble.deb' }])
  await host.container.copyContentToContainer([
    { content: readFileSync(tls.certFile), target: '/etc/pebble/cert.pem' },
    { content: readFileSync(tls.keyFile), target: '/etc/pebble/key.pem' },
    { content: JSON.stringify(config), target: '/etc/pebble/config.json' },
  ])
  // No random validation sleeps and no rejected nonces: pebble's defaults exist to shake out clients.
  const started = await host.exec(
    'dpkg -i /root/pebble.deb >/dev/null && systemd-run --unit pebble -E PEBBLE_VA_NOSLEEP=1 -E PEBBLE_WFE_NONCEREJECT=0 /usr/bin/pebble -config /etc/pebble/config.json',
  )
  if (started.exitCode !== 0) throw new Error(`pebble did not start: ${started.output}`)
  const end = Date.now() + 60_000 // pebble starts in well under a second on a quiet host; CI shares its cores
  while ((await host.exec('curl -sfk -o /dev/null https://localhost:14000/dir')).exitCode !== 0) {
    if (Date.now() > end)
      throw new Error(`pebble does not answer after 60 s: ${(await host.exec('journalctl -u pebble --no-pager | tail -20')).output}`)
    await new Promise((r) => setTimeout(r, 200))
  }
  return {
    directoryUrl: `https://${host.name}:14000/dir`,
    rootPem: async () => (await host.exec('curl -sfk https://localhost:15000/roots/0')).stdout,
  }
}
