/** `provision move --abort`: OLD back to service before NEW has served. */
import { sh } from '../../core/shell.js'
import type { Connection } from '../../ssh/connection.js'
import { onHosts, type NewLayout } from './layout.js'
import { must, MoveRefused, unmaskAndStart, type MovedAway } from './old-host.js'
import { MOVE_RECORD, type MoveOptions, type MoveReport, type NewRecord } from './report.js'
export async function abort(
  o: MoveOptions,
  report: MoveReport,
  oldConn: Connection,
  conns: ReadonlyMap<string, Connection>,
  layout: NewLayout,
  movedAway: MovedAway | undefined,
  newRecord: NewRecord | undefined,
): Promise<MoveReport> {
  if (newRecord && ['serving', 'done'].includes(newRecord.phase)) {
    throw new MoveRefused(
      `${o.new.name} has served the homeserver since ${newRecord.at}: returning to ${o.old.name} would lose what was written there since. Move back with provision move --from ${o.new.name} --to ${o.old.name} instead`,
    )
  }
  if (!movedAway) {
    report.status = 'unchanged'
    report.next = [`${o.old.name} was never stopped by a move: nothing to abort`]
    return report
  }
  report.steps = [
    {
      name: 'stop-new',
      hosts: layout.synapseHosts,
      summary: `stop Synapse on ${onHosts(layout.synapseHosts)} (it must not serve with the same key)`,
      done: false,
    },
    {
      name: 'start-old',
      hosts: [],
      summary: `unmask ${movedAway.masked.join(', ')} on ${o.old.name}, put the unit files back, start main then the rest`,
      done: false,
    },
  ]
  if (o.dryRun) {
    report.status = 'planned'
    return report
  }
  await Promise.all(
    layout.synapseHosts.map((h) =>
      must(conns.get(h)!, sh`systemctl stop ${layout.units[h]!} 2>/dev/null; true`, `stopping Synapse on ${h}`),
    ),
  )
  report.steps[0]!.done = true
  await unmaskAndStart(oldConn, movedAway)
  report.steps[1]!.done = true
  await must(
    conns.get(layout.main)!,
    sh`cat > ${MOVE_RECORD}`,
    'recording the abort',
    JSON.stringify({ from: o.old.name, phase: 'aborted', at: new Date().toISOString() }) + '\n',
  )
  report.status = 'aborted'
  report.next = [
    `${o.old.name} serves again; ${o.new.name} keeps a partial copy (its database ${o.new.vars.postgres.database}_restoring may exist): a later move starts over`,
  ]
  return report
}
