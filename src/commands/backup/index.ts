import { runInventory } from '../../engine/run.js'
import type { Inventory, HostSpec } from '../../inventory/types.js'
import type { RunLog } from '../../report/log.js'
import type { Connection } from '../../ssh/connection.js'
import { mediaStoreHost } from '../../inventory/workers.js'
import { loadTasks } from '../../../tasks/index.js'
import { openRun } from '../run-context.js'
import type { Verb } from '../verb.js'
import { AGE_SUFFIX, requireAge, resolveRecipients } from './age.js'
import { BackupInputError } from './manifest.js'
import { renderBackupReport, renderRestoreReport } from './render.js'
import { restoreBackup } from './restore.js'
import { takeBackups } from './take-backup.js'
import { createTransferProgress } from './transfer-progress.js'
import { BACKUP_PARTS, PART_NAMES } from '../../synapse/backup/parts.js'

interface LifecycleInput {
  values: {
    to?: string
    from?: string
    force?: boolean
    'encrypt-to'?: string[]
    identity?: string
    json?: boolean
    'dry-run'?: boolean
    limit?: string
    verbose?: boolean
    parallel?: string
  }
  /** Narrowed to --limit. */
  inventory: Inventory
  /** The whole inventory (a database host may be outside --limit). */
  loaded: Inventory
  io: { out: (t: string) => void; err: (t: string) => void }
  connect: (host: HostSpec) => Promise<Connection>
  log: RunLog
  /** stderr is a terminal (not CI): progress bars instead of lines. */
  interactive: boolean
}

const usage = (io: LifecycleInput['io'], message: string) => {
  io.err(`provision: ${message}\nRun provision --help for usage.\n`)
  return 2
}

export const run: Verb = async (input) => {
  const { values, io, command } = input
  const ctx = await openRun(input)
  try {
    return await lifecycle(command === 'restore' ? 'restore' : 'backup', {
      values,
      inventory: ctx.inventory,
      loaded: ctx.loaded,
      io,
      connect: (host) => ctx.connect(host),
      log: ctx.log,
      interactive: input.processStreams && process.stderr.isTTY === true && process.env.CI !== 'true',
    })
  } finally {
    ctx.log.close()
  }
}

/** `provision backup` and `provision restore`: exit 0 done, 1 a host failed, 2 bad input (nothing changed). */
export async function lifecycle(command: 'backup' | 'restore', input: LifecycleInput): Promise<number> {
  const { values, io } = input
  const homeservers = input.inventory.hosts.filter((h) => h.roles.includes('synapse'))
  const progress = createTransferProgress({ write: io.err, terminal: input.interactive && !values.verbose, quiet: values.json })
  if (homeservers.length === 0)
    return usage(io, `${command}: no host with the synapse role among ${input.inventory.hosts.map((h) => h.name).join(', ')}`)
  try {
    if (command === 'backup') {
      if (values.from || values.force || values.identity)
        return usage(io, 'backup takes --to and --encrypt-to; --from, --force and --identity are for restore')
      const recipients = values['encrypt-to']?.length ? resolveRecipients(values['encrypt-to']) : undefined
      if (recipients) requireAge()
      if (values['dry-run']) {
        // Nothing is read from the hosts: the plan is what each backup takes and from where.
        const to = values.to ?? 'backups'
        const plan = homeservers.map((h) => ({
          host: h.name,
          databaseHost: h.vars.postgres.host ?? h.name,
          mediaHost: mediaStoreHost(h),
          into: `${to}/${h.name}-<UTC time>`,
          parts: PART_NAMES.map((p) => ({
            part: p,
            file: BACKUP_PARTS[p].file + (recipients ? AGE_SUFFIX : ''),
            what: BACKUP_PARTS[p].what,
          })),
        }))
        io.out(
          values.json
            ? JSON.stringify({ command: 'backup', dryRun: true, hosts: plan }, null, 2) + '\n'
            : plan
                .map(
                  (h) =>
                    `${h.host}: into ${h.into} (database dumped on ${h.databaseHost}${h.mediaHost !== h.host ? `, media from ${h.mediaHost}` : ''})${recipients ? ', encrypted with age' : ''}\n${h.parts.map((p) => `  + ${p.file.padEnd(18)} ${p.what}`).join('\n')}`,
                )
                .join('\n') + '\nDry run: nothing was read or written.\n',
        )
        return 0
      }
      input.log.event({ msg: 'backup started', hosts: homeservers.map((h) => h.name) })
      const report = await takeBackups({
        hosts: homeservers,
        allHosts: input.loaded.hosts,
        to: values.to ?? 'backups',
        recipients,
        connect: input.connect,
        progress,
      })
      input.log.event({
        msg: 'backup finished',
        hosts: report.hosts.map((h) => ({ host: h.host, status: h.status, dir: h.dir, error: h.error })),
      })
      io.out(values.json ? JSON.stringify(report, null, 2) + '\n' : renderBackupReport(report))
      return report.hosts.some((h) => h.status === 'failed') ? 1 : 0
    }
    if (values.to || values['encrypt-to'])
      return usage(io, 'restore takes --from, --force and --identity; --to and --encrypt-to are for backup')
    if (!values.from) return usage(io, 'restore needs --from DIR (a backup directory, or one holding backups)')
    if (!values.limit || input.inventory.hosts.length !== 1)
      return usage(
        io,
        `restore needs --limit HOST naming one homeserver (${homeservers.map((h) => h.name).join(', ')}): a restore replaces a server's data, one host at a time, knowingly`,
      )
    if (values.identity) requireAge()
    const host = homeservers[0]!
    input.log.event({ msg: 'restore started', host: host.name, from: values.from, force: values.force ?? false })
    const report = await restoreBackup({
      host,
      inventory: input.loaded,
      from: values.from,
      force: values.force ?? false,
      identity: values.identity,
      dryRun: values['dry-run'] ?? false,
      connect: input.connect,
      progress,
      run: async (inventory, o) =>
        runInventory(inventory, {
          mode: 'apply',
          tasks: o?.tasks ?? (await loadTasks([...new Set(inventory.hosts.flatMap((h) => h.roles))])),
          parallel: inventory.hosts.length,
          lockHeld: true,
          connect: input.connect,
          onEvent: (e) => {
            if (values.verbose) progress.line(e.host, `${e.task ? `${e.task}: ` : ''}${e.message}`)
            input.log.event({ msg: e.message, host: e.host, task: e.task })
          },
        }),
    })
    input.log.event({ msg: 'restore finished', host: host.name, status: report.status, error: report.error })
    io.out(values.json ? JSON.stringify(report, null, 2) + '\n' : renderRestoreReport(report, false))
    return report.status === 'refused' ? 2 : report.status === 'failed' ? 1 : 0
  } catch (error) {
    if (error instanceof BackupInputError) {
      io.err(`provision: ${error.message}\n`)
      return 2
    }
    throw error
  } finally {
    progress.done()
  }
}
