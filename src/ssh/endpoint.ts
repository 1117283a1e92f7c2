import { homedir } from 'node:os'
import { join } from 'node:path'
import type { SshHost, SshSettings } from './settings.js'
import { resolveSshConfig, type SshConfigBlock } from './ssh-config.js'

/** Everything needed to open one SSH hop: where, as whom, with which key, checked against which file. */
export interface Endpoint {
  /** For messages: the inventory name, or the jump spec as written. */
  label: string
  address: string
  port: number
  user: string
  identityFile?: string
  knownHostsFile: string
  hostKeyPolicy: SshSettings['hostKeyPolicy']
  connectTimeoutMs: number
  keepaliveIntervalMs: number
}

/** The hops to go through (first = connected directly), then the target. */
export interface Route {
  hops: Endpoint[]
  target: Endpoint
}

/**
 * Values the inventory uses when a setting is not written. An ~/.ssh/config value replaces an
 * inventory value only when the inventory left that setting at its default, so `address: myalias`
 * picks up the alias's User and Port, while a User written in the inventory still wins (as `ssh -l`
 * wins over the config file).
 */
export interface InventoryDefaults {
  user: string
  port: number
  knownHostsFile: string
}

export const DEFAULT_INVENTORY_SSH: InventoryDefaults = {
  user: 'root',
  port: 22,
  knownHostsFile: join(homedir(), '.ssh', 'known_hosts'),
}

/** `~/x` -> $HOME/x (inventory paths are normally resolved already; ssh config paths may not be). */
export function expandHome(path: string): string {
  return path === '~' ? homedir() : path.startsWith('~/') ? join(homedir(), path.slice(2)) : path
}

/** `[user@]host[:port]`, `[user@][v6addr]:port`. */
export function parseJumpSpec(spec: string): { user?: string; host: string; port?: number } {
  const at = spec.lastIndexOf('@')
  const user = at >= 0 ? spec.slice(0, at) : undefined
  const rest = at >= 0 ? spec.slice(at + 1) : spec
  let host = rest
  let port: number | undefined
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(rest)
  if (bracketed) {
    host = bracketed[1]!
    if (bracketed[2]) port = Number(bracketed[2])
  } else {
    const colon = rest.lastIndexOf(':')
    // One colon: host:port. More (a bare IPv6 address): no port.
    if (colon >= 0 && rest.indexOf(':') === colon && /^\d+$/.test(rest.slice(colon + 1))) {
      host = rest.slice(0, colon)
      port = Number(rest.slice(colon + 1))
    }
  }
  if (!host || (user !== undefined && !user)) throw new Error(`cannot read jump host "${spec}": expected [user@]host[:port]`)
  const out: { user?: string; host: string; port?: number } = { host }
  if (user !== undefined) out.user = user
  if (port !== undefined) out.port = port
  return out
}

export interface RouteOptions {
  sshConfig: readonly SshConfigBlock[]
  defaults?: InventoryDefaults
  /** Inventory hosts by name, so `ssh.jump: bastion` can name another inventory host. */
  resolveHost?: (name: string) => SshHost | undefined
}

function endpointFor(host: SshHost, options: RouteOptions): { endpoint: Endpoint; jump?: string } {
  const defaults = options.defaults ?? DEFAULT_INVENTORY_SSH
  const ssh = host.ssh
  const cfg = resolveSshConfig(options.sshConfig, host.address)
  const endpoint: Endpoint = {
    label: host.name,
    address: cfg.hostName ?? host.address,
    port: ssh.port === defaults.port && cfg.port !== undefined ? cfg.port : ssh.port,
    user: ssh.user === defaults.user && cfg.user !== undefined ? cfg.user : ssh.user,
    knownHostsFile: expandHome(
      expandHome(ssh.knownHostsFile) === expandHome(defaults.knownHostsFile) && cfg.userKnownHostsFile
        ? cfg.userKnownHostsFile
        : ssh.knownHostsFile,
    ),
    hostKeyPolicy: ssh.hostKeyPolicy,
    connectTimeoutMs: ssh.connectTimeoutMs,
    keepaliveIntervalMs: ssh.keepaliveIntervalMs,
  }
  const identityFile = ssh.identityFile ?? cfg.identityFiles[0]
  if (identityFile !== undefined) endpoint.identityFile = expandHome(identityFile)
  const jump = ssh.jump ?? cfg.proxyJump
  return jump === undefined ? { endpoint } : { endpoint, jump }
}

/**
 * Work out the hops and the target for a host: ~/.ssh/config applied, `ssh.jump` (or the alias's
 * ProxyJump) expanded into hops. A jump that names an inventory host uses that host's own settings;
 * a `user@host:port` jump uses the target's key, known_hosts file and policy (and its ssh config).
 */
export function resolveRoute(host: SshHost, options: RouteOptions, seen: string[] = []): Route {
  if (seen.includes(host.name)) throw new Error(`jump hosts loop: ${[...seen, host.name].join(' -> ')}`)
  if (seen.length > 8) throw new Error(`more than 8 jump hosts for ${seen[0]}`)
  const { endpoint: target, jump } = endpointFor(host, options)
  if (jump === undefined) return { hops: [], target }
  const hops: Endpoint[] = []
  for (const spec of jump
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const named = options.resolveHost?.(spec)
    if (named) {
      // An inventory host may itself sit behind a jump host.
      const route = resolveRoute(named, options, [...seen, host.name])
      hops.push(...route.hops, route.target)
      continue
    }
    const parsed = parseJumpSpec(spec)
    const cfg = resolveSshConfig(options.sshConfig, parsed.host)
    const hop: Endpoint = {
      label: spec,
      address: cfg.hostName ?? parsed.host,
      port: parsed.port ?? cfg.port ?? 22,
      user: parsed.user ?? cfg.user ?? target.user,
      knownHostsFile: cfg.userKnownHostsFile ?? target.knownHostsFile,
      hostKeyPolicy: target.hostKeyPolicy,
      connectTimeoutMs: target.connectTimeoutMs,
      keepaliveIntervalMs: target.keepaliveIntervalMs,
    }
    const identityFile = cfg.identityFiles[0] ?? target.identityFile
    if (identityFile !== undefined) hop.identityFile = identityFile
    hops.push(hop)
  }
  return { hops, target }
}
