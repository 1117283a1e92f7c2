import { parseArgs } from 'node:util'
import { readFileSync } from 'node:fs'
import { InventoryError, formatIssues } from './inventory/errors.js'
import { ROLES } from './inventory/roles.js'
import { maskSecrets } from './core/secret.js'
import type { CliIo } from './commands/io.js'
import { EXIT, OPTIONS, UsageError, userMessage, VERB_NAMES, type Verb, type VerbName } from './commands/verb.js'

export { EXIT }

const HELP = `provision: set up a Matrix Synapse homeserver over SSH (Postgres, Redis, workers, Apache, Element, monitoring)

Usage:
  provision [apply] --inventory FILE [options]   apply the inventory to its hosts
  provision check   --inventory FILE [--wait S]  run the before- and after-checks only (read-only), each printed
  provision adopt   --inventory FILE --limit H   take over a Synapse built by hand (the guide's way): keep its
                                                 secrets, signing key, media and database; convert the rest
  provision unlock  --inventory FILE --limit HOST --holder ID
                                                 kill the stuck holder of HOST's lock (ID from the lock message)
  provision status  --inventory FILE [--window S] each Synapse process's health in the guide's terms (read-only)
  provision lock    --inventory FILE             resolve the Synapse lock file(s) the inventory's pip hosts install from
                    [--synapse-version V] [--wheelhouse DIR [--python X.Y]]
  provision backup  --inventory FILE [--to DIR]  back up each homeserver (database, media, signing key, secrets, config) to DIR
  provision restore --inventory FILE --limit H --from DIR [--force]
                                                 restore a backup onto host H, provisioned from the inventory
  provision move --inventory FILE --from OLD --to NEW [--abort]
                                                 move the homeserver on OLD (any system, only read, then stopped
                                                 and masked) to NEW, provisioned from the inventory; --abort
                                                 before NEW has served returns OLD to service
  provision rollback --inventory FILE --limit H [--restore-dump] [--dry-run]
                                                back to the Synapse version the last upgrade replaced (pip: the
                                                previous venv; apt: the previous package, if the repository still
                                                has it) if the database allows it; --restore-dump: when the older
                                                code cannot run on it, restore the dump taken before the upgrade
                                                first (loses the writes since); --dry-run: decide and print only
  provision mas-migrate --inventory FILE [--to DIR]
                                                move an existing server's users, passwords, devices and tokens
                                                onto MAS (the inventory gives the host the mas role): backup,
                                                syn2mas check and dry run, Synapse stopped, migrate, switch
                                                (one-way); --dry-run prints the procedure and the install plan
  provision mas-user --inventory FILE --user NAME --password-file FILE|- [--admin]
                                                create a user through MAS (its admin API); the password from a
                                                mode-600 file or stdin (-), never the command line; --admin:
                                                may request admin rights (scope urn:synapse:admin:*)
  provision schema                               print the inventory's JSON Schema (for editors)
  provision sandbox [--down]                     provision a local container homeserver (needs Docker)

Options:
  -i, --inventory FILE   inventory YAML (see inventories/example.yaml)
  -n, --dry-run          print the plan and change nothing on any host
      --exit-code        with --dry-run: exit 10 when changes are pending (drift detection)
      --diff             show unified diffs of files in the plan (secrets masked)
  -l, --limit LIST       only these hosts or roles (comma-separated)
  -t, --tasks LIST       only these tasks (${ROLES.join(', ')})
      --json             print the plan/results as one JSON document on stdout
  -v, --verbose          plain progress lines with every step
      --log-file FILE    JSON log of every command, its duration and exit code (secrets masked)
  -p, --parallel N       at most N hosts at once (default 25)
      --window S         status: seconds between the two metric readings (default 5)
      --wait SECONDS     how long an after-check waits for a service to answer (default: its own
                         bound after a restart, none otherwise; check restarts nothing, so 0)
      --to DIR           backup, mas-migrate: where backups go (default ./backups); each is a new <host>-<time> directory
      --encrypt-to KEY   backup: encrypt every file with age to KEY (age1..., an SSH public key, or a
                         recipients file); repeatable. Only public keys are needed to take a backup
      --from DIR         restore: a backup directory, or one holding backups (the host's newest is used);
                         move: the host moved away from (--to: the host moved to)
      --identity FILE    restore: the age identity that decrypts an encrypted backup
      --force            restore: replace a database that already holds Synapse data (kept under a new name)
      --abort            move: before NEW has served, stop NEW and return OLD to service (units unmasked)
  -h, --help             this help
      --version          print the version

Exit codes: 0 success, 1 a host failed (for check: a check failed), 2 bad usage or inventory, 10 changes pending (--dry-run --exit-code).`

