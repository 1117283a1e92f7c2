import type { z } from 'zod'
import type { SecretRef, SecretValue } from '../core/secret.js'
import type { SshHost } from '../ssh/settings.js'
import type { SynapseLock } from '../synapse/lock/lock-file.js'
import type { WorkerPreset } from '../synapse/worker-presets.js'
import type { ParsedVars, roleSchema } from './schema.js'

export type Role = z.output<typeof roleSchema>

/** A value of the schema's output with every secret reference resolved (the loader does it: resolveLeaves). */
export type Resolved<T> = T extends SecretRef
  ? SecretValue
  : T extends readonly (infer U)[]
    ? Resolved<U>[]
    : T extends object
      ? { [K in keyof T]: Resolved<T[K]> }
      : T

type Vars = Resolved<ParsedVars>

/**
 * The settings of one host: the schema's output (defaults and transforms, schema.ts) with secrets
 * resolved and controller paths made absolute, plus what the loader derives from several fields or
 * from the other hosts. A new setting is one schema entry; only a derived one is written here.
 */
export type MatrixSettings = Omit<Vars, 'serverName' | 'publicHost' | 'publicBaseUrl' | 'synapse' | 'workers' | 'element' | 'mas'> & {
  serverName: string
  /** Default matrix.<serverName>. */
  publicHost: string
  /** Default https://<publicHost>, with the port unless 443. */
  publicBaseUrl: string
  synapse: Vars['synapse'] & {
    /** pip: the locked dependency set of `version`, read and validated when the inventory is loaded. */
    lock?: SynapseLock
  }
  workers: Omit<Vars['workers'], 'preset'> & {
    /** The host has the workers role. */
    enabled: boolean
    /** Unset when the set is the explicit `instances` list. */
    preset?: WorkerPreset
    /** The inventory host of the main process (on a worker host too). */
    homeserverHost?: string
    /** The private address of each host of the homeserver (main and worker hosts), when it spans hosts. */
    addresses?: Record<string, string>
  }
  /** Role mas (tasks/mas): `enabled` when any host of the inventory has it (Synapse and Apache hand logins to it). */
  mas: Omit<Vars['mas'], 'host'> & {
    enabled: boolean
    host: string
  }
  element: Omit<Vars['element'], 'version' | 'host'> & {
    /** The host has the element role. */
    enabled: boolean
    /** Given, or read from the url or file name; '' when neither says. */
    version: string
    /** Default element.<serverName>. */
    host: string
  }
}

export interface HostSpec extends SshHost {
  /** Address other hosts use to reach this one (pg_hba, Redis bind); defaults to `address`. */
  privateAddress: string
  roles: Role[]
  vars: MatrixSettings
}

export interface Inventory {
  /** Path of the inventory file (for messages). */
  file: string
  hosts: HostSpec[]
}
