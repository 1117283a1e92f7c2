/** `provision [apply]`, `provision check` and `--dry-run`: the inventory's tasks on its hosts. */
import { openRun } from '../run-context.js'
import { runTasks } from '../run-tasks.js'
import type { Verb } from '../verb.js'

export const run: Verb = async (input) => {
  const mode = input.command === 'check' ? 'check' : input.values['dry-run'] ? 'dry-run' : 'apply'
  return runTasks(input, await openRun(input), { mode })
}
