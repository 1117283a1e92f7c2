/**
 * `provision mas-user --user NAME [--admin] --password-file FILE|-`: a user made through MAS (with MAS on,
 * Synapse's register_new_matrix_user answers 404). The password comes from a file only its owner can
 * read, or from stdin (`-`), never from the command line; it reaches MAS's admin API on stdin over SSH.
 */
import { readFile, stat } from 'node:fs/promises'
import { Secret } from '../../core/secret.js'
import { masUserCommand, MAS_USERNAME } from '../../../tasks/mas/users.js'
import { openRun } from '../run-context.js'
import { EXIT, UsageError, type Verb } from '../verb.js'

async function readPassword(file: string): Promise<Secret> {
  let text: string
  if (file === '-') {
    const chunks: Buffer[] = []
    for await (const c of process.stdin) chunks.push(c as Buffer)
    text = Buffer.concat(chunks).toString('utf8')
  } else {
    const mode = await stat(file).then(
      (s) => s.mode,
      () => {
        throw new UsageError(`--password-file ${file}: no such file`)
      },
    )
    if (mode & 0o077)
      throw new UsageError(`--password-file ${file} may be read by others (mode ${(mode & 0o777).toString(8)}): chmod 600 it`)
    text = await readFile(file, 'utf8')
  }
  const password = text.replace(/\r?\n$/, '')
  if (!password) throw new UsageError(`--password-file ${file}: empty password`)
  return new Secret(password, `--password-file ${file}`)
}

export const run: Verb = async (input) => {
  const { values, io } = input
  const user = values.user
  if (!user) throw new UsageError('mas-user needs --user NAME (a Matrix localpart: lower case a-z, 0-9, . _ = / + -)')
  if (!MAS_USERNAME.test(user)) throw new UsageError(`--user ${user}: not a Matrix localpart (lower case a-z, 0-9, . _ = / + -)`)
  if (!values['password-file'])
    throw new UsageError(
      'mas-user needs --password-file FILE (mode 600) or --password-file - (stdin): never a password on the command line',
    )
  // Read (and its file's mode checked) before anything connects.
  const password = values['dry-run'] ? undefined : await readPassword(values['password-file'])
  const ctx = await openRun(input)
  try {
    const hosts = ctx.inventory.hosts.filter((h) => h.roles.includes('mas'))
    if (hosts.length !== 1)
      throw new UsageError(
        `mas-user: give exactly one host of ${ctx.inventory.file} the mas role (found ${hosts.map((h) => h.name).join(', ') || 'none'})`,
      )
    const host = hosts[0]!
    const admin = values.admin === true
    if (values['dry-run']) {
      io.out(
        `${host.name}: would create ${user} in MAS${admin ? ' (may request admin rights)' : ''} unless it exists (its password then unchanged). Dry run: nothing changed.\n`,
      )
      return EXIT.ok
    }
    const conn = await ctx.connect(host, { echo: false })
    try {
      const body = JSON.stringify({ password: password!.reveal(), skip_password_check: true })
      const r = await conn.run(masUserCommand(host.vars, user, admin), { stdin: body, what: `create ${user} through MAS's admin API` })
      const [state, id] = r.stdout.trim().split('\n')[0]!.split(' ')
      io.out(
        state === 'created'
          ? `${host.name}: created @${user}:${host.vars.serverName} in MAS (${id})${admin ? ', may request admin rights' : ''}.\n`
          : `${host.name}: @${user}:${host.vars.serverName} exists in MAS (${id}): password unchanged${admin ? ', may request admin rights' : ''}.\n`,
      )
      return EXIT.ok
    } finally {
      await conn.close()
    }
  } finally {
    ctx.log.close()
  }
}
