import type { Task } from '../src/engine/task.js'
import type { Role } from '../src/inventory/types.js'

/**
 * The task registry, in run order (the guide's order). Each task is loaded only when a host of the
 * run has its role. Adding a task: one folder, one line here.
 */
export const TASKS: readonly { name: Role; load: () => Promise<Task> }[] = [
  { name: 'apt-keyring', load: async () => (await import('./apt-keyring/index.js')).aptKeyringTask },
  { name: 'postgres', load: async () => (await import('./postgres/index.js')).postgresTask },
  { name: 'redis', load: async () => (await import('./redis/index.js')).redisTask },
  { name: 'synapse', load: async () => (await import('./synapse/index.js')).synapseTask },
  { name: 'workers', load: async () => (await import('./workers/index.js')).workersTask },
  { name: 'apache', load: async () => (await import('./apache/index.js')).apacheTask },
  { name: 'mas', load: async () => (await import('./mas/index.js')).masTask },
  { name: 'element', load: async () => (await import('./element/index.js')).elementTask },
  { name: 'monitoring', load: async () => (await import('./monitoring/index.js')).monitoringTask },
  { name: 'backup', load: async () => (await import('./backup/index.js')).backupTask },
]

/** The tasks of these roles (all when none are given), in run order. */
export function loadTasks(roles?: readonly Role[]): Promise<Task[]> {
  return Promise.all(TASKS.filter((t) => roles === undefined || roles.includes(t.name)).map((t) => t.load()))
}
