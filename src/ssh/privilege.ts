import type { NodeSSH } from 'node-ssh'
import { maskSecrets } from '../core/secret.js'
import type { Endpoint } from './endpoint.js'
import { ConnectError } from './errors.js'
import type { Privilege } from './remote-command.js'

async function runRaw(ssh: NodeSSH, command: string, stdin?: string): Promise<{ code: number | null; stderr: string }> {
  const result = await ssh.execCommand(command, stdin === undefined ? { noTrim: true } : { noTrim: true, stdin })
  return { code: result.code, stderr: result.stderr }
}

/** How this login gets root: directly, sudo -n, or sudo -S with the password (checked now, not mid-run). */
export async function findPrivilege(ssh: NodeSSH, endpoint: Endpoint, sudoPassword: string | undefined): Promise<Privilege> {
  if (endpoint.user === 'root') return 'root'
  const noPassword = await runRaw(ssh, 'sudo -n true')
  if (noPassword.code === 0) return 'sudo'
  if (noPassword.code === 127) {
    throw new ConnectError(
      endpoint.label,
      'auth',
      `${endpoint.user}@${endpoint.address} is not root and sudo is not installed: log in as root (ssh.user: root) or install sudo.`,
    )
  }
  if (sudoPassword === undefined) {
    throw new ConnectError(
      endpoint.label,
      'auth',
      `${endpoint.user} on ${endpoint.label} cannot sudo without a password (${noPassword.stderr.trim() || `exit ${noPassword.code}`}): ` +
        `set ssh.sudoPassword, allow NOPASSWD sudo for ${endpoint.user}, or log in as root.`,
    )
  }
  const withPassword = await runRaw(ssh, `sudo -k -S -p '' -- true`, `${sudoPassword}\n`)
  if (withPassword.code === 0) return 'sudo-password'
  throw new ConnectError(
    endpoint.label,
    'auth',
    `sudo refused the password for ${endpoint.user} on ${endpoint.label} (${maskSecrets(withPassword.stderr.trim()) || `exit ${withPassword.code}`}): check ssh.sudoPassword.`,
  )
}
