import type { Inventory } from '../inventory/types.js'
import { maskSecrets } from '../secret.js'
import type { Connection } from '../ssh/connection.js'
import { runHost, type Mode } from './host-run.js'
import { totalsOf, type HostReport, type RunReport } from './report-types.js'
import type { Task } from './task.js'

export interface RunOptions {
  mode: Mode
  tasks: Task[]
  /** At most this many hosts at once. */
  parallel: number
  connect: (host: Inventory['hosts'][number]) => Promise<Connection>
  onEvent?: (event: { host: string; task?: string; message: string }) => void
  onHostDone?: (report: HostReport) => void
}

/** Run every host of the inventory, in parallel up to a bound; one failing host never stops the others. */
export async function runInventory(inventory: Inventory, options: RunOptions): Promise<RunReport> {
  const started = Date.now()
  const queue = [...inventory.hosts]
  const reports = new Map<string, HostReport>()
  const worker = async () => {
    for (let host = queue.shift(); host; host = queue.shift()) {
      const t0 = Date.now()
      let conn: Connection | undefined
      let report: HostReport
      try {
        options.onEvent?.({ host: host.name, message: `connecting to ${host.ssh.user}@${host.address}:${host.ssh.port}` })
        conn = await options.connect(host)
        report = await runHost(host, conn, { mode: options.mode, tasks: options.tasks, inventory, onEvent: options.onEvent })
      } catch (error) {
        report = { host: host.name, status: 'failed', tasks: [], warnings: [], error: maskSecrets(error instanceof Error ? error.message : String(error)), durationMs: Date.now() - t0 }
      } finally {
        await conn?.close().catch(() => undefined)
      }
      reports.set(host.name, report)
      options.onHostDone?.(report)
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.parallel, inventory.hosts.length)) }, worker))
  const hosts = inventory.hosts.map((h) => reports.get(h.name)!)
  return { mode: options.mode, inventory: inventory.file, hosts, totals: totalsOf(hosts), durationMs: Date.now() - started }
}
