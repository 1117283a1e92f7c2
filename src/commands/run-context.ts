/** The part every inventory verb starts with: the inventory loaded, narrowed to --limit, a run log, connections. */
import { loadInventory } from '../inventory/load.js'
import { ROLES } from '../inventory/roles.js'
import type { HostSpec, Inventory, Role } from '../inventory/types.js'
import { createRunLog, type RunLog } from '../report/log.js'
import type { Connection } from '../ssh/connection.js'
import { connect } from '../ssh/connect.js'
import { splitList, UsageError, type VerbInput } from './verb.js'

/** Narrow the inventory to --limit (host names or roles) and pick the roles of the run (--tasks), in run order. */
export function selectHosts(inventory: Inventory, limit: string[], tasks: string[]): { inventory: Inventory; roles: Role[] } {
  for (const t of tasks)
    if (!(ROLES as readonly string[]).includes(t)) throw new UsageError(`--tasks: unknown task "${t}"; tasks are: ${ROLES.join(', ')}`)
  for (const l of limit) {
    if (!inventory.hosts.some((h) => h.name === l) && !(ROLES as readonly string[]).includes(l))
      throw new UsageError(
        `--limit: "${l}" is neither a host of ${inventory.file} (${inventory.hosts.map((h) => h.name).join(', ')}) nor a role`,
      )
  }
  const hosts = limit.length
    ? inventory.hosts.filter((h) => limit.includes(h.name) || h.roles.some((r) => limit.includes(r)))
    : inventory.hosts
  // Only the roles some host of the run has: the others' tasks would run nowhere, so they are not even loaded.
  const roles = ROLES.filter((r) => (tasks.length === 0 || tasks.includes(r)) && hosts.some((h) => h.roles.includes(r)))
  return { inventory: { ...inventory, hosts }, roles }
}

export interface RunContext {
  /** The whole inventory (a database host may be outside --limit). */
  loaded: Inventory
  /** Narrowed to --limit. */
  inventory: Inventory
  /** The roles of the run (--tasks, and a host of the run has them), in run order. */
  roles: Role[]
  log: RunLog
  /** A connection to a host of the inventory; `sudo: false` skips the sudo password, `echo: false` the --verbose output. */
  connect: (host: HostSpec, options?: { sudo?: boolean; echo?: boolean }) => Promise<Connection>
}

export async function openRun({ values, io }: VerbInput): Promise<RunContext> {
  const loaded = await loadInventory(values.inventory!, io.env)
  const { inventory, roles } = selectHosts(loaded, splitList(values.limit), splitList(values.tasks))
  if (inventory.hosts.length === 0) throw new UsageError(`--limit ${values.limit} matches no host`)
  const log = await createRunLog(values['log-file'])
  return {
    loaded,
    inventory,
    roles,
    log,
    connect: (host, { sudo = true, echo = true } = {}) =>
      connect(host, {
        log: (e) => log.event(e),
        resolveHost: (name) => loaded.hosts.find((h) => h.name === name),
        ...(sudo ? { sudoPassword: host.ssh.sudoPassword?.kind === 'value' ? host.ssh.sudoPassword.secret : undefined } : {}),
        // One whole line at a time, already masked by the connection (see LineMasker).
        ...(echo ? { onOutput: values.verbose ? (h: string, line: string) => io.err(`[${h}] | ${line}`) : undefined } : {}),
      }),
  }
}
