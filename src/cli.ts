import { parseArgs } from 'node:util'
import { readFileSync } from 'node:fs'
import { runInventory } from './engine/run.js'
import type { Mode } from './engine/host-run.js'
import type { RunReport } from './engine/report-types.js'
import { InventoryError, formatIssues } from './inventory/errors.js'
import { inventoryJsonSchema } from './inventory/json-schema.js'
import { loadInventory } from './inventory/load.js'
import { SYNAPSE_VERSION } from './inventory/schema.js'
import { ROLES, type Inventory, type Role } from './inventory/types.js'
import { createRunLog } from './report/log.js'
import { createProgress } from './report/progress.js'
import { renderJson, renderReport } from './report/text.js'
import { maskJson, maskSecrets } from './core/secret.js'
import { connect } from './ssh/connect.js'
import { TASKS } from '../tasks/index.js'
import type { CliIo } from './commands/io.js'

export const EXIT = { ok: 0, hostFailed: 1, usage: 2, changesPending: 10 } as const

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
  provision rollback --inventory FILE --limit H [--restore-dump]
                                                switch Synapse back to the previous venv if the database allows it;
                                                --restore-dump: when the older code cannot run on it, restore the
                                                dump taken before the upgrade first (loses the writes since)
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
      --to DIR           backup: where backups go (default ./backups); each is a new <host>-<time> directory
      --encrypt-to KEY   backup: encrypt every file with age to KEY (age1..., an SSH public key, or a
                         recipients file); repeatable. Only public keys are needed to take a backup
      --from DIR         restore: a backup directory, or one holding backups (the host's newest is used)
      --identity FILE    restore: the age identity that decrypts an encrypted backup
      --force            restore: replace a database that already holds Synapse data (kept under a new name)
  -h, --help             this help
      --version          print the version

Exit codes: 0 success, 1 a host failed (for check: a check failed), 2 bad usage or inventory, 10 changes pending (--dry-run --exit-code).`

class UsageError extends Error {}

function splitList(v: string | undefined): string[] {
  return v ? v.split(',').map((s) => s.trim()).filter(Boolean) : []
}

/** Narrow the inventory to --limit (host names or roles) and pick the tasks (--tasks). */
export function selectHostsAndTasks(inventory: Inventory, limit: string[], tasks: string[]) {
  for (const t of tasks) if (!(ROLES as readonly string[]).includes(t)) throw new UsageError(`--tasks: unknown task "${t}"; tasks are: ${ROLES.join(', ')}`)
  for (const l of limit) {
    if (!inventory.hosts.some((h) => h.name === l) && !(ROLES as readonly string[]).includes(l))
      throw new UsageError(`--limit: "${l}" is neither a host of ${inventory.file} (${inventory.hosts.map((h) => h.name).join(', ')}) nor a role`)
  }
  const hosts = limit.length ? inventory.hosts.filter((h) => limit.includes(h.name) || h.roles.some((r) => limit.includes(r))) : inventory.hosts
  const selected = tasks.length ? TASKS.filter((t) => tasks.includes(t.name)) : TASKS
  return { inventory: { ...inventory, hosts }, tasks: selected }
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
    const message = maskSecrets(error instanceof Error ? error.message : String(error))
    io.err(`provision: ${message}\n${io.env.MP_DEBUG && error instanceof Error ? maskSecrets(error.stack ?? '') + '\n' : ''}`)
    return EXIT.hostFailed
  }
}

async function dispatch(argv: string[], io: CliIo): Promise<number> {
  const commands = ['apply', 'check', 'adopt', 'schema', 'unlock', 'rollback', 'sandbox', 'status', 'lock', 'backup', 'restore'] as const
  const command = (commands as readonly string[]).includes(argv[0] ?? '') ? (argv.shift() as (typeof commands)[number]) : 'apply'
  const { values } = parseArgs({
    args: argv,
    allowPositionals: false,
    options: {
      inventory: { type: 'string', short: 'i' },
      'dry-run': { type: 'boolean', short: 'n' },
      'exit-code': { type: 'boolean' },
      diff: { type: 'boolean' },
      limit: { type: 'string', short: 'l' },
      tasks: { type: 'string', short: 't' },
      json: { type: 'boolean' },
      verbose: { type: 'boolean', short: 'v' },
      'log-file': { type: 'string' },
      holder: { type: 'string' },
      parallel: { type: 'string', short: 'p' },
      window: { type: 'string' },
      wait: { type: 'string' },
      down: { type: 'boolean' },
      element: { type: 'string' },
      'restore-dump': { type: 'boolean' },
      'synapse-version': { type: 'string' },
      wheelhouse: { type: 'string' },
      python: { type: 'string' },
      to: { type: 'string' },
      from: { type: 'string' },
      force: { type: 'boolean' },
      'encrypt-to': { type: 'string', multiple: true },
      identity: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
    },
  })
  if (values.help) {
    io.out(HELP + '\n')
    return EXIT.ok
  }
  if (values.version) {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
    io.out(`${pkg.version}\n`)
    return EXIT.ok
  }
  if (command === 'schema') {
    io.out(JSON.stringify(inventoryJsonSchema(), null, 2) + '\n')
    return EXIT.ok
  }
  if (command === 'sandbox') {
    const { sandbox } = await import('./commands/sandbox/index.js')
    return sandbox({ down: values.down ?? false, element: values.element, verbose: values.verbose ?? false, io, provision: main })
  }
  if (!values.inventory) throw new UsageError('--inventory FILE is required')
  const parallel = values.parallel ? Number(values.parallel) : 25
  if (!Number.isInteger(parallel) || parallel < 1) throw new UsageError(`--parallel: expected a whole number >= 1, got "${values.parallel}"`)
  if (values.holder !== undefined && command !== 'unlock') throw new UsageError('--holder only goes with unlock')
  if (values['exit-code'] && !values['dry-run']) throw new UsageError('--exit-code only makes sense with --dry-run')
  const waitS = values.wait === undefined ? undefined : Number(values.wait)
  if (waitS !== undefined && (!/^\d+$/.test(values.wait!) || waitS > 3600)) throw new UsageError(`--wait: expected whole seconds from 0 to 3600, got "${values.wait}"`)
  if (waitS !== undefined && values['dry-run']) throw new UsageError('--wait applies to after-checks, which a --dry-run does not run')
  if (command === 'lock') {
    const version = values['synapse-version']
    if (version !== undefined && !SYNAPSE_VERSION.test(version)) throw new UsageError(`--synapse-version: expected a Synapse version x.y.z such as 1.163.2, got "${version}"`)
    if (values.python !== undefined && !/^3\.\d+$/.test(values.python)) throw new UsageError(`--python: expected a Python version such as 3.11, got "${values.python}"`)
    if (values.python !== undefined && !values.wheelhouse) throw new UsageError('--python only makes sense with --wheelhouse DIR')
    const { lockCommand, LockUsageError } = await import('./commands/lock/index.js')
    const inventory = await loadInventory(values.inventory, io.env, { locks: false })
    try {
      await lockCommand({ inventory, synapseVersion: version, wheelhouse: values.wheelhouse, python: values.python, env: io.env, out: (line) => io.out(line + '\n') })
    } catch (error) {
      if (error instanceof LockUsageError) throw new UsageError(error.message)
      throw error
    }
    return EXIT.ok
  }
  const loaded = await loadInventory(values.inventory, io.env)
  const { inventory, tasks } = selectHostsAndTasks(loaded, splitList(values.limit), splitList(values.tasks))
  if (inventory.hosts.length === 0) throw new UsageError(`--limit ${values.limit} matches no host`)
  const log = await createRunLog(values['log-file'])

  if (command === 'unlock') {
    // Killing a lock holder is only safe for the one holder the user saw stuck: its id and its host.
    if (!values.holder) throw new UsageError('unlock needs --holder ID: the id the lock message printed ("locked by another run: ID user@…")')
    if (!/^[0-9a-f]{12}$/.test(values.holder)) throw new UsageError(`--holder: expected the 12 hexadecimal digits the lock message printed, got "${values.holder}"`)
    if (!values.limit || inventory.hosts.length !== 1)
      throw new UsageError(`unlock clears one host's lock at a time: --limit must select exactly one host${values.limit ? ` ("${values.limit}" selects ${inventory.hosts.map((h) => h.name).join(', ')})` : ''}`)
    const { breakLock } = await import('./engine/lock.js')
    const host = inventory.hosts[0]!
    const conn = await connect(host, { log: (e) => log.event(e), resolveHost: (name) => loaded.hosts.find((h) => h.name === name) })
    try {
      const result = await breakLock(conn, values.holder)
      log.event({ msg: `unlock: ${result.status}`, host: host.name, holder: result.status === 'not-held' ? undefined : result.holder })
      if (result.status === 'cleared') io.out(`${host.name}: cleared: ${result.holder}\n`)
      else if (result.status === 'not-held') io.out(`${host.name}: not held\n`)
      else {
        io.err(`provision: ${host.name} is locked by ${result.holder}, not by holder ${values.holder}: nothing was killed. Check the id in the lock message.\n`)
        return EXIT.hostFailed
      }
    } finally {
      await conn.close()
      log.close()
    }
    return EXIT.ok
  }

  if (command === 'status') {
    const window = values.window === undefined ? 5 : Number(values.window)
    if (!Number.isFinite(window) || window < 1 || window > 300) throw new UsageError(`--window: expected seconds between 1 and 300, got "${values.window}"`)
    const { readStatus, statusFailed } = await import('./commands/status/read-status.js')
    const { renderStatus } = await import('./commands/status/render.js')
    const report = await readStatus(inventory.hosts, (host) => connect(host, { log: (e) => log.event(e), resolveHost: (name) => loaded.hosts.find((h) => h.name === name) }), Math.round(window))
    log.close()
    io.out(values.json ? maskJson(report, 2) + '\n' : renderStatus(report))
    return statusFailed(report) ? EXIT.hostFailed : EXIT.ok
  }

  if (command === 'rollback') {
    if (!values.limit) throw new UsageError('rollback needs --limit HOST: roll back one host at a time, knowingly')
    const { rollbackHost } = await import('./commands/rollback/index.js')
    const { renderRollback } = await import('./report/text.js')
    let failed = 0
    const reports = []
    for (const host of inventory.hosts) {
      const conn = await connect(host, { log: (e) => log.event(e), resolveHost: (name) => loaded.hosts.find((h) => h.name === name), sudoPassword: host.ssh.sudoPassword?.kind === 'value' ? host.ssh.sudoPassword.secret : undefined })
      try {
        const r = await rollbackHost(host, loaded, conn, { restoreDump: values['restore-dump'] === true })
        if (!r.ok) failed++
        reports.push(r)
        if (!values.json) io.out(renderRollback(r, { color: process.stdout.isTTY === true && !process.env.NO_COLOR }))
      } finally {
        await conn.close()
      }
    }
    if (values.json) io.out(maskSecrets(JSON.stringify(reports, null, 2)) + '\n')
    log.close()
    return failed ? EXIT.hostFailed : EXIT.ok
  }

  if (command === 'adopt') {
    const names = splitList(values.limit)
    const unknown = names.filter((n) => !inventory.hosts.some((h) => h.name === n))
    if (names.length === 0 || unknown.length) throw new UsageError(`adopt needs --limit with the inventory name of each host to take over${unknown.length ? ` (not a host: ${unknown.join(', ')})` : ''}: adopt hosts one by one, knowingly`)
    if (values.tasks) throw new UsageError('adopt runs every task of the host: --tasks does not apply')
  }

  const connectHost = (host: Inventory['hosts'][number]) =>
    connect(host, {
      log: (e) => log.event(e),
      resolveHost: (name) => loaded.hosts.find((h) => h.name === name),
      sudoPassword: host.ssh.sudoPassword?.kind === 'value' ? host.ssh.sudoPassword.secret : undefined,
      // One whole line at a time, already masked by the connection (see LineMasker).
      onOutput: values.verbose ? (host, line) => io.err(`[${host}] | ${line}`) : undefined,
    })
  if (command === 'backup' || command === 'restore') {
    const { lifecycle } = await import('./commands/backup/index.js')
    try {
      return await lifecycle(command, { values, inventory, loaded, io, connect: connectHost, log, interactive: io === processIo && process.stderr.isTTY === true && process.env.CI !== 'true' })
    } finally {
      log.close()
    }
  }

  const mode: Mode = command === 'check' ? 'check' : values['dry-run'] ? 'dry-run' : 'apply'
  log.event({ msg: 'run started', mode, inventory: inventory.file, hosts: inventory.hosts.map((h) => h.name), tasks: tasks.map((t) => t.name) })
  const progress = await createProgress(inventory.hosts.map((h) => h.name), { verbose: values.verbose ?? false, quiet: values.json ?? false, write: io === processIo ? undefined : io.err })
  const report: RunReport = await runInventory(inventory, {
    mode,
    tasks,
    parallel,
    waitS,
    connect: connectHost,
    onEvent: (e) => {
      progress.event(e)
      log.event({ msg: e.message, host: e.host, task: e.task })
    },
    onHostDone: (h) => progress.hostDone(h.host, h.status === 'failed'),
    adoption: command === 'adopt' ? (await import('./commands/adopt/hook.js')).adoptionHook : undefined,
  })
  await progress.done()
  log.event({ msg: 'run finished', totals: report.totals, durationMs: report.durationMs, hosts: report.hosts.map((h) => ({ host: h.host, status: h.status, error: h.error })) })
  log.close()
  if (values.json) io.out(renderJson(report))
  else io.out(renderReport(report, { color: process.stdout.isTTY === true && !process.env.NO_COLOR, diffs: values.diff ?? values.verbose ?? false }))
  if (report.totals.failedHosts > 0) return EXIT.hostFailed
  if (mode === 'dry-run' && values['exit-code'] && report.totals.add + report.totals.change + report.totals.restart > 0) return EXIT.changesPending
  return EXIT.ok
}
