import type { HostSpec, Inventory, Role } from '../inventory/types.js'
import { maskSecrets } from '../core/secret.js'
import type { Connection } from '../ssh/connection.js'
import { runHost, type AdoptionHook, type Mode } from './host-run.js'
import { totalsOf, type HostReport, type RunReport } from './report-types.js'
import { Semaphore } from '../core/semaphore.js'
import { TaskBoard } from './task-board.js'
import type { Task, TaskOnHost } from './task.js'

export interface RunOptions {
  mode: Mode
  tasks: Task[]
  /** At most this many hosts at once. */
  parallel: number
  connect: (host: Inventory['hosts'][number]) => Promise<Connection>
  onEvent?: (event: { host: string; task?: string; message: string }) => void
  onHostDone?: (report: HostReport) => void
  /** --wait SECONDS for every after-check. */
  waitS?: number
  /** `provision adopt`: take over a Synapse built by hand on each host (handed in by src/commands/adopt/). */
  adoption?: AdoptionHook
  /** The caller holds the hosts' locks already (see HostRunOptions.lockHeld). */
  lockHeld?: boolean
}

/**
 * Run every host of the inventory, in parallel up to a bound; one failing host never stops the others.
 * A task that needs a task of another host (Task.needs) waits for it in apply, and gives its slot to
 * another host meanwhile, so no bound can deadlock the run.
 */
export async function runInventory(inventory: Inventory, options: RunOptions): Promise<RunReport> {
  const started = Date.now()
  const slots = new Semaphore(Math.max(1, options.parallel))
  const board = new TaskBoard(
    inventory.hosts,
    options.tasks.map((t) => t.name),
  )
  const reports = new Map<string, HostReport>()
  // Each host's connection, for a resource that must act on another host of the run (ApplyContext.peer).
  const connections = new Map<string, Promise<Connection>>()
  const peer = async (name: string): Promise<Connection> => {
    const c = connections.get(name)
    if (!c) throw new Error(`${name} is not part of this run (see --limit): include it`)
    return c
  }
  const runOne = async (host: HostSpec) => {
    let release = await slots.acquire()
    const t0 = Date.now()
    let conn: Connection | undefined
    let report: HostReport
    const awaitNeeds = async (needs: TaskOnHost[], task: Role) => {
      const pending = board.pending(needs)
      if (pending.length === 0) return board.waitFor(needs, task)
      options.onEvent?.({ host: host.name, task, message: `waiting for ${pending.map((n) => `${n.task} on ${n.host}`).join(', ')}` })
      release()
      try {
        return await board.waitFor(needs, task)
      } finally {
        release = await slots.acquire()
      }
    }
    try {
      options.onEvent?.({ host: host.name, message: `connecting to ${host.ssh.user}@${host.address}:${host.ssh.port}` })
      const connecting = options.connect(host)
      connections.set(host.name, connecting)
      connecting.catch(() => undefined)
      conn = await connecting
      report = await runHost(host, conn, {
        mode: options.mode,
        tasks: options.tasks,
        inventory,
        onEvent: options.onEvent,
        waitS: options.waitS,
        adoption: options.adoption,
        lockHeld: options.lockHeld,
        ...(options.mode === 'apply'
          ? { awaitNeeds, peer, onTaskDone: (task: Role, ok: boolean) => board.taskDone(host.name, task, ok) }
          : {}),
      })
    } catch (error) {
      report = {
        host: host.name,
        status: 'failed',
        tasks: [],
        warnings: [],
        error: maskSecrets(error instanceof Error ? error.message : String(error)),
        durationMs: Date.now() - t0,
      }
    } finally {
      connections.delete(host.name)
      await conn?.close().catch(() => undefined)
      board.hostFinished(host.name)
      release()
    }
    reports.set(host.name, report)
    options.onHostDone?.(report)
  }
  await Promise.all(inventory.hosts.map(runOne))
  const hosts = inventory.hosts.map((h) => reports.get(h.name)!)
  return { mode: options.mode, inventory: inventory.file, hosts, totals: totalsOf(hosts), durationMs: Date.now() - started }
}
