/** What `provision move` reports, its options, and NEW's record of the move. */
import type { RunReport } from '../../engine/report-types.js'
import type { HostSpec, Inventory } from '../../inventory/types.js'
import type { Connection } from '../../ssh/connection.js'
import { STATE_DIR } from '../../synapse/paths.js'
import type { NewLayout } from './layout.js'

/** NEW's record of the move (on NEW): a second run finds it and changes nothing. */
export const MOVE_RECORD = `${STATE_DIR}/move.json`
/** Free space NEW must have beyond OLD's database size and media. */
export const SPACE_MARGIN = 1.5

export interface MoveStep {
  name: string
  /** NEW's hosts the step acts on (none: it acts on OLD only). */
  hosts: string[]
  summary: string
  done: boolean
  durationMs?: number
  /** Bytes streamed from OLD to NEW (media, database dump). */
  bytes?: number
}

export interface MoveReport {
  command: 'move'
  from: string
  to: string
  status: 'planned' | 'moved' | 'unchanged' | 'aborted' | 'refused' | 'failed'
  preflight: { name: string; ok: boolean; detail: string }[]
  steps: MoveStep[]
  old?: { synapse: string; postgres: string; schema?: number; databaseBytes: number; mediaBytes: number; signingKey: string }
  /** NEW's hosts: main, database, media store, workers. */
  layout?: NewLayout
  /** Writes stopped on OLD -> NEW's main answered /health. */
  downtimeMs?: number
  backgroundUpdatesMs?: number
  apply?: RunReport
  next: string[]
  error?: string
  durationMs: number
}

export interface MoveOptions {
  old: HostSpec
  new: HostSpec
  inventory: Inventory
  dryRun: boolean
  abort: boolean
  connect(host: HostSpec): Promise<Connection>
  /** Apply the inventory to NEW's hosts (inside the held locks). */
  applyInventory(hosts: HostSpec[]): Promise<RunReport>
  say(line: string): void
}

export interface NewRecord {
  from: string
  phase: 'provisioned' | 'cut-over' | 'serving' | 'done' | 'aborted'
  at: string
  downtimeMs?: number
}

export const json = (r: { stdout: string }): unknown => (r.stdout.trim() ? (JSON.parse(r.stdout) as unknown) : undefined)

/** What the operator does after the move: DNS, OLD, the certificate. */
export function nextSteps(o: MoveOptions): string[] {
  return [
    `point the DNS records of ${o.new.vars.serverName} (and the public names of its vhosts) to ${o.new.address}; keep the .well-known records (they name names, not addresses)`,
    `${o.old.name} stays stopped and masked with all its data: remove it from the inventory, and delete or reuse it once ${o.new.name} has served for a while`,
    `if ${o.new.name} uses OLD's certificate (tls.mode files), switch to tls.mode acme once DNS points to it, and provision again`,
  ]
}
