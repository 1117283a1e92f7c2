import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import type { HostSpec } from '../../inventory/types.js'
import { Secret } from '../../core/secret.js'
import { connect } from '../../ssh/connect.js'
import { registerUser } from '../../../tasks/synapse/register-user.js'

export const ADMIN_USER = 'admin'

/** The admin's password: generated once into a 0600 file, then read from it. */
async function adminPassword(file: string): Promise<{ password: Secret; created: boolean }> {
  try {
    return { password: new Secret((await readFile(file, 'utf8')).trim(), `file ${file}`), created: false }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
  }
  const value = randomBytes(18).toString('base64url')
  await writeFile(file, `${value}\n`, { mode: 0o600, flag: 'wx' })
  return { password: new Secret(value, `file ${file}`), created: true }
}

/**
 * Register `admin` over SSH with Synapse's register_new_matrix_user (shared secret, password on stdin).
 * --exists-ok makes it idempotent, so every run makes sure the user exists (also after the container
 * was replaced behind our back) and never changes the password of an existing user.
 */
export async function ensureAdmin(host: HostSpec, passwordFile: string): Promise<{ created: boolean }> {
  const { password, created } = await adminPassword(passwordFile)
  const conn = await connect(host, { sshConfigFile: false })
  try {
    await registerUser(conn, { user: ADMIN_USER, password, admin: true, listenPort: host.vars.synapse.listenPort })
  } finally {
    await conn.close()
  }
  return { created }
}
