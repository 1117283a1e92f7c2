/** `provision status`: each Synapse process's health in the guide's terms (read-only). */
import { maskJson } from '../../core/secret.js'
import { openRun } from '../run-context.js'
import { EXIT, UsageError, type Verb } from '../verb.js'
import { readStatus, statusFailed } from './read-status.js'
import { renderStatus } from './render.js'

export const run: Verb = async (input) => {
  const { values, io } = input
  const { inventory, log, connect } = await openRun(input)
  const window = values.window === undefined ? 5 : Number(values.window)
  if (!Number.isFinite(window) || window < 1 || window > 300)
    throw new UsageError(`--window: expected seconds between 1 and 300, got "${values.window}"`)
  const report = await readStatus(inventory.hosts, (host) => connect(host, { sudo: false, echo: false }), Math.round(window))
  log.close()
  io.out(values.json ? maskJson(report, 2) + '\n' : renderStatus(report))
  return statusFailed(report) ? EXIT.hostFailed : EXIT.ok
}
