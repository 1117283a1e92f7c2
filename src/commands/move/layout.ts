/**
 * NEW as the inventory lays it out: the main process's host (`--to`), the database host, the host that
 * holds the media store, the hosts running workers, Redis's host. The move checks, provisions, locks
 * and (on --abort) stops every one of them; each step names the hosts it acts on.
 */
import type { HostSpec, Inventory } from '../../inventory/types.js'
import { mediaStoreHost } from '../../inventory/workers.js'
import { SYNAPSE_UNIT } from '../../synapse/paths.js'
import { workerHosts, workerUnits } from '../../topology/instances.js'

export interface NewLayout {
  /** The host of Synapse's main process (and its Apache): `--to`. */
  main: string
  /** The host whose PostgreSQL receives the dump. */
  database: string
  /** The host whose media store receives OLD's media (the media_repository worker's, else main's). */
  media: string
  /** Synapse units per host, workers first and main last on main's host: stopped in this order, started main first. */
  units: Record<string, string[]>
  /** Hosts that run Synapse code (main and worker hosts): their Python must fit the target. */
  synapseHosts: string[]
  /** Every host of the homeserver, main's first. */
  hosts: string[]
}

export function newLayout(inventory: Inventory, main: HostSpec): NewLayout {
  const database = main.vars.postgres.host ?? main.name
  const workerHostNames = workerHosts(inventory, main.name)
  const synapseHosts = [main.name, ...workerHostNames.filter((h) => h !== main.name)]
  const units: Record<string, string[]> = {}
  for (const h of synapseHosts) units[h] = [...workerUnits(inventory, h), ...(h === main.name ? [SYNAPSE_UNIT] : [])]
  const hosts = [...new Set([...synapseHosts, database, ...(main.vars.redis.host ? [main.vars.redis.host] : [])])]
  return { main: main.name, database, media: mediaStoreHost(main), units, synapseHosts, hosts }
}

/** The hosts a step summary names, once each. */
export const onHosts = (hosts: readonly string[]): string => [...new Set(hosts)].join(', ')
