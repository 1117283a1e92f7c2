import type { Task } from '../src/engine/task.js'
import { apacheTask } from './apache/index.js'
import { backupTask } from './backup/index.js'
import { aptKeyringTask } from './apt-keyring/index.js'
import { elementTask } from './element/index.js'
import { monitoringTask } from './monitoring/index.js'
import { postgresTask } from './postgres/index.js'
import { redisTask } from './redis/index.js'
import { synapseTask } from './synapse/index.js'
import { workersTask } from './workers/index.js'

/** The task registry, in run order (the guide's order). Adding a task: one folder, one line here. */
export const TASKS: Task[] = [aptKeyringTask, postgresTask, redisTask, synapseTask, workersTask, apacheTask, elementTask, monitoringTask, backupTask]
