import { existsSync } from 'node:fs'
import { chromium, type Browser } from 'playwright-core'
import { isCI } from './ci.js'

/**
 * Debian's chromium (.ci/run installs it: apt-get install chromium), driven by playwright-core, which
 * downloads no browser. CHROMIUM overrides the path.
 */
export function chromiumPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.CHROMIUM || '/usr/bin/chromium'
}

/** No chromium: outside CI the browser tests skip with this reason; in CI the run fails here. */
export function skipReasonWithoutChromium(env: NodeJS.ProcessEnv = process.env, exists = existsSync): string | undefined {
  const path = chromiumPath(env)
  if (exists(path)) return undefined
  const reason = `no chromium at ${path} (apt-get install chromium, or set CHROMIUM)`
  if (isCI(env)) throw new Error(`CI=${env.CI} and ${reason}: browser tests must run in CI`)
  return reason
}

/**
 * A headless chromium. Playwright starts it with a fresh --user-data-dir of its own (a temporary
 * directory, removed on close: it refuses one in `args`). `hosts` maps names to `address:port` (the test
 * hosts' mapped HTTPS port): a page keeps its origin (https://element.one.test) while the connection goes
 * to the mapped port; every other name fails to resolve, so nothing leaves the machine. One
 * `browser.newContext()` per user: own storage, own Matrix device.
 */
export async function launchChromium(hosts: Record<string, string>): Promise<Browser> {
  const rules = [...Object.entries(hosts).map(([name, target]) => `MAP ${name} ${target}`), 'MAP * ~NOTFOUND'].join(', ')
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true, // playwright passes --headless
    args: [
      '--no-sandbox', // root in CI and in containers: chromium's sandbox needs user namespaces
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--host-resolver-rules=${rules}`,
      // The hosts' certificates come from the test CA (contexts also set ignoreHTTPSErrors); the Matrix
      // client tests check TLS against that CA.
      '--ignore-certificate-errors',
    ],
  })
}
