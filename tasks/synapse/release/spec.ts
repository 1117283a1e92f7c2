/** What a host's Synapse release is made of: the settings the upgrade, the rollback and their executor read. */
import type { AfterCheck } from '../../../src/engine/task.js'
import type { Fact } from '../../../src/facts/fact.js'
import type { Resource } from '../../../src/resources/resource.js'
import type { ShellCommand } from '../../../src/core/shell.js'
import type { SynapseLock } from '../../../src/synapse/lock/lock-file.js'
import type { AptSourceState } from '../apt-package.js'
import type { CodeSchema } from '../schema-compat.js'

export interface ReleaseSpec {
  method: 'pip' | 'apt'
  version: string
  /** Worker units on this host, from the workers task's one source. */
  workerUnits: string[]
  /**
   * Worker units on the worker hosts of a homeserver spread over hosts: stopped (through their host's
   * connection) before main switches; their own host's run switches their venv and starts them after
   * main is up (its workers task needs this host's synapse task).
   */
  remoteWorkers?: { host: string; units: string[] }[]
  /** Main's /health on the host. */
  healthUrl: string
  /** The checks of a working homeserver after the switch (main, client API, each worker). */
  afterChecks: AfterCheck[]
  keepVenvs: number
  /** Pre-upgrade dumps kept in backupDir after a version change (synapse.keepDumps). */
  keepDumps: number
  backupDir: string
  /** Copied beside the dump: a restored database is useless without the server's key. */
  signingKey: string
  /** Commands that parse the live configuration with a given venv's Python (main, then each worker). */
  configChecks: (python: string) => ShellCommand[]
  /** pip: the resource that installs a venv at a path from the lock (the wheelhouse, an index or the lock itself). */
  installAt?: (path: string) => Resource
  /** pip: the lock the running venv must hold; drift from it is repaired by a venv rebuilt beside it. */
  lock?: SynapseLock
  /** The new code's schema rules known on the controller (the wheelhouse's wheel), for the dry run: read when a plan asks. */
  controllerCode?: () => Promise<CodeSchema | undefined>
  /** apt: what the matrix.org source offers (read fresh in the plan), and the guarded install of one Debian version. */
  apt?: { source: Fact<AptSourceState>; install: (debVersion: string) => ShellCommand }
  /** Postgres runs on this host (dumped as the postgres superuser), else the dump connects with Synapse's credentials. */
  postgresLocal: boolean
  database: string
  /** The role owning Synapse's database (a restored dump's objects are owned by it). */
  databaseOwner: string
}

/** What the executor of the steps reads of the release's settings (`provision rollback` has no install method). */
export type ExecSpec = Pick<
  ReleaseSpec,
  'version' | 'afterChecks' | 'signingKey' | 'configChecks' | 'postgresLocal' | 'database' | 'databaseOwner' | 'apt'
>

/** What the rollback needs of the release's settings (ReleaseSpec has them). */
export type RollbackSpec = ExecSpec & Pick<ReleaseSpec, 'workerUnits' | 'healthUrl'>
