/** What the move e2e tests share: OLD's and NEW's artefacts, and an inventory naming OLD and NEW's hosts. */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { synapseWheelhouse } from './artifacts.js'
import { guideImage } from './guide-host.js'
import type { TestHost, TestHosts } from './hosts.js'
import { createLocalCa } from './local-ca.js'
import { OLD_SUITE } from './suites.js'

/** OLD's wheels (Python 3.9, the version it runs), NEW's (Debian 13's Python 3.13), OLD's image, and a CA for NEW's certificates. */
export async function moveArtifacts(oldVersion: string) {
  const [oldWheels, newWheels, oldSuite, localCa] = await Promise.all([
    synapseWheelhouse('3.9', oldVersion),
    synapseWheelhouse('3.13'),
    guideImage(OLD_SUITE),
    createLocalCa(),
  ])
  return { oldWheels, newWheels, oldSuite, localCa, ca: await readFile(localCa.caFile, 'utf8') }
}

/** The inventory of a move e2e: OLD (a test host of its own network) and NEW's hosts, one known_hosts for both. */

export async function writeMoveInventory(
  oldEnv: TestHosts,
  newEnv: TestHosts,
  hosts: Record<string, [TestHost, string[]]>,
  vars: Record<string, unknown>,
  file: string,
): Promise<string> {
  const knownHosts = join(newEnv.dir, 'known_hosts_all')
  await writeFile(knownHosts, (await readFile(oldEnv.knownHostsFile, 'utf8')) + (await readFile(newEnv.knownHostsFile, 'utf8')))
  const path = join(newEnv.dir, file)
  await writeFile(
    path,
    stringify({
      defaults: {
        ssh: { identityFile: newEnv.keyFile, knownHostsFile: knownHosts, hostKeyPolicy: 'strict', connectTimeout: 20 },
        vars,
      },
      hosts: Object.fromEntries(
        Object.entries(hosts).map(([name, [h, roles]]) => [
          name,
          { address: h.sshHost, privateAddress: h.ip, ssh: { port: h.sshPort, user: 'root' }, roles },
        ]),
      ),
    }),
  )
  return path
}
