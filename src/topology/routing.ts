/**
 * Which process serves which requests, generated from the worker set and the route table of the
 * Synapse release: an ordered list of route groups, each sent to one worker or a pool. The reverse
 * proxy takes the first group whose route matches, then the main process gets the rest. Order:
 * stream writers (their routes overlap the generic ones: device lists, key uploads), media, the
 * user directory, then the generic pools from the most specialized kind that serves each group.
 */
import { KINDS, type WorkerKindName } from '../synapse/worker-kinds.js'
import type { WorkerInstance } from '../inventory/workers.js'
import type { GenericRoutes, RouteTable, Stream } from '../synapse/routes.js'

export interface RouteGroup {
  /** What the group is, for the comment above it ("Federation reader worker"). */
  title: string
  /** Pool name (balancer://<pool>) when it has more than one member. */
  pool: string
  routes: readonly string[]
  /** The members' public http listeners: loopback, or a worker host's private address. */
  members: readonly { name: string; port: number; address: string }[]
  /** Long-polls (/sync and its kin): the proxy caps their connections (tasks/apache/mpm.ts). */
  longPoll?: boolean
}

/** Each generic route group, and the kinds that serve it, most specialized first. */
const GENERIC_GROUPS: readonly { group: keyof GenericRoutes; kinds: readonly WorkerKindName[]; title: Record<string, string> }[] = [
  { group: 'sync', kinds: ['synchrotron', 'generic'], title: { synchrotron: 'Sync (synchrotron)', generic: 'Sync (generic)' } },
  {
    group: 'eventSending',
    kinds: ['event_creator', 'generic'],
    title: { event_creator: 'Event creator', generic: 'Event sending (generic)' },
  },
  {
    group: 'userDirectory',
    kinds: ['user_dir', 'client_reader', 'generic'],
    title: {
      user_dir: 'User directory',
      client_reader: 'User directory search (client reader)',
      generic: 'User directory search (generic)',
    },
  },
  { group: 'client', kinds: ['client_reader', 'generic'], title: { client_reader: 'Client reader', generic: 'Client requests (generic)' } },
  {
    group: 'federation',
    kinds: ['federation_reader', 'generic'],
    title: { federation_reader: 'Federation reader', generic: 'Federation (generic)' },
  },
]

const STREAM_TITLES: Partial<Record<Stream, string>> = {
  typing: 'Typing stream writer',
  to_device: 'To-device stream writer',
  account_data: 'Account data stream writer',
  receipts: 'Receipts stream writer',
  presence: 'Presence stream writer',
  push_rules: 'Push rules stream writer',
  device_lists: 'Device lists stream writer',
}

// Apache runs beside main: a worker there listens on loopback, one on another host at its private address.
const members = (ws: readonly WorkerInstance[]) =>
  ws.filter((w) => w.port !== undefined).map((w) => ({ name: w.name, port: w.port!, address: w.remote ? w.address : '127.0.0.1' }))
const plural = (title: string, n: number) => (n > 1 ? `${title}s` : title)

export function routingPlan(instances: readonly WorkerInstance[], table: RouteTable): RouteGroup[] {
  const groups: RouteGroup[] = []
  for (const [stream, title] of Object.entries(STREAM_TITLES) as [Stream, string][]) {
    const routes = table.streams[stream]
    const writers = members(instances.filter((w) => KINDS[w.kind].streams.includes(stream) && w.kind !== 'media_repository'))
    if (routes && writers.length > 0)
      groups.push({ title: `${plural(title, writers.length)} ${stream}`, pool: stream, routes, members: writers })
  }
  const media = members(instances.filter((w) => w.kind === 'media_repository'))
  if (media.length > 0) {
    const quarantine = table.streams.quarantined_media_changes ?? []
    const routes = [...table.media, ...quarantine.filter((r) => !table.media.includes(r))]
    groups.push({ title: plural('Media repository worker', media.length), pool: 'media_repository', routes, members: media })
  }
  for (const g of GENERIC_GROUPS) {
    const kind = g.kinds.find((k) => instances.some((w) => w.kind === k && w.port !== undefined))
    if (!kind) continue
    const pool = members(instances.filter((w) => w.kind === kind))
    groups.push({
      title: plural(`${g.title[kind]!} worker`, pool.length),
      pool: kind,
      routes: table.generic[g.group],
      members: pool,
      ...(g.group === 'sync' ? { longPoll: true } : {}),
    })
  }
  return groups
}

/** Kinds that need a balancer module: a pool of more than one member. */
export const needsBalancer = (groups: readonly RouteGroup[]) => groups.some((g) => g.members.length > 1)
