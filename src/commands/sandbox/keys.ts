import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { controller$ } from '../../artifacts/controller-shell.js'
import { exec, lastLine } from './docker.js'
import { SandboxError } from './settings.js'

/** Trust both ways: our key in the container's root account, the container's own host keys in our known_hosts. */

/** .sandbox/id_ed25519, made once; returns the public key. */
export async function ensureKey(dir: string): Promise<{ keyFile: string; publicKey: string }> {
  const keyFile = join(dir, 'id_ed25519')
  if (!existsSync(keyFile)) await (await controller$())`ssh-keygen -q -t ed25519 -N ${''} -C matrix-provision-sandbox -f ${keyFile}`
  return { keyFile, publicKey: (await readFile(`${keyFile}.pub`, 'utf8')).trim() }
}

export async function installAuthorizedKey(container: string, publicKey: string): Promise<void> {
  const r = await exec(
    container,
    ['sh', '-c', 'install -d -m 0700 /root/.ssh && cat > /root/.ssh/authorized_keys && chmod 0600 /root/.ssh/authorized_keys'],
    `${publicKey}\n`,
  )
  if (!r.ok) throw new SandboxError(`installing the SSH key in ${container} failed: ${lastLine(r)}`)
}

/** known_hosts with the container's real host keys (read through docker exec, a channel we trust) as [127.0.0.1]:port. */
export async function writeKnownHosts(container: string, sshPort: number, file: string): Promise<void> {
  const r = await exec(container, ['sh', '-c', 'cat /etc/ssh/ssh_host_*_key.pub'])
  const keys = r.stdout
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('ssh-') || l.startsWith('ecdsa-'))
  if (!r.ok || keys.length === 0) throw new SandboxError(`reading the host keys of ${container} failed: ${lastLine(r)}`)
  await writeFile(file, keys.map((k) => `[127.0.0.1]:${sshPort} ${k.split(/\s+/).slice(0, 2).join(' ')}`).join('\n') + '\n')
}

/** The self-signed certificate Apache serves (its names: the API host, the server name, Element's host). */
export async function copyCertificate(container: string, publicHost: string, file: string): Promise<void> {
  const r = await exec(container, ['cat', `/etc/ssl/matrix-provision/${publicHost}.crt`])
  if (!r.ok || !r.stdout.includes('BEGIN CERTIFICATE'))
    throw new SandboxError(`reading the certificate of ${publicHost} failed: ${lastLine(r)}`)
  await writeFile(file, r.stdout)
}
