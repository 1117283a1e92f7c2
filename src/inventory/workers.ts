/**
 * The worker set of a homeserver as data: the preset or explicit list of the inventory, resolved
 * into instances with names, kinds and ports. The single source of worker names and ports: the
 * inventory loader checks them, the synapse and workers tasks render them, Apache routes to them,
 * monitoring scrapes them, and other commands (upgrade) stop and start their units from here.
 *
 * Ports: an instance may give its own; otherwise it gets them from its position in the list
 * (`portBase + i` for its http listener, `portBase + 100 + i` replication, `portBase + 200 + i`
 * metrics), so adding a worker at the end of a list moves no other worker. The guide preset keeps
 * the guide's ports (federation_reader 32902 and metrics 32981, federation_sender metrics 32980).
 */
import { KINDS, RESERVED_WORKER_NAMES, servesRequests, writesStreams, type WorkerKindName } from '../synapse/worker-kinds.js'
import { PRESETS } from '../synapse/worker-presets.js'
import type { WorkerEntry } from './settings/workers.js'
import type { MatrixSettings } from './types.js'

export interface WorkerInstance {
  /** worker_name: the unit instance, file names, instance_map key, Prometheus job. */
  name: string
  kind: WorkerKindName
  /** http listener for the requests Apache sends (client/federation or media); absent when it serves none. */
  port?: number
  /** http `replication` listener of a stream writer (its instance_map entry). */
  replicationPort?: number
  metricsPort: number
  /** Inventory host it runs on (the main process's host unless placed elsewhere; unset for settings without hosts). */
  host?: string
  /** Address other processes and Apache reach it at: loopback unless the homeserver spans hosts. */
  address: string
  /** Runs on another host than the main process (and Apache and Prometheus beside it). */
  remote: boolean
}

export const LOOPBACK = '127.0.0.1'

/** The host of a worker: its entry's host, else placement by name, else by kind, else main's. */
export function placedHost(workers: MatrixSettings['workers'], e: WorkerEntry): string | undefined {
  return e.host ?? workers.placement?.[e.name] ?? workers.placement?.[e.kind]
}

/** Does the worker set run on more than the main process's host? */
export function spansHosts(vars: MatrixSettings): boolean {
  const main = vars.workers.homeserverHost
  if (!vars.workers.enabled || main === undefined) return false
  return entriesOf(vars.workers).some((e) => {
    const h = placedHost(vars.workers, e)
    return h !== undefined && h !== main
  })
}

/** Room for the offsets of portBase: at most this many instances get automatic ports. */
export const MAX_AUTO_PORT_INSTANCES = 100

export function entriesOf(workers: MatrixSettings['workers']): WorkerEntry[] {
  if (workers.instances) return workers.instances
  const preset = workers.preset ?? 'guide'
  const entries: WorkerEntry[] = PRESETS[preset].entries.map((e) => ({ ...e }))
  if (preset === 'guide') {
    // The guide's ports, still set by workers.federationReader / workers.federationSender.
    entries[0] = { ...entries[0]!, port: workers.federationReader.port, metricsPort: workers.federationReader.metricsPort }
    entries[1] = { ...entries[1]!, metricsPort: workers.federationSender.metricsPort }
  }
  return entries
}

/** The homeserver's workers (none without the workers role). */
export function workerInstances(vars: MatrixSettings): WorkerInstance[] {
  if (!vars.workers.enabled) return []
  const base = vars.workers.portBase
  const main = vars.workers.homeserverHost
  const spans = spansHosts(vars)
  return entriesOf(vars.workers).map((e, i) => {
    const host = main === undefined ? undefined : (placedHost(vars.workers, e) ?? main)
    const address = spans && host !== undefined ? (vars.workers.addresses?.[host] ?? LOOPBACK) : LOOPBACK
    const instance: WorkerInstance = {
      name: e.name,
      kind: e.kind,
      metricsPort: e.metricsPort ?? base + 200 + i,
      address,
      remote: host !== main,
    }
    if (host !== undefined) instance.host = host
    if (servesRequests(e.kind)) instance.port = e.port ?? base + i
    if (writesStreams(e.kind)) instance.replicationPort = e.replicationPort ?? base + 100 + i
    return instance
  })
}

