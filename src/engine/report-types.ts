import type { Change } from '../resources/resource.js'
import type { CheckResult } from './task.js'

export type NoteKind = 'kept' | 'secret' | 'mapped' | 'changes' | 'replaced' | 'extraConfig' | 'not mapped' | 'retired'

/** One line of the adoption report: a setting of the host, and what becomes of it. */
export interface AdoptionNote {
  kind: NoteKind
  /** Where it is on the host: `homeserver.yaml: listeners[8008]`. */
  found: string
  /** What it becomes: `synapse.listenPort 8008`, or why it goes. */
  becomes: string
}

/** What the report shows of an adoption (no secret values: names and where they came from). */
export interface AdoptionReport {
  notes: AdoptionNote[]
  secrets: { name: string; from: string }[]
  backupDir: string
  retire: string[]
}

export interface RestartRecord {
  unit: string
  action: 'restart' | 'reload'
  /** Why: the changes that touched what the unit watches, or "pending from an earlier run". */
  reason: string
  /** Planned only (dry run) or done. */
  done: boolean
}

export interface TaskReport {
  task: string
  status: 'ok' | 'changed' | 'failed' | 'skipped'
  changes: Change[]
  restarts: RestartRecord[]
  checks: CheckResult[]
  error?: string
  durationMs: number
}

export interface HostReport {
  host: string
  status: 'ok' | 'changed' | 'failed'
  tasks: TaskReport[]
  error?: string
  warnings: string[]
  /** `provision adopt`: what the hand-built server keeps, what is taken over, mapped or replaced. */
  adoption?: AdoptionReport
  durationMs: number
}

export interface RunReport {
  mode: 'apply' | 'dry-run' | 'check'
  inventory: string
  hosts: HostReport[]
  totals: { add: number; change: number; restart: number; failedHosts: number; uncertain: number }
  durationMs: number
}

export function totalsOf(hosts: HostReport[]): RunReport['totals'] {
  const changes = hosts.flatMap((h) => h.tasks.flatMap((t) => t.changes))
  return {
    add: changes.filter((c) => c.action === 'create' || c.action === 'install').length,
    change: changes.filter((c) => c.action !== 'create' && c.action !== 'install').length,
    restart: hosts.flatMap((h) => h.tasks.flatMap((t) => t.restarts)).length,
    failedHosts: hosts.filter((h) => h.status === 'failed').length,
    uncertain: changes.filter((c) => c.uncertain).length,
  }
}
