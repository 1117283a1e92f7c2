/** `provision move --inventory FILE --from OLD --to NEW [--dry-run] [--json] [--abort]`. */
import { readFile } from 'node:fs/promises'
import { parseDocument } from 'yaml'
import { runInventory } from '../../engine/run.js'
import { loadInventoryFromString } from '../../inventory/load.js'
import { loadTasks } from '../../../tasks/index.js'
import { openRun } from '../run-context.js'
import { EXIT, UsageError, type Verb } from '../verb.js'
import { move } from './procedure.js'
import type { MoveReport } from './report.js'

export const run: Verb = async (input) => {
  const { values, io } = input
  if (!values.from || !values.to) throw new UsageError('move needs --from OLD and --to NEW (host names of the inventory)')
  const ctx = await openRun({ ...input, values: { ...values, limit: undefined } })
  try {
    const host = (name: string, flag: string) => {
      const h = ctx.loaded.hosts.find((x) => x.name === name)
      if (!h) throw new UsageError(`${flag} ${name}: not a host of ${ctx.loaded.file} (${ctx.loaded.hosts.map((x) => x.name).join(', ')})`)
      return h
    }
    const oldHost = host(values.from, '--from')
    const newHost = host(values.to, '--to')
    if (oldHost.name === newHost.name) throw new UsageError('--from and --to name the same host')
    if (!newHost.roles.includes('synapse')) throw new UsageError(`--to ${newHost.name}: the host has no synapse role in ${ctx.loaded.file}`)
    // NEW is provisioned as if OLD were not in the inventory: OLD is nobody's database, Redis or peer.
    const doc = parseDocument(await readFile(ctx.loaded.file, 'utf8'))
    doc.deleteIn(['hosts', oldHost.name])
    const newInventory = await loadInventoryFromString(doc.toString(), ctx.loaded.file, io.env)
    const newSpec = newInventory.hosts.find((x) => x.name === newHost.name)!
    const say = (line: string) => void (values.json ? undefined : io.err(line + '\n'))
    ctx.log.event({
      msg: 'move started',
      from: oldHost.name,
      to: newHost.name,
      abort: values.abort ?? false,
      dryRun: values['dry-run'] ?? false,
    })
    const report = await move({
      old: oldHost,
      new: newSpec,
      inventory: newInventory,
      dryRun: values['dry-run'] ?? false,
      abort: values.abort ?? false,
      connect: (h) => ctx.connect(h),
      say,
      applyInventory: async (hosts) =>
        runInventory(
          { ...newInventory, hosts },
          {
            mode: 'apply',
            tasks: await loadTasks([...new Set(hosts.flatMap((h) => h.roles))]),
            parallel: hosts.length,
            lockHeld: true,
            connect: (h) => ctx.connect(h),
            onEvent: (e) => {
              if (values.verbose) say(`[${e.host}] ${e.task ? `${e.task}: ` : ''}${e.message}`)
              ctx.log.event({ msg: e.message, host: e.host, task: e.task })
            },
          },
        ),
    })
    ctx.log.event({ msg: 'move finished', status: report.status, error: report.error, downtimeMs: report.downtimeMs })
    io.out(values.json ? JSON.stringify(report, null, 2) + '\n' : renderMove(report))
    return report.status === 'refused' ? EXIT.usage : report.status === 'failed' ? EXIT.hostFailed : EXIT.ok
  } finally {
    ctx.log.close()
  }
}

const s = (ms: number | undefined) => (ms === undefined ? '?' : `${(ms / 1000).toFixed(1)} s`)
const rate = (bytes: number | undefined, ms: number) =>
  bytes === undefined
    ? ''
    : `, ${(bytes / 2 ** 20).toFixed(1)} MiB${ms > 0 ? ` at ${(bytes / 2 ** 20 / (ms / 1000)).toFixed(1)} MiB/s` : ''}`

export function renderMove(r: MoveReport): string {
  const lines = [`move ${r.from} -> ${r.to}: ${r.status}${r.error ? `: ${r.error}` : ''}`]
  if (r.old)
    lines.push(
      `  ${r.from}: Synapse ${r.old.synapse}, PostgreSQL ${r.old.postgres}, schema ${r.old.schema ?? '?'}, database ${(r.old.databaseBytes / 2 ** 20).toFixed(0)} MiB, media ${(r.old.mediaBytes / 2 ** 20).toFixed(0)} MiB, key ${r.old.signingKey}`,
    )
  if (r.layout && r.layout.hosts.length > 1)
    lines.push(
      `  ${r.to} spread: main ${r.layout.main}, database ${r.layout.database}, media ${r.layout.media}, workers ${Object.entries(
        r.layout.units,
      )
        .map(([h, u]) => `${h} (${u.length} units)`)
        .join(', ')}`,
    )
  if (r.preflight.length) lines.push('preflight:', ...r.preflight.map((c) => `  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`))
  if (r.steps.length)
    lines.push(
      r.status === 'planned' ? 'plan:' : 'steps:',
      ...r.steps.map(
        (st) =>
          `  ${st.done ? (st.durationMs === undefined ? '=' : '+') : r.status === 'planned' ? '~' : ' '} ${st.hosts.length ? st.hosts.join(', ') : r.from}: ${st.summary}${st.durationMs !== undefined ? ` (${s(st.durationMs)}${rate(st.bytes, st.durationMs)})` : ''}`,
      ),
    )
  if (r.status === 'planned')
    lines.push(
      "Dry run: nothing was changed. What cannot be known yet: the target code's schema (checked after NEW is provisioned), the media written between the two copies, the downtime.",
    )
  if (r.downtimeMs !== undefined) lines.push(`downtime (writes stopped on ${r.from} -> ${r.to} answered /health): ${s(r.downtimeMs)}`)
  if (r.backgroundUpdatesMs !== undefined) lines.push(`background updates done ${s(r.backgroundUpdatesMs)} after the start`)
  if (r.status === 'unchanged') lines.push('nothing to do: the move is complete')
  if (r.next.length) lines.push('next:', ...r.next.map((n) => `  - ${n}`))
  return lines.join('\n') + '\n'
}
