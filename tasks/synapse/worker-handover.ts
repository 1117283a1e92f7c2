/**
 * A changed shared worker configuration (conf.d/40-workers.yaml: stream writers, instance_map,
 * federation senders, ...) is read by every process at start. Synapse's docs: such a change restarts
 * all of them. Main restarts at the end of the synapse task, the workers at the end of the workers task
 * (on a worker host, later still); in between the old workers would run the old map against a main and
 * new writers on the new one (their replication handlers log ERRORs). So the running workers of the
 * homeserver, on every host, are stopped before the file changes; the workers tasks start them again.
 */
import { createHash } from 'node:crypto'
import { fileState, type FileState } from '../../src/facts/files.js'
import { unitState } from '../../src/facts/systemd.js'
import type { Resource } from '../../src/resources/resource.js'
import type { Connection } from '../../src/ssh/connection.js'
import { sh } from '../../src/core/shell.js'

/** Stop those of `units` that run (a worker host's units may not exist yet: a new placement). */
export async function stopRunning(conn: Connection, units: readonly string[], what: string): Promise<void> {
  if (units.length === 0) return
  const states = (await conn.run(sh`systemctl is-active ${units}`, { allowFailure: true })).stdout.trim().split('\n')
  const running = units.filter((_u, i) => states[i] === 'active' || states[i] === 'activating' || states[i] === 'reloading')
  if (running.length) await conn.run(sh`systemctl stop ${running}`, { timeoutMs: 300_000, what })
}

export function stopWorkersBeforeSharedChange(spec: {
  path: string
  content: string
  localUnits: string[]
  remote: { host: string; units: string[] }[]
}): Resource {
  const file = fileState(spec.path)
  const units = spec.localUnits.map(unitState)
  const sha = createHash('sha256').update(spec.content).digest('hex')
  const id = `worker-handover:${spec.path}`
  return {
    id,
    facts: () => [file, ...units],
    plan(ctx) {
      const s: FileState = ctx.facts.get(file)
      // A new file: no worker read an old one. Unchanged: nothing to hand over.
      if (!s.exists || s.sha256 === sha) return null
      const running = spec.localUnits.filter((_u, i) => ctx.facts.get(units[i]!).active)
      const remote = spec.remote.filter((r) => r.units.length > 0)
      if (running.length === 0 && remote.length === 0) return null
      // Later resources plan against stopped workers (their services start them), as apply finds them.
      spec.localUnits.forEach((u, i) => {
        if (running.includes(u))
          ctx.predicted.factsAfter.set(units[i]!.id, { ...ctx.facts.get(units[i]!), active: false, activeState: 'inactive' })
      })
      const where = [...(running.length ? [`${running.length} here`] : []), ...remote.map((r) => `${r.units.length} on ${r.host}`)].join(
        ', ',
      )
      return {
        resource: id,
        kind: 'command',
        action: 'update',
        summary: `stop the workers (${where}) before ${spec.path} changes: every process reads it at start; main restarts first, the workers tasks start them`,
        touches: [],
        backupPaths: [],
        reach: 'anything',
        steps: [
          ...running.map((u) => ({ kind: 'stop', target: u, summary: `stop ${u}` })),
          ...remote.flatMap((r) => r.units.map((u) => ({ kind: 'stop', target: u, host: r.host, summary: `stop ${u} on ${r.host}` }))),
        ],
      }
    },
    async apply(change, ctx) {
      const local = (change.steps ?? []).filter((x) => x.host === undefined).map((x) => x.target)
      if (local.length) await ctx.conn.run(sh`systemctl stop ${local}`, { timeoutMs: 300_000 })
      for (const r of spec.remote) {
        const stops = (change.steps ?? []).filter((x) => x.host === r.host).map((x) => x.target)
        if (!stops.length) continue
        // A worker host left out of the run (--limit) keeps its workers; its next run restarts them.
        const other = await ctx.peer?.(r.host).catch(() => undefined)
        if (other) await stopRunning(other, stops, `stopping the workers on ${r.host}`)
      }
    },
  }
}
