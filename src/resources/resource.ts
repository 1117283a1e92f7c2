import type { ShellCommand } from '../core/shell.js'
import { FactValues, type Fact } from '../facts/fact.js'
import type { Connection } from '../ssh/connection.js'

export type ChangeAction = 'create' | 'update' | 'delete' | 'install' | 'run' | 'start' | 'enable' | 'restart' | 'reload'

/** What a change alters; the engine decides backups, stale facts and restarts from the typed fields below, never from the id. */
export type ChangeKind = 'file' | 'directory' | 'symlink' | 'line' | 'package' | 'command' | 'service' | 'database' | 'virtualenv'

/**
 * How far a change reaches: `paths` alters exactly the paths in `touches` (and, for a directory, the
 * parents it creates); `link` also moves what resolves below them (a re-pointed symlink); `anything`
 * may alter any fact (a package, a command, a service start).
 */
export type ChangeReach = 'paths' | 'link' | 'anything'

/** A planned change: data first (for --json), rendered as text by src/report/. */
export interface Change {
  /** Resource id, e.g. `file:/etc/matrix-synapse/conf.d/10-server.yaml`: a name for people and tests only. */
  resource: string
  kind: ChangeKind
  action: ChangeAction
  /** One line a human reads: "install postgresql", "write /etc/x (0640 root:matrix-synapse)". */
  summary: string
  /** Unified diff for files, secrets masked. */
  diff?: string
  /** Set when the outcome cannot be known before apply; says why. */
  uncertain?: string
  /** Paths and `pkg:name` this change touches; services watching them are restarted. */
  touches: string[]
  /**
   * Paths saved before the change when a validating unit watches them, and put back if that unit
   * rejects its new configuration. Every resource states it (empty: nothing the engine can restore).
   */
  backupPaths: string[]
  reach: ChangeReach
  /** The unit this change starts on its new configuration: no restart is due for it afterwards. */
  starts?: string
  /**
   * An ordered procedure (a Synapse upgrade: stop workers -> switch -> start main -> ...): planned in
   * the dry run, and done in exactly this order by apply, which records each in `performed`.
   */
  steps?: Step[]
  /** Apply: the steps as done, in order, with their outcome (a rollback appends its own). */
  performed?: PerformedStep[]
  /**
   * What apply needs of its own plan (a Synapse release: its typed steps, the versions, the dump),
   * carried on the change instead of kept between plan and apply. Not part of the report.
   */
  payload?: PlanPayload
}

/** A resource's own plan data on its change: `tag` names its owner; serialises to nothing (--json shows `steps`). */
export class PlanPayload<T = unknown> {
  constructor(
    readonly tag: string,
    readonly value: T,
  ) {}

  toJSON(): undefined {
    return undefined
  }
}

/**
 * One resource's payload, typed: `carry` puts it on a change, `of` reads it back and refuses a change
 * that does not carry it (apply runs only what a plan of its own kind decided).
 */
export function definePlanPayload<T>(tag: string, what: string) {
  return {
    carry: (change: Change, value: T): Change => ({ ...change, payload: new PlanPayload(tag, value) }),
    of: (change: Change): T => {
      const p = change.payload
      if (!(p instanceof PlanPayload) || p.tag !== tag) throw new Error(`${change.resource}: the change carries no ${what}`)
      return p.value as T
    },
  }
}

export interface Step {
  /** e.g. install, check-config, backup, stop, switch, start, wait-health, after-checks, prune. */
  kind: string
  /** What it acts on: a unit, a path, a URL. */
  target: string
  /** Another inventory host it acts on (a worker host's unit); unset: this host. */
  host?: string
  summary: string
  /** Set when the dry run cannot know yet whether the step will do anything; says why. */
  uncertain?: string
}

export interface PerformedStep extends Step {
  status: 'done' | 'skipped' | 'failed'
  detail?: string
  durationMs: number
  /** Steps of an automatic rollback after a failed upgrade. */
  rollback?: boolean
}

/**
 * What a plan knows will exist after earlier changes of the same run: the honest dry run predicts the
 * chain (package installed -> its unit and files exist -> its service can be started) from this.
 */
export class Prediction {
  readonly packages = new Set<string>()
  readonly paths = new Set<string>()
  readonly units = new Map<string, string>()
  /**
   * Facts as a planned change leaves them (a file's new state, the packages after an install). The
   * dry run plans later resources against them, so a resource two tasks declare (the firewall's
   * nftables package and unit template) is planned once, as apply will do it once.
   */
  readonly factsAfter = new FactValues()

  /** Which planned change provides this unit, if any ("package apache2", "file /etc/systemd/system/x"); an instance comes with its template. */
  unitSource(unit: string): string | undefined {
    return this.units.get(unit) ?? this.units.get(unit.replace(/@[^.]+\./, '@.'))
  }
}

export interface PlanContext {
  conn: Connection
  facts: FactValues
  predicted: Prediction
  /** Dry run: nothing may change on the host; plan against predictions. */
  dryRun: boolean
}

export interface ApplyContext {
  conn: Connection
  /**
   * The connection of another host of this run (an upgrade stops the workers of the worker hosts
   * before main switches); rejects when that host is not part of the run.
   */
  peer?: (host: string) => Promise<Connection>
  /** Recorded by resources whose change makes apt's package lists stale (a new repository or key). */
  state: { aptListsStale: boolean }
}

/** The declarative primitive: knows its facts, diffs against them, applies a change. */
export interface Resource {
  readonly id: string
  facts(): Fact<unknown>[]
  /** Synchronous when it only reads the gathered facts; a promise when it must ask something more. */
  plan(ctx: PlanContext): Change | null | Promise<Change | null>
  apply(change: Change, ctx: ApplyContext): Promise<void>
  /**
   * Resources whose changes do not depend on each other (services started: systemd runs their start
   * jobs side by side). Apply sends the planned changes of consecutive resources with the same key
   * to the host as one call of `apply` instead of one after another; each is still planned,
   * reported and recorded on its own, in the plan's order.
   */
  together?: ApplyTogether
}

export interface ApplyTogether {
  key: string
  /** Applies every change at once; resolves with why each change that did not take failed (empty: all did). */
  apply(changes: Change[], ctx: ApplyContext): Promise<Map<Change, string>>
}

/** A service whose restart the engine schedules when a change touches what it watches. */
export interface RestartTarget {
  unit: string
  /** Path prefixes (e.g. `/etc/apache2/`) and `pkg:<name>` entries. */
  watch: string[]
  /** reload instead of restart. */
  reload: boolean
  /** Run before a restart; when it fails, the changed watched files are restored and the task fails. */
  validate?: ShellCommand
  /**
   * Prints the configuration generation the running unit serves (empty when it cannot tell). A reload
   * that only signals the unit returns before the new configuration serves (Apache's graceful): the
   * ledger then waits until this prints a value other than before the reload.
   */
  generation?: ShellCommand
}

export function watches(target: RestartTarget, touched: string): boolean {
  return target.watch.some((w) => (w.endsWith('/') ? touched.startsWith(w) : touched === w))
}
