/**
 * Worker kinds: what each kind of Synapse worker is, in one registry (docs/workers.md of the
 * installed release). The inventory schema, the worker files, the shared configuration, the Apache
 * routes, the firewall and monitoring all read this table; adding a kind touches this file.
 *
 * Every kind runs `synapse.app.generic_worker` (the historical apps are "equivalent" to it, and
 * the dedicated apps are deprecated); what a worker does comes from its listeners and from the
 * shared configuration naming it (`federation_sender_instances`, `stream_writers`, ...).
 */
import type { GenericRoutes, Stream } from './routes.js'

/** Shared-configuration keys that name the workers doing a duty. */
export type Duty =
  | 'federation_sender_instances'
  | 'pusher_instances'
  | 'notify_appservices_from_worker'
  | 'update_user_directory_from_worker'
  | 'run_background_tasks_on'
  | 'media_instance_running_background_jobs'

/** A kind as written in KINDS (its name is its key there). */
export interface KindSpec {
  /** One line for `provision schema` and the README. */
  summary: string
  /** Public requests it serves through Apache: which generic route groups, or the media routes. */
  serves: readonly (keyof GenericRoutes | 'media')[]
  /** Streams it writes: needs a replication listener and an instance_map entry. */
  streams: readonly Stream[]
  duty?: Duty
  /** Several instances share the work (a pool, or a sharded stream/duty). */
  many: boolean
  /**
   * Memory of an idle instance of this kind, MiB: systemd's MemoryCurrent of each worker unit of the
   * one-of-each set on 1.163.2 was 86-88 MiB (measured on a live one-of-each host, right after start), rounded up.
   */
  memoryMiB: number
}

const generic = (summary: string, serves: KindSpec['serves']): KindSpec => ({ summary, serves, streams: [], many: true, memoryMiB: 90 })
const writer = (stream: Stream, many: boolean, summary: string): KindSpec => ({
  summary: `stream writer for ${stream}: ${summary}`,
  serves: [],
  streams: [stream],
  many,
  memoryMiB: 90,
})

/** Every worker kind, in the order the schema lists them: adding a kind is one entry here. */
const SPECS = {
  generic: generic(
    'generic_worker serving every routable client and federation request (sync, client reads, event creation, login, inbound federation)',
    ['sync', 'client', 'eventSending', 'userDirectory', 'federation'],
  ),
  federation_reader: generic('generic_worker serving inbound federation requests and transactions', ['federation']),
  client_reader: generic('generic_worker serving client reads, encryption and login requests', ['client', 'userDirectory']),
  synchrotron: generic('generic_worker serving /sync, /events and /initialSync (the long-polls)', ['sync']),
  event_creator: generic('generic_worker serving event sending (send, state, redact, join, leave, profile)', ['eventSending']),
  federation_sender: {
    summary: 'sends outbound federation traffic (federation_sender_instances); changing the set restarts every process',
    serves: [],
    streams: [],
    duty: 'federation_sender_instances',
    many: true,
    memoryMiB: 90,
  },
  pusher: {
    summary: 'sends push notifications (pusher_instances)',
    serves: [],
    streams: [],
    duty: 'pusher_instances',
    many: true,
    memoryMiB: 90,
  },
  media_repository: {
    summary: 'serves and stores media (the main process stops serving media); writes quarantined_media_changes',
    serves: ['media'],
    streams: ['quarantined_media_changes'],
    duty: 'media_instance_running_background_jobs',
    many: true,
    memoryMiB: 90,
  },
  appservice: {
    summary: 'notifies application services (notify_appservices_from_worker)',
    serves: [],
    streams: [],
    duty: 'notify_appservices_from_worker',
    many: false,
    memoryMiB: 90,
  },
  user_dir: {
    summary: 'updates the user directory and serves its search (update_user_directory_from_worker)',
    serves: ['userDirectory'],
    streams: [],
    duty: 'update_user_directory_from_worker',
    many: false,
    memoryMiB: 90,
  },
  background: {
    summary: 'runs background tasks (run_background_tasks_on)',
    serves: [],
    streams: [],
    duty: 'run_background_tasks_on',
    many: false,
    memoryMiB: 90,
  },
  events: writer('events', true, 'event persister, sharded by room; changing the set restarts every process'),
  typing: writer('typing', false, 'typing notifications'),
  to_device: writer('to_device', false, 'to-device messages'),
  account_data: writer('account_data', false, 'account data and tags'),
  receipts: writer('receipts', true, 'read receipts and read markers'),
  presence: writer('presence', false, 'presence'),
  push_rules: writer('push_rules', false, 'push rules'),
  device_lists: writer('device_lists', true, 'device lists and key uploads'),
  thread_subscriptions: writer('thread_subscriptions', true, 'thread subscriptions (experimental MSC4306, no documented routes)'),
} satisfies Record<string, KindSpec>

export type WorkerKindName = keyof typeof SPECS
export interface WorkerKind extends KindSpec {
  name: WorkerKindName
}
export const WORKER_KINDS = Object.keys(SPECS) as [WorkerKindName, ...WorkerKindName[]]
export const KINDS = Object.fromEntries(WORKER_KINDS.map((name) => [name, { name, ...SPECS[name] }])) as Readonly<
  Record<WorkerKindName, WorkerKind>
>

/** Kinds whose processes have an http listener Apache sends requests to. */
export const servesRequests = (kind: WorkerKindName) => KINDS[kind].serves.length > 0 || routedStream(kind)

/** systemd unit instance of a worker: matrix-synapse-worker@federation_reader.service */
export const workerUnitName = (name: string) => `matrix-synapse-worker@${name}.service`

/** Names Synapse gives the main process: no worker may take them. */
export const RESERVED_WORKER_NAMES = ['main', 'master']

/** Needs a replication listener: writes a stream Synapse must reach it for. */
export const writesStreams = (kind: WorkerKindName) => KINDS[kind].streams.length > 0

/** A stream writer kind with documented routes (typing, to_device, ...): it gets a client listener. */
export function routedStream(kind: WorkerKindName): boolean {
  return KINDS[kind].streams.some((s) => s !== 'events' && s !== 'thread_subscriptions')
}

/** Main process memory when idle, MiB (measured alongside the kinds; its caches grow on top, see cacheFactor). */
export const MAIN_PROCESS_MEMORY_MIB = 100
