import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import type { Role } from '../../src/inventory/types.js'
import type { TestHosts } from './hosts.js'

export interface TestHostEntry {
  name: string
  roles: Role[]
  vars?: Record<string, unknown>
  user?: 'root' | 'deploy'
}

/** An inventory file for container hosts: SSH to the mapped port, the network address as privateAddress. */
export async function writeTestInventory(
  env: TestHosts,
  entries: TestHostEntry[],
  vars: Record<string, unknown>,
  file = 'inventory.yaml',
): Promise<string> {
  const doc = {
    defaults: {
      ssh: { identityFile: env.keyFile, knownHostsFile: env.knownHostsFile, hostKeyPolicy: 'strict', connectTimeout: 20 },
      vars,
    },
    hosts: Object.fromEntries(
      entries.map((e) => {
        const h = env.get(e.name)
        return [
          e.name,
          {
            address: h.sshHost,
            privateAddress: h.ip,
            ssh: { port: h.sshPort, user: e.user ?? 'root' },
            roles: e.roles,
            ...(e.vars ? { vars: e.vars } : {}),
          },
        ]
      }),
    ),
  }
  const path = join(env.dir, file)
  await writeFile(path, stringify(doc))
  return path
}

/** Run the CLI in-process with captured output (the same `main` the bin calls). */
export async function provision(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { main } = await import('../../src/cli.js')
  let stdout = ''
  let stderr = ''
  const code = await main(args, { out: (t) => void (stdout += t), err: (t) => void (stderr += t), env })
  return { code, stdout, stderr }
}
