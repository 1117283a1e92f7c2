import { unitState } from '../facts/systemd.js'
import { RemoteCommandError, type CommandResult } from '../ssh/connection.js'
import { joinShell, sh, type ShellCommand } from '../core/shell.js'
import { definePlanPayload, type ApplyTogether, type Change, type Resource, type RestartTarget } from './resource.js'

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
  /** See RestartTarget.generation: a reload is done once this prints a new value. */
  generation?: ShellCommand
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
    restartTarget: {
      unit: spec.unit,
      watch: spec.watch ?? [],
      reload: spec.reload ?? false,
      validate: spec.validate,
      generation: spec.generation,
    },
    facts: () => [fact],
    plan(ctx) {
      const s = ctx.facts.get(fact)
      if (!s.loaded) {
        const source = ctx.predicted.unitSource(spec.unit)
        if (!source) throw new Error(`unit ${spec.unit} does not exist on the host and nothing in this plan provides it`)
        return servicePlan.carry(
          {
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
          },
          // Not known to systemd yet: enabled as plain systemctl would (see enableCommand).
          { unit: spec.unit, enable: enabled, start: running, native: false },
        )
      }
      const needEnable = enabled && !s.enabled
      const needStart = running && !s.active
      if (!needEnable && !needStart) return null
      return servicePlan.carry(
        {
          resource: id,
          kind: 'service',
          action: needStart ? 'start' : 'enable',
          summary: `${[needEnable && 'enable', needStart && `start (now ${s.activeState})`].filter(Boolean).join(' and ')} ${spec.unit}`,
          touches: [],
          backupPaths: [],
          reach: 'anything',
          ...(needStart ? { starts: spec.unit } : {}),
        },
        // What the summary says, no more: an enabled unit is not enabled again, a running one not started.
        { unit: spec.unit, enable: needEnable, start: needStart, native: s.unitFileState === 'disabled' },
      )
    },
    async apply(change, ctx) {
      const { unit } = servicePlan.of(change)
      const failed = await startTogether.apply([change], ctx)
      if (failed.size) throw new Error(`${ctx.conn.host}: starting ${unit} failed: ${[...failed.values()][0]}`)
    },
    together: startTogether,
  }
}

/** What a planned service change does, carried on the change (its summary says it in words; this says it to `startTogether`). */
export interface ServicePlan {
  unit: string
  enable: boolean
  start: boolean
  /** systemd reported the unit file state `disabled`: the unit has a unit file of its own (not a SysV script's). */
  native: boolean
}
export const servicePlan = definePlanPayload<ServicePlan>('systemd-service', 'service plan')

/**
 * `systemctl enable` of the units. For a unit with its own unit file, plain systemctl also syncs the /etc/rc?.d
 * links of a same-named /etc/init.d script (systemd-sysv-install: update-rc.d in perl, insserv; ~0.3 s of host
 * CPU and ~35 processes for cron), links that nothing on a systemd host reads: the sysv generator skips a script
 * that has a unit, and invoke-rc.d asks `systemctl is-enabled` first. SYSTEMCTL_SKIP_SYSV=1 leaves them as they
 * are. A unit that is only a SysV script (state `generated`) or not known at plan time goes through them, as
 * systemctl would. The daemon-reload that enable does is kept: after `--no-reload` systemd 255+ reports every
 * unit as changed on disk (NeedDaemonReload=yes) until the next reload.
 */
function enableCommand(units: readonly { unit: string; native: boolean }[]): ShellCommand {
  const native = units.filter((u) => u.native).map((u) => u.unit)
  const other = units.filter((u) => !u.native).map((u) => u.unit)
  return joinShell(
    [
      ...(native.length ? [sh`SYSTEMCTL_SKIP_SYSV=1 systemctl enable ${native}`] : []),
      ...(other.length ? [sh`systemctl enable ${other}`] : []),
    ],
    ' && ',
  )
}

/**
 * How many units one systemctl call starts or restarts at once. Side by side they overlap their
 * waits (database, Redis, replication); all sixteen Synapse workers at once on a loaded 2-core host
 * shared the cores so thinly that each took longer than systemd's 90 s start timeout, where one
 * after another took 25-40 s each. A few at a time keeps each start short.
 */
export const UNITS_AT_ONCE = 4

/** The units in waves of UNITS_AT_ONCE, in order. */
export function inWaves<T>(units: readonly T[]): T[][] {
  const out: T[][] = []
  for (let i = 0; i < units.length; i += UNITS_AT_ONCE) out.push(units.slice(i, i + UNITS_AT_ONCE))
  return out
}

/**
 * Services enabled with one systemctl call and started in waves of a few per call: systemd runs the
 * start jobs of a call side by side (ordered by the units' own After=), so sixteen Synapse workers do
 * not start one after another. A unit that did not come up is named with its status; the waves after
 * a failed one are not started.
 */
/** The exit code of a combined enable-and-start whose enable failed (systemctl's own codes are below 10). */
const ENABLE_FAILED = 97

const startTogether: ApplyTogether = {
  key: 'systemd start',
  async apply(changes, ctx) {
    const todo = changes.map((c) => ({ change: c, ...servicePlan.of(c) }))
    const failed = new Map<Change, string>()
    const why = async (unit: string, r: { stdout: string; stderr: string }) =>
      `${(r.stderr + r.stdout).trim()}\n${(await ctx.conn.run(sh`systemctl status --no-pager -n 15 ${unit}`, { allowFailure: true })).stdout}`.trim()
    const enable = todo.filter((t) => t.enable)
    const start = todo.filter((t) => t.start).map((t) => t.unit)
    const waves = inWaves(start)
    // The enable call and the first wave's start share one round trip; ENABLE_FAILED says which one failed.
    let first: CommandResult | undefined
    if (enable.length) {
      const cmd = waves[0]
        ? sh`${enableCommand(enable)} || exit ${ENABLE_FAILED}; systemctl start ${waves[0]}`
        : sh`${enableCommand(enable)} || exit ${ENABLE_FAILED}`
      first = await ctx.conn.run(cmd, { ...(waves[0] ? { timeoutMs: 300_000 } : {}), allowFailure: true })
      if (first.code === ENABLE_FAILED) {
        for (const t of todo) failed.set(t.change, await why(t.unit, first))
        return failed
      }
    }
    for (const [w, wave] of waves.entries()) {
      const r = w === 0 && first ? first : await ctx.conn.run(sh`systemctl start ${wave}`, { timeoutMs: 300_000, allowFailure: true })
      if (r.code === 0) continue
      // Which ones did not come up: systemctl waits for every job and fails if any did.
      const states = (await ctx.conn.run(sh`systemctl is-active ${wave}`, { allowFailure: true })).stdout.trim().split('\n')
      for (const t of todo)
        if (wave.includes(t.unit) && states[wave.indexOf(t.unit)] !== 'active') failed.set(t.change, await why(t.unit, r))
      if (failed.size === 0) throw new RemoteCommandError(ctx.conn.host, r, `starting ${wave.join(', ')}`)
      // The later waves were not started: they did not happen either.
      for (const t of todo)
        if (
          waves
            .slice(w + 1)
            .flat()
            .includes(t.unit)
        )
          failed.set(t.change, 'not started: an earlier unit of the same run failed to start')
      return failed
    }
    return failed
  },
}

export function isServiceResource(r: Resource): r is ServiceResource {
  return 'restartTarget' in r
}
