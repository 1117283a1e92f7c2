import type { SecretValue } from '../core/secret.js'

/** How to reach one host over SSH (the inventory's `ssh:` block after loading, defaults applied). */
export interface SshSettings {
  user: string
  port: number
  /** Private key file on the controller; else ssh-agent (SSH_AUTH_SOCK). */
  identityFile?: string
  /** known_hosts file used for host-key verification (default ~/.ssh/known_hosts). */
  knownHostsFile: string
  /** strict: unknown or changed key stops the host. accept-new: unknown keys are added, changed keys still stop. */
  hostKeyPolicy: 'strict' | 'accept-new'
  /** Inventory name of a host (or user@host:port) to jump through. */
  jump?: string
  /** When the login user needs a password for sudo. */
  sudoPassword?: SecretValue
  connectTimeoutMs: number
  commandTimeoutMs: number
  keepaliveIntervalMs: number
}

/** What the transport knows of a host: the inventory's HostSpec extends it. */
export interface SshHost {
  /** The inventory name (messages, jump lookups). */
  name: string
  /** Address used for SSH from the controller. */
  address: string
  ssh: SshSettings
}
