import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { startPebble, type Pebble } from '../support/acme.js'
import { ELEMENT_VERSION, elementRelease } from '../support/artifacts.js'
import { startHosts, type TestHost, type TestHosts } from '../support/hosts.js'
import { provision, writeTestInventory } from '../support/inventory.js'
import { createLocalCa } from '../support/local-ca.js'
import { jsonReport } from '../support/cli.js'

// tls mode acme against pebble, Let's Encrypt's ACME test server from Debian's archive: certbot runs the
// real protocol and HTTP-01 challenge over the test network (Let's Encrypt itself is unreachable here).
describe.skipIf(!inject('docker'))('apache with tls mode acme: certbot against a real ACME server (pebble)', () => {
  let env: TestHosts
  let web: TestHost
  let pebble: Pebble
  /** Apache alone: the API host and the delegation host. */
  let twoNames: string
  /** Element added later: its host is a third name the certificate must gain. */
  let threeNames: string
  const cert = '/etc/ssl/matrix-provision/matrix.acme.test.crt'
  const sanOf = async (path: string) =>
    (await web.exec(`openssl x509 -noout -ext subjectAltName -in ${path}`)).stdout.match(/DNS:[a-z.]+/g)?.sort()

  beforeAll(async () => {
    const ca = await createLocalCa()
    const element = await elementRelease()
    env = await startHosts(['pebble', 'web'], { aliases: { web: ['acme.test', 'matrix.acme.test', 'element.acme.test'] } })
    web = env.get('web')
    pebble = await startPebble(env.get('pebble'), ca)
    const vars = {
      serverName: 'acme.test',
      element: { version: ELEMENT_VERSION, file: element.tarball, sha256: element.sha256 },
      apache: { tls: { mode: 'acme', acmeEmail: 'admin@acme.test', acmeServer: pebble.directoryUrl, acmeCaFile: ca.caFile } },
    }
    twoNames = await writeTestInventory(env, [{ name: 'web', roles: ['apache'] }], vars, 'two-names.yaml')
    // Element's vhost comes from a later task than the certificate: its name is validated all the same.
    threeNames = await writeTestInventory(env, [{ name: 'web', roles: ['apache', 'element'] }], vars, 'three-names.yaml')
  })
  afterAll(async () => {
    await env?.stop()
  })

  it('the dry run says where the certificate comes from; apply obtains it over HTTP-01 and Apache serves it', async () => {
    const plan = await provision(['--inventory', twoNames, '--dry-run'])
    expect(plan.code, plan.stderr).toBe(0)
    expect(plan.stdout).toContain(`obtain a certificate for matrix.acme.test, acme.test from ${pebble.directoryUrl} (HTTP-01`)

    // A private ACME CA's hosts trust its issuing root, as every client of it must (the after-checks use
    // the host's CA store). Pebble makes a new root at each start.
    await web.exec(
      `cat > /usr/local/share/ca-certificates/pebble-root.crt <<'EOF'\n${await pebble.rootPem()}EOF\nupdate-ca-certificates >/dev/null`,
    )
    const r = await provision(['--inventory', twoNames, '--json'])
    const host = jsonReport(r.stdout).hosts[0]!
    expect(host.error ?? host.status, r.stderr).toBe('changed')
    expect((await web.exec(`openssl x509 -noout -issuer -in ${cert}`)).stdout).toMatch(/Pebble Intermediate CA/)
    expect(await sanOf(cert)).toEqual(['DNS:acme.test', 'DNS:matrix.acme.test'])
    // A client that trusts only pebble's root verifies the chain Apache serves (fullchain from the deploy hook).
    await web.exec(`cat > /tmp/pebble-root.pem <<'EOF'\n${await pebble.rootPem()}EOF`)
    const tls = await web.exec(
      'curl -s -o /dev/null -w "%{http_code}" --cacert /tmp/pebble-root.pem --resolve acme.test:443:127.0.0.1 https://acme.test/.well-known/matrix/server',
    )
    expect(tls.exitCode, tls.output).toBe(0)
    expect(tls.stdout).toBe('200')
    // Renewals (certbot.timer) talk to the same server and trust its CA.
    expect((await web.exec('cat /etc/letsencrypt/renewal/matrix.acme.test.conf')).stdout).toContain(`server = ${pebble.directoryUrl}`)
    expect((await web.exec('systemctl show -p Environment --value certbot.service')).stdout.trim()).toBe(
      'REQUESTS_CA_BUNDLE=/etc/matrix-provision/acme-server-ca.pem',
    )

    const again = await provision(['--inventory', twoNames])
    expect(again.code, again.stdout + again.stderr).toBe(0)
    expect(again.stdout).toContain('web: no changes')
  })

  it('a name added later (Element) is issued: the certificate is expanded to every name, then the run converges', async () => {
    const plan = await provision(['--inventory', threeNames, '--dry-run'])
    expect(plan.code, plan.stderr).toBe(0)
    expect(plan.stdout).toContain('obtain a certificate for matrix.acme.test, acme.test, element.acme.test')
    // The ACME certificate stays in place meanwhile: the bootstrap self-signed one is not made again.
    expect(plan.stdout).not.toContain('self-signed')
    const r = await provision(['--inventory', threeNames, '--json'])
    const host = jsonReport(r.stdout).hosts[0]!
    expect(host.error ?? host.status, r.stderr).toBe('changed')
    const all = ['DNS:acme.test', 'DNS:element.acme.test', 'DNS:matrix.acme.test']
    expect(await sanOf('/etc/letsencrypt/live/matrix.acme.test/fullchain.pem')).toEqual(all)
    expect(await sanOf(cert)).toEqual(all)
    // Apache serves it for Element's host, verified against pebble's root only.
    const tls = await web.exec(
      'curl -s -o /dev/null -w "%{http_code}" --cacert /tmp/pebble-root.pem --resolve element.acme.test:443:127.0.0.1 https://element.acme.test/config.json',
    )
    expect(tls.exitCode, tls.output).toBe(0)
    expect(tls.stdout).toBe('200')
    // One lineage, expanded in place (no matrix.acme.test-0001 beside it).
    expect((await web.exec('ls /etc/letsencrypt/live')).stdout.split('\n').filter((l) => l.startsWith('matrix'))).toEqual([
      'matrix.acme.test',
    ])

    const again = await provision(['--inventory', threeNames])
    expect(again.code, again.stdout + again.stderr).toBe(0)
    expect(again.stdout).toContain('web: no changes')
  })

  it("a renewal through certbot.service's own environment gets a new certificate, which the deploy hook puts in place", async () => {
    const serial = async () => (await web.exec(`openssl x509 -noout -serial -in ${cert}`)).stdout.trim()
    const before = await serial()
    // certbot.service runs `certbot -q renew` (nothing due yet): its environment, forcing a renewal now.
    const renewed = await web.exec(
      'systemd-run --wait --collect -p "Environment=$(systemctl show -p Environment --value certbot.service)" certbot -q renew --force-renewal --no-random-sleep-on-renew',
    )
    expect(renewed.exitCode, renewed.output).toBe(0)
    expect(await serial()).not.toBe(before)
    const served = await web.exec(
      'echo | openssl s_client -connect 127.0.0.1:443 -servername matrix.acme.test 2>/dev/null | openssl x509 -noout -serial',
    )
    expect(served.stdout.trim()).toBe(await serial())
  })
})
