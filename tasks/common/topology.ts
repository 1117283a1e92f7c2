import type { HostSpec } from '../../src/inventory/types.js'
import type { TaskContext } from '../../src/engine/task.js'

/** Where this host reaches a service that runs on `serviceHost`: loopback when it is itself. */
export function addressOf(ctx: TaskContext, serviceHost: string | undefined): string {
  if (!serviceHost || serviceHost === ctx.host.name) return '127.0.0.1'
  return ctx.hostByName(serviceHost).privateAddress
}

/** Hosts (other than this one) whose Synapse or workers use the Postgres/Redis running here. */
export function remoteClients(ctx: TaskContext, service: 'postgres' | 'redis'): HostSpec[] {
  const names =
    service === 'postgres' && ctx.host.vars.postgres.allowFrom
      ? ctx.host.vars.postgres.allowFrom
      : ctx.inventory.hosts.filter((h) => h.roles.includes('synapse') || h.roles.includes('workers')).map((h) => h.name)
  return names
    .map((n) => ctx.hostByName(n))
    .filter((h) => h.name !== ctx.host.name)
    .filter((h) =>
      service === 'postgres'
        ? (h.vars.postgres.host ?? ctx.host.name) === ctx.host.name
        : (h.vars.redis.host ?? ctx.host.name) === ctx.host.name,
    )
}

/** pg_hba / firewall form of an address: IPs get a host-length prefix, names stay names. */
export function hostCidr(address: string): string {
  if (/^\d+\.\d+\.\d+\.\d+$/.test(address)) return `${address}/32`
  if (address.includes(':')) return `${address}/128`
  return address
}
