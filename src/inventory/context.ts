/**
 * What every check of pass 3 reads and writes: the raw file, the merged hosts, the issues found so
 * far, and where a merged value was written (for positions).
 */
import { formatPath, type InventoryIssue, suggestion } from './errors.js'
import { hasPath } from './merge.js'
import type { Locator, Path } from './positions.js'
import type { ParsedVars, RawHost, RawInventory, RawSsh, RawVars } from './schema.js'
import type { Role } from './types.js'
import type { LockError, SynapseLock } from '../synapse/lock/lock-file.js'

export interface LoadOptions {
  /**
   * Read and validate the Synapse lock of every pip host (default true). `provision lock`, which
   * writes the locks, loads without them.
   */
  locks?: boolean
}

export interface HostEntry {
  name: string
  raw: RawHost
  roles: Role[]
  /** Merged as written (for positions: what the user wrote). */
  vars: RawVars
  /** The merged vars with the schema's defaults and transforms (secrets and paths not resolved). */
  parsed: ParsedVars
  ssh: RawSsh
}

export const NEEDS_POSTGRES: readonly Role[] = ['synapse', 'workers']

export class LoadContext {
  readonly issues: InventoryIssue[] = []
  readonly names: string[]
  /** Synapse locks read so far, by lock directory and version (several hosts share one). */
  readonly lockCache = new Map<string, Promise<SynapseLock | LockError>>()

  constructor(
    readonly raw: RawInventory,
    readonly hosts: HostEntry[],
    readonly file: string,
    readonly locator: Locator,
    readonly options: LoadOptions,
  ) {
    this.names = hosts.map((host) => host.name)
  }

  /** Where a merged vars value was written: the host's vars, else defaults.vars; undefined when it is a default. */
  varsOrigin(host: string, sub: Path): PropertyKey[] | undefined {
    if (hasPath(this.raw.hosts[host]?.vars, sub)) return ['hosts', host, 'vars', ...sub]
    if (hasPath(this.raw.defaults?.vars, sub)) return ['defaults', 'vars', ...sub]
    return undefined
  }

  sshOrigin(host: string, key: string): string[] | undefined {
    if (hasPath(this.raw.hosts[host]?.ssh, [key])) return ['hosts', host, 'ssh', key]
    if (hasPath(this.raw.defaults?.ssh, [key])) return ['defaults', 'ssh', key]
    return undefined
  }

  add(path: Path, message: string, hint?: string): void {
    this.issues.push(this.locator.issue(path, message, hint))
  }

  /** An issue about a merged value: at the value when written, else at the host's node. */
  addForVar(host: string, sub: Path, message: string, hint?: string): void {
    const origin = this.varsOrigin(host, sub)
    if (origin) this.add(origin, message, hint)
    else
      this.issues.push(
        this.locator.issueAtOffset(this.locator.offset(['hosts', host]), formatPath(['hosts', host, 'vars', ...sub]), message, hint),
      )
  }

  roleIndex(host: HostEntry, role: Role): number {
    return host.roles.indexOf(role)
  }

  addForRole(host: HostEntry, role: Role, message: string, hint?: string): void {
    this.add(['hosts', host.name, 'roles', this.roleIndex(host, role)], message, hint)
  }

  hostsWithRole(role: Role): HostEntry[] {
    return this.hosts.filter((host) => host.roles.includes(role))
  }

  checkHostReference(path: Path, name: string, what: string): boolean {
    if (this.names.includes(name)) return true
    this.add(
      path,
      `${what} "${name}" is not a host of this inventory; ${suggestion(name, this.names, 'the hosts are')}`,
      'name a host defined under hosts:',
    )
    return false
  }

  /** The inventory host that runs `role` for `host`: explicit vars.<role>.host, the only host with the role, else this host. */
  serviceHost(host: HostEntry, role: 'postgres' | 'redis'): { name?: string; explicit: boolean; candidates: HostEntry[] } {
    const explicit = host.vars[role]?.host
    const candidates = this.hostsWithRole(role)
    if (explicit !== undefined) return { name: explicit, explicit: true, candidates }
    if (candidates.length === 1) return { name: candidates[0]!.name, explicit: false, candidates }
    if (candidates.length === 0 || host.roles.includes(role)) return { name: host.name, explicit: false, candidates }
    return { explicit: false, candidates }
  }
}
