/** `provision adopt`: take over a Synapse built by hand, then run the host's tasks (src/commands/adopt/hook.ts). */
import { openRun } from '../run-context.js'
import { runTasks } from '../run-tasks.js'
import { splitList, UsageError, type Verb } from '../verb.js'
import { adoptionHook } from './hook.js'

export const run: Verb = async (input) => {
  const { values } = input
  const ctx = await openRun(input)
  const names = splitList(values.limit)
  const unknown = names.filter((n) => !ctx.inventory.hosts.some((h) => h.name === n))
  if (names.length === 0 || unknown.length)
    throw new UsageError(
      `adopt needs --limit with the inventory name of each host to take over${unknown.length ? ` (not a host: ${unknown.join(', ')})` : ''}: adopt hosts one by one, knowingly`,
    )
  if (values.tasks) throw new UsageError('adopt runs every task of the host: --tasks does not apply')
  return runTasks(input, ctx, { mode: values['dry-run'] ? 'dry-run' : 'apply', adoption: adoptionHook })
}
