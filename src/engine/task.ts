import type { Fact, FactValues } from '../facts/fact.js'
import type { OsRelease } from '../facts/system.js'
import type { SecretValue } from '../core/secret.js'
import type { HostSpec, Inventory, Role } from '../inventory/types.js'
import type { Resource } from '../resources/resource.js'
import type { Secret } from '../core/secret.js'
import type { Connection } from '../ssh/connection.js'

export interface CheckOutcome {
  ok: boolean
  detail: string
  /** A warning does not stop the run (e.g. "focal is out of standard support"). */
  warning?: boolean
}

/** Before a task: may it run here? Pure over facts, so it runs in the dry run too, with no extra round trip. */
export interface BeforeCheck {
  name: string
  facts?: Fact<unknown>[]
  /** A promise when it asks the controller (an uploaded keyring's fingerprints through gpg), else the outcome. */
  evaluate(facts: FactValues): CheckOutcome | Promise<CheckOutcome>
}

/** How long an after-check may wait for a service to come up. */
export interface AfterCheckContext {
  /**
   * Seconds to keep asking: the check's own default after this run restarted or started something,
   * 0 otherwise (a service that is not answering now is not about to); `--wait` overrides both.
   */
  waitS(defaultS: number): number
}

/** After a task: does the result work? Read-only commands on the host. */
export interface AfterCheck {
  name: string
  /**
   * The check judges the inventory's own version (its lock): a rollback to the previous version skips
   * it, since that version is deliberately not the inventory's (the run fails and says so).
   */
  inventoryVersionOnly?: boolean
  run(conn: Connection, ctx: AfterCheckContext): Promise<CheckOutcome>
}

export interface CheckResult extends CheckOutcome {
  name: string
  phase: 'before' | 'after'
}

export interface TaskContext {
  host: HostSpec
  inventory: Inventory
  os: OsRelease
  /** Base facts of the host (os, packages, memory, disk, sockets, ...). */
  facts: FactValues
  /** A secret's value: from the controller, or generated once on this host and read back later. */
  secret(value: SecretValue): Secret
  hostByName(name: string): HostSpec
}

/** A role's task, or the `adopt` step that runs before them when a hand-built server is taken over. */
export type TaskName = Role | 'adopt'

/** A task module: one folder under tasks/, one line in tasks/index.ts. */
export interface Task<N extends TaskName = Role> {
  name: N
  title: string
  resources(ctx: TaskContext): Resource[] | Promise<Resource[]>
  before?(ctx: TaskContext): BeforeCheck[]
  after?(ctx: TaskContext): AfterCheck[]
  /**
   * Tasks on other hosts that must have finished before this one applies (Synapse needs the Postgres
   * and Redis it connects to). Each must come earlier in the task order, so waits never form a cycle.
   */
  needs?(ctx: TaskContext): TaskOnHost[]
}

export interface TaskOnHost {
  host: string
  task: Role
}
