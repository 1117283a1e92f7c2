/** The keys of 40-workers.yaml that follow the worker set: where main is, who writes which stream, who does which duty. */
import type { MatrixSettings } from '../../../src/inventory/types.js'
import { workerInstances } from '../../../src/inventory/workers.js'
import { routeTable } from '../../../src/synapse/routes.js'
import { KINDS, type Duty } from '../../../src/synapse/worker-kinds.js'
import { reachAddress, streamWriters } from '../../../src/topology/instances.js'

/**
 * The keys of 40-workers.yaml that follow the worker set. Each duty is named only when a worker
 * takes it (absent means the main process does it): instance_map lists main and every stream
 * writer (their replication listeners), stream_writers the streams moved off main,
 * federation_sender_instances / pusher_instances the senders, and the media repository is switched
 * off for every process but the media workers (their own files switch it back on).
 */
export function sharedWorkerConfig(vars: MatrixSettings, replicationSecret: string, synapseVersion?: string): Record<string, unknown> {
  const instances = workerInstances(vars)
  const table = routeTable(synapseVersion ?? vars.synapse.version)
  const instanceMap: Record<string, unknown> = { main: { host: reachAddress(vars), port: vars.workers.replicationPort } }
  for (const w of instances) if (w.replicationPort !== undefined) instanceMap[w.name] = { host: w.address, port: w.replicationPort }
  const names = (duty: Duty) => instances.filter((w) => KINDS[w.kind].duty === duty).map((w) => w.name)
  const config: Record<string, unknown> = {
    // Since 1.88 workers find the main process here (worker_replication_host/_http_port are gone).
    instance_map: instanceMap,
    worker_replication_secret: replicationSecret,
  }
  // Outgoing federation leaves the main process (no send_federation: this replaces it).
  const senders = names('federation_sender_instances')
  if (senders.length > 0) config.federation_sender_instances = senders
  const writers = streamWriters(instances, table.knownStreams)
  if (Object.keys(writers).length > 0) config.stream_writers = writers
  const pushers = names('pusher_instances')
  if (pushers.length > 0) config.pusher_instances = pushers
  for (const duty of [
    'notify_appservices_from_worker',
    'update_user_directory_from_worker',
    'run_background_tasks_on',
    'media_instance_running_background_jobs',
  ] as const) {
    const [first] = names(duty)
    if (first !== undefined) config[duty] = first
  }
  if (names('media_instance_running_background_jobs').length > 0) config.enable_media_repo = false
  return config
}
