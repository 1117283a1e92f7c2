/** What `provision restore` is given and what it reports (text and --json render the same object). */
import type { RunReport } from '../../engine/report-types.js'
import type { Task } from '../../engine/task.js'
import type { HostSpec, Inventory } from '../../inventory/types.js'
import type { Connection } from '../../ssh/connection.js'
import type { Manifest } from './manifest.js'
import type { TransferProgress } from './transfer-progress.js'

export interface RestoreOptions {
  host: HostSpec
  /** The whole inventory: the database host, the worker hosts, the host's worker set. */
  inventory: Inventory
  /** A backup directory, or a directory holding backups (the newest of this host is taken). */
  from: string
  force: boolean
  /** age identity file, for an encrypted backup. */
  identity?: string
  dryRun: boolean
  connect(host: HostSpec): Promise<Connection>
  /**
   * Run the given hosts of `inventory` through the engine inside the held locks (their role tasks, or
   * the tasks handed in), in apply mode: renders config with the restored secrets, main first, then
   * the workers, after-checks.
   */
  run(inventory: Inventory, o?: { tasks?: Task[] }): Promise<RunReport>
  progress: TransferProgress
}

export interface RestoreStep {
  action: 'stop' | 'signing-key' | 'secrets' | 'database' | 'media' | 'install-old' | 'start-old' | 'apply'
  summary: string
  /** What the step does in order, when it is a procedure of its own (the release steps of the upgrade). */
  details?: string[]
  done: boolean
  /** How long the step took (when done). */
  durationMs?: number
}

export interface RestoreReport {
  command: 'restore'
  host: string
  from: string
  /** planned: the dry run; refused: bad input or a target that holds data, nothing changed. */
  status: 'planned' | 'restored' | 'refused' | 'failed'
  manifest?: Pick<Manifest, 'serverName' | 'createdAt' | 'synapse' | 'signingKey' | 'host'>
  /** The backup's Synapse and the inventory's: the same, or the older one restored first and then upgraded. */
  route?: { from: string; to: string }
  /** What the restore replaces on the target, in words (what --force overrides). */
  replaces: string[]
  steps: RestoreStep[]
  /** The older version's runs before the upgrade: its install side by side, the inventory applied at it. */
  older?: RunReport[]
  /** The inventory applied (last step). */
  apply?: RunReport
  error?: string
  durationMs: number
}

/** A refusal: the target is left as it was. */
export class RestoreRefused extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'RestoreRefused'
  }
}