/** The workers of a homeserver that run on one host (vars: the homeserver's, or a worker host's copy of them). */
export function instancesOn(vars: MatrixSettings, hostName: string): WorkerInstance[] {
  const main = vars.workers.homeserverHost
  return workerInstances(vars).filter((w) => (main === undefined ? true : w.host === hostName))
}

/** Instances of a kind, in order. */
export const ofKind = (instances: readonly WorkerInstance[], kind: WorkerKindName) => instances.filter((w) => w.kind === kind)

/**
 * The host whose media store holds the homeserver's media: the media_repository worker's host when the
 * set has one (Synapse's main process then serves no media), else the main process's host. The loader
 * refuses media repositories on several hosts (each would keep its own store).
 */
export function mediaStoreHost(main: { name: string; vars: MatrixSettings }): string {
  return ofKind(workerInstances(main.vars), 'media_repository')[0]?.host ?? main.name
}

/** Ports each instance binds, labelled for messages: http, replication, metrics (when on). */
export function instancePorts(
  w: WorkerInstance,
  metrics: boolean,
): { port: number; label: string; field: 'port' | 'replicationPort' | 'metricsPort' }[] {
  const out: { port: number; label: string; field: 'port' | 'replicationPort' | 'metricsPort' }[] = []
  if (w.port !== undefined) out.push({ port: w.port, label: `worker ${w.name}'s http listener`, field: 'port' })
  if (w.replicationPort !== undefined)
    out.push({ port: w.replicationPort, label: `worker ${w.name}'s replication listener`, field: 'replicationPort' })
  if (metrics) out.push({ port: w.metricsPort, label: `worker ${w.name}'s metrics listener`, field: 'metricsPort' })
  return out
}

export interface WorkerSetIssue {
  /** Index in workers.instances, and the key of that entry the issue is about. */
  index: number
  key: 'name' | 'kind' | 'port' | 'replicationPort' | 'metricsPort'
  message: string
  hint: string
}

/** Rules of an explicit list that the schema cannot see: unique names, single-instance kinds once, listeners that exist. */
export function checkWorkerEntries(entries: readonly WorkerEntry[]): WorkerSetIssue[] {
  const issues: WorkerSetIssue[] = []
  const names = new Map<string, number>()
  const kinds = new Map<WorkerKindName, number>()
  entries.forEach((e, index) => {
    if (RESERVED_WORKER_NAMES.includes(e.name)) {
      issues.push({
        index,
        key: 'name',
        message: `worker name "${e.name}" is what Synapse calls the main process`,
        hint: 'pick another name, e.g. the kind with a number: generic_1',
      })
    }
    const first = names.get(e.name)
    if (first !== undefined)
      issues.push({
        index,
        key: 'name',
        message: `worker name "${e.name}" is used twice (first at entry ${first + 1})`,
        hint: 'give each worker its own name',
      })
    else names.set(e.name, index)
    const kind = KINDS[e.kind]
    const firstOfKind = kinds.get(e.kind)
    if (!kind.many && firstOfKind !== undefined) {
      issues.push({
        index,
        key: 'kind',
        message: `kind ${e.kind} can have one instance only (Synapse allows a single ${kind.streams[0] ? `writer of the ${kind.streams[0]} stream` : `worker for ${kind.duty}`}); entry ${firstOfKind + 1} already is one`,
        hint: 'remove this entry, or pick a kind that can be scaled out (generic, synchrotron, events, receipts, device_lists, federation_sender, pusher, media_repository)',
      })
    }
    if (firstOfKind === undefined) kinds.set(e.kind, index)
    if (e.port !== undefined && !servesRequests(e.kind)) {
      issues.push({
        index,
        key: 'port',
        message: `kind ${e.kind} serves no requests, so it has no http listener for port`,
        hint: 'remove port (metricsPort is its only listener)',
      })
    }
    if (e.replicationPort !== undefined && !writesStreams(e.kind)) {
      issues.push({
        index,
        key: 'replicationPort',
        message: `kind ${e.kind} writes no stream, so it has no replication listener`,
        hint: 'remove replicationPort; only stream writers need one',
      })
    }
  })
  return issues
}
