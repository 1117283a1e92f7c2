/**
 * The worker set resolved over an inventory's hosts: which host runs which workers and units,
 * where processes reach each other, and which worker writes which stream. The worker set of one
 * settings object (names, kinds, ports) is src/inventory/workers.ts.
 */
import type { Inventory, MatrixSettings } from '../inventory/types.js'
import { instancesOn, LOOPBACK, spansHosts, workerInstances, type WorkerInstance } from '../inventory/workers.js'
import { KINDS, workerUnitName } from '../synapse/worker-kinds.js'
import type { Stream } from '../synapse/routes.js'

/** Where processes of the homeserver reach a process on `host` (main's host when undefined). */
export function reachAddress(vars: MatrixSettings, host?: string): string {
  if (!spansHosts(vars)) return LOOPBACK
  const name = host ?? vars.workers.homeserverHost!
  return vars.workers.addresses?.[name] ?? LOOPBACK
}

/** bind_addresses of a listener other hosts must reach: loopback (local clients, checks) and the private address. */
export function sharedBind(vars: MatrixSettings, host?: string): string[] {
  return [...new Set([LOOPBACK, reachAddress(vars, host)])]
}

/** The workers that run on an inventory host: the main process's host, or a worker host the set places workers on. */
export function workerInstancesOnHost(inventory: Inventory, hostName: string): WorkerInstance[] {
  const host = inventory.hosts.find((h) => h.name === hostName)
  if (!host || !host.roles.includes('workers')) return []
  return instancesOn(host.vars, hostName)
}

/** Hosts of the inventory that run workers of the homeserver whose main process is on `mainHost` (main's first). */
export function workerHosts(inventory: Inventory, mainHost: string): string[] {
  const main = inventory.hosts.find((h) => h.name === mainHost)
  if (!main || !main.roles.includes('workers')) return []
  return [...new Set([mainHost, ...workerInstances(main.vars).map((w) => w.host ?? mainHost)])]
}

/** systemd units of the workers on a host, in the set's order (stop them before main, start after). */
export function workerUnits(inventory: Inventory, hostName: string): string[] {
  return workerInstancesOnHost(inventory, hostName).map((w) => workerUnitName(w.name))
}

/** The writers of each stream a worker writes (streams left to main are absent). */
export function streamWriters(instances: readonly WorkerInstance[], knownStreams: readonly Stream[]): Partial<Record<Stream, string[]>> {
  const out: Partial<Record<Stream, string[]>> = {}
  for (const w of instances) {
    for (const stream of KINDS[w.kind].streams) {
      if (!knownStreams.includes(stream)) continue
      ;(out[stream] ??= []).push(w.name)
    }
  }
  return out
}
