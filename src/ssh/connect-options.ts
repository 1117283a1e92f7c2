import type { Secret } from '../core/secret.js'
import type { InventoryDefaults } from './endpoint.js'
import type { SshHost } from './settings.js'

export type SshLogEvent = {
  /** Inventory name of the host. */
  host: string
  /** The command with secrets masked (sudo and timeout wrappers left out). */
  command?: string
  code?: number | null
  durationMs?: number
  msg: string
}

export type SshOutputEvent = {
  host: string
  /** As displayed in results: secrets masked. */
  command: string
  stream: 'stdout' | 'stderr'
  /** Whole lines of output (each ending in a newline) with known secret values masked. */
  chunk: string
}

export interface ConnectOptions {
  /** Every connect, command (with duration and exit code), and connection loss. */
  log?: (event: SshLogEvent) => void
  /** Live output of every command, masked, with the command it belongs to (for --verbose). */
  onVerbose?: (event: SshOutputEvent) => void
  /** Live output of every command, whole lines masked (a secret split across chunks is still found): the simple form of onVerbose. */
  onOutput?: (host: string, chunk: string, stream: 'stdout' | 'stderr') => void
  /** Password for sudo when the login user has no NOPASSWD rule. Sent on stdin, never on a command line. */
  sudoPassword?: string | Secret
  /** ssh_config file for host aliases; default ~/.ssh/config; false to ignore it. */
  sshConfigFile?: string | false
  /** The inventory's defaults, so ~/.ssh/config values fill exactly the settings the inventory left unset. */
  inventoryDefaults?: InventoryDefaults
  /** Look up inventory hosts by name, for `ssh.jump: <inventory host>`. */
  resolveHost?: (name: string) => SshHost | undefined
  /** Concurrent command channels per connection; default 8 (OpenSSH's MaxSessions is 10). */
  maxChannels?: number
  /** Long-lived processes (spawn) per connection, on top of maxChannels; default 2. */
  maxSpawned?: number
}
