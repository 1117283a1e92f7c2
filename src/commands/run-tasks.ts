/** Plan, apply or check the tasks of the run's hosts, with progress, the run log and the report: apply, check, adopt. */
import type { AdoptionHook, Mode } from '../engine/host-run.js'
import type { RunReport } from '../engine/report-types.js'
import { runInventory } from '../engine/run.js'
import { createProgress } from '../report/progress.js'
import { renderJson, renderReport } from '../report/text.js'
import { loadTasks } from '../../tasks/index.js'
import type { RunContext } from './run-context.js'
import { EXIT, type VerbInput } from './verb.js'

export async function runTasks(input: VerbInput, run: RunContext, options: { mode: Mode; adoption?: AdoptionHook }): Promise<number> {
  const { values, io } = input
  const { inventory, log, mode } = { ...run, ...options }
  const tasks = await loadTasks(run.roles)
  log.event({
    msg: 'run started',
    mode,
    inventory: inventory.file,
    hosts: inventory.hosts.map((h) => h.name),
    tasks: tasks.map((t) => t.name),
  })
  const progress = await createProgress(
    inventory.hosts.map((h) => h.name),
    { verbose: values.verbose ?? false, quiet: values.json ?? false, write: input.processStreams ? undefined : io.err },
  )
  const report: RunReport = await runInventory(inventory, {
    mode,
    tasks,
    parallel: input.parallel,
    waitS: input.waitS,
    connect: (host) => run.connect(host),
    onEvent: (e) => {
      progress.event(e)
      log.event({ msg: e.message, host: e.host, task: e.task })
    },
    onHostDone: (h) => progress.hostDone(h.host, h.status === 'failed'),
    ...(options.adoption ? { adoption: options.adoption } : {}),
  })
  await progress.done()
  log.event({
    msg: 'run finished',
    totals: report.totals,
    durationMs: report.durationMs,
    hosts: report.hosts.map((h) => ({ host: h.host, status: h.status, error: h.error })),
  })
  log.close()
  if (values.json) io.out(renderJson(report))
  else
    io.out(
      renderReport(report, {
        color: process.stdout.isTTY === true && !process.env.NO_COLOR,
        diffs: values.diff ?? values.verbose ?? false,
      }),
    )
  if (report.totals.failedHosts > 0) return EXIT.hostFailed
  if (mode === 'dry-run' && values['exit-code'] && report.totals.add + report.totals.change + report.totals.restart > 0)
    return EXIT.changesPending
  return EXIT.ok
}