/**
 * Each verb is its own module, loaded when it is the one asked for: `--help` loads nothing else, `apply`
 * does not load the backup, sandbox or JSON Schema code (esbuild makes each dynamic import a chunk).
 * lock/ and rollback/ keep their library in index.ts; their verb is verb.ts.
 */
const VERBS: Record<VerbName, () => Promise<{ run: Verb }>> = {
  apply: () => import('./commands/apply/index.js'),
  check: () => import('./commands/apply/index.js'),
  adopt: () => import('./commands/adopt/index.js'),
  backup: () => import('./commands/backup/index.js'),
  restore: () => import('./commands/backup/index.js'),
  move: () => import('./commands/move/index.js'),
  rollback: () => import('./commands/rollback/verb.js'),
  lock: () => import('./commands/lock/verb.js'),
  unlock: () => import('./commands/unlock/index.js'),
  status: () => import('./commands/status/index.js'),
  sandbox: () => import('./commands/sandbox/index.js'),
  schema: () => import('./commands/schema/index.js'),
  'mas-migrate': () => import('./commands/mas-migrate/index.js'),
  'mas-user': () => import('./commands/mas-user/index.js'),
}

const processIo: CliIo = { out: (t) => void process.stdout.write(t), err: (t) => void process.stderr.write(t), env: process.env }

export async function main(argv: string[], io: CliIo = processIo): Promise<number> {
  try {
    return await dispatch([...argv], io)
  } catch (error) {
    if (error instanceof InventoryError) {
      io.err(formatIssues(error.issues) + '\n')
      return EXIT.usage
    }
    if (error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.err(`provision: ${(error as Error).message}\nRun provision --help for usage.\n`)
      return EXIT.usage
    }
    const message = maskSecrets(userMessage(error))
    io.err(`provision: ${message}\n${io.env.MP_DEBUG && error instanceof Error ? maskSecrets(error.stack ?? '') + '\n' : ''}`)
    return EXIT.hostFailed
  }
}

/** Arguments in, the verb's exit code out: what every verb's options must satisfy is checked here, the rest by the verb. */
async function dispatch(argv: string[], io: CliIo): Promise<number> {
  const command = (VERB_NAMES as readonly string[]).includes(argv[0] ?? '') ? (argv.shift() as VerbName) : 'apply'
  const { values } = parseArgs({ args: argv, allowPositionals: false, options: OPTIONS })
  if (values.help) {
    io.out(HELP + '\n')
    return EXIT.ok
  }
  if (values.version) {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
    io.out(`${pkg.version}\n`)
    return EXIT.ok
  }
  let parallel = 25
  let waitS: number | undefined
  if (command !== 'schema' && command !== 'sandbox') {
    if (!values.inventory) throw new UsageError('--inventory FILE is required')
    parallel = values.parallel ? Number(values.parallel) : 25
    if (!Number.isInteger(parallel) || parallel < 1)
      throw new UsageError(`--parallel: expected a whole number >= 1, got "${values.parallel}"`)
    if (values.holder !== undefined && command !== 'unlock') throw new UsageError('--holder only goes with unlock')
    if (values['exit-code'] && !values['dry-run']) throw new UsageError('--exit-code only makes sense with --dry-run')
    waitS = values.wait === undefined ? undefined : Number(values.wait)
    if (waitS !== undefined && (!/^\d+$/.test(values.wait!) || waitS > 3600))
      throw new UsageError(`--wait: expected whole seconds from 0 to 3600, got "${values.wait}"`)
    if (waitS !== undefined && values['dry-run']) throw new UsageError('--wait applies to after-checks, which a --dry-run does not run')
  }
  const { run } = await VERBS[command]()
  return run({ command, values, io, processStreams: io === processIo, parallel, waitS, provision: main })
}
