import { unitState } from '../facts/systemd.js'
import { ensureSuccess } from '../ssh/connection.js'
import { joinShell, sh, type ShellCommand } from '../ssh/shell.js'
import type { Resource, RestartTarget } from './resource.js'

export interface ServiceSpec {
  unit: string
  enabled?: boolean
  running?: boolean
  /** Path prefixes ending in '/' or exact paths, and `pkg:<name>`: a change to any restarts the unit. */
  watch?: string[]
  /** Reload (SIGHUP/ExecReload) instead of restart when watched things change. */
  reload?: boolean
  /** Command that must succeed before a restart (e.g. `apache2ctl configtest`). */
  validate?: ShellCommand
}

export type ServiceResource = Resource & { restartTarget: RestartTarget }

/** A systemd unit enabled and running; changes to what it watches restart it (no handlers to write). */
export function service(spec: ServiceSpec): ServiceResource {
  const enabled = spec.enabled ?? true
  const running = spec.running ?? true
  const fact = unitState(spec.unit)
  const id = `service:${spec.unit}`
  return {
    id,
    restartTarget: { unit: spec.unit, watch: spec.watch ?? [], reload: spec.reload ?? false, validate: spec.validate },
    facts: () => [fact],
    async plan(ctx) {
      const s = ctx.facts.get(fact)
      if (!s.loaded) {
        const source = ctx.predicted.unitSource(spec.unit)
        if (!source) throw new Error(`unit ${spec.unit} does not exist on the host and nothing in this plan provides it`)
        return {
          resource: id,
          kind: 'service',
          action: 'start',
          summary: `${[enabled && 'enable', running && 'start'].filter(Boolean).join(' and ')} ${spec.unit} (unit comes with ${source}, planned above)`,
          touches: [],
          backupPaths: [],
          reach: 'anything',
          // A unit a package brings is started by the package's install, before our files change it:
          // then the restart stays due, as apply will find. One from our own unit file starts on our files.
          ...(running && !source.startsWith('package') ? { starts: spec.unit } : {}),
        }
      }
      const needEnable = enabled && !s.enabled
      const needStart = running && !s.active
      if (!needEnable && !needStart) return null
      return {
        resource: id,
        kind: 'service',
        action: needStart ? 'start' : 'enable',
        summary: `${[needEnable && 'enable', needStart && `start (now ${s.activeState})`].filter(Boolean).join(' and ')} ${spec.unit}`,
        touches: [],
        backupPaths: [],
        reach: 'anything',
        ...(needStart ? { starts: spec.unit } : {}),
      }
    },
    async apply(_change, ctx) {
      const u = spec.unit
      const cmd = joinShell([...(enabled ? [sh`systemctl enable ${u}`] : []), ...(running ? [sh`systemctl start ${u}`] : [])], ' && ')
      const r = await ctx.conn.run(cmd, { timeoutMs: 300_000 })
      if (r.code !== 0) {
        const why = await ctx.conn.run(sh`systemctl status --no-pager -n 15 ${u}`)
        r.stderr += `\n${why.stdout}`
      }
      ensureSuccess(ctx.conn.host, r, `starting ${spec.unit}`)
    },
  }
}

export function isServiceResource(r: Resource): r is ServiceResource {
  return 'restartTarget' in r
}
