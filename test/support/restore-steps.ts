import type { RestoreStep } from '../../src/commands/backup/restore-types.js'

/**
 * The steps of a restore from a backup older than the Synapse that serves, in order: the older release installed
 * side by side first, started on the restored data, then the inventory's upgrade. The planner's unit test and the
 * e2e on real hosts expect the same list.
 */
export const OLDER_BACKUP_RESTORE_STEPS: RestoreStep['action'][] = [
  'install-old',
  'stop',
  'signing-key',
  'secrets',
  'database',
  'media',
  'start-old',
  'apply',
]
