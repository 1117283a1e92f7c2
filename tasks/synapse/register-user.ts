import type { Secret } from '../../src/core/secret.js'
import type { Connection } from '../../src/ssh/connection.js'
import { sh } from '../../src/core/shell.js'
import { SECRETS_CONFIG_PATH, VENV_LINK } from '../../src/synapse/paths.js'

/**
 * Register a user with Synapse's own register_new_matrix_user (shared-secret registration, works with
 * registration off). The password travels on stdin (--password-file /dev/stdin), never on a command line.
 */
export async function registerUser(
  conn: Connection,
  options: { user: string; password: Secret; admin: boolean; listenPort: number },
): Promise<void> {
  const cmd = [
    `${VENV_LINK}/bin/register_new_matrix_user`,
    '-c',
    SECRETS_CONFIG_PATH,
    '-u',
    options.user,
    '--password-file',
    '/dev/stdin',
    options.admin ? '--admin' : '--no-admin',
    '--exists-ok',
    `http://127.0.0.1:${options.listenPort}`,
  ]
  await conn.run(sh`${cmd}`, { stdin: options.password.reveal(), what: `registering ${options.user}` })
}
