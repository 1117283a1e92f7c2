/**
 * Drift of the apt method: the package, main and every worker on this host must all run the
 * inventory's version, and the package must stay held there. A hand `apt-get upgrade` (after an
 * unhold), an explicit `apt-get install pkg=ver --allow-change-held-packages` or `dpkg -i` changes the
 * package, clears the hold and lets the postinst restart main alone: workers then run the old code
 * against a database the new main migrated. The plan says so (a warning), the release converges a
 * package at another version, this resource converges processes on other code and a lost hold,
 * and the after-check (so `check`) fails naming every version.
 */
import type { AfterCheck, BeforeCheck } from '../../src/engine/task.js'
import { defineFact, type Fact } from '../../src/facts/fact.js'
import type { MatrixSettings } from '../../src/inventory/types.js'
import { instancesOn } from '../../src/inventory/workers.js'
import { sh } from '../../src/core/shell.js'
import type { Resource, Step } from '../../src/resources/resource.js'
import { SYNAPSE_UNIT } from '../../src/synapse/paths.js'
import { workerUnitName } from '../../src/synapse/worker-kinds.js'
import { httpOnHost } from '../common/checks.js'
import { SYNAPSE_PACKAGE, upstreamOf } from './apt-package.js'
import { startUnit, StepRunner } from './switch.js'

/** A Synapse process of this host: its unit and, with metrics on, the listener that names its version. */
export interface ProcessTarget {
  process: string
  unit: string
  metricsPort?: number
}

export interface RunningProcess extends ProcessTarget {
  active: boolean
  /** From its synapse_build_info metric (undefined: metrics off or not answering). */
  version?: string
  /** Unix seconds its main PID started. */
  startedAt?: number
}

export interface AptRunState {
  /** Installed package: Debian version, held (dpkg status "hi"), when dpkg last wrote its file list (Unix seconds). */
  pkg?: { version: string; held: boolean; installedAt?: number }
  processes: RunningProcess[]
}

/** Main, then its host's workers (the apt method runs every worker on main's host). */
export function processTargets(v: MatrixSettings): ProcessTarget[] {
  const metrics = v.monitoring.enableMetrics
  return [
    { process: 'main', unit: SYNAPSE_UNIT, ...(metrics ? { metricsPort: v.monitoring.mainMetricsPort } : {}) },
    ...instancesOn(v, v.workers.homeserverHost ?? '').map((w) => ({
      process: w.name,
      unit: workerUnitName(w.name),
      ...(metrics ? { metricsPort: w.metricsPort } : {}),
    })),
  ]
}

export function parseAptRunState(out: string, targets: ProcessTarget[]): AptRunState {
  const s: AptRunState = { processes: [] }
  for (const line of out.split('\n')) {
    const [key, ...f] = line.trim().split(' ')
    if (key === 'pkg' && f[0]) s.pkg = { version: f[0], held: (f[1] ?? '').startsWith('h') }
    else if (key === 'listed' && s.pkg && /^\d+$/.test(f[0] ?? '')) s.pkg.installedAt = Number(f[0])
    else if (key === 'proc') {
      const t = targets.find((x) => x.unit === f[0])
      if (!t) continue
      s.processes.push({
        ...t,
        active: f[1] === 'active',
        ...(/^\d+$/.test(f[2] ?? '') ? { startedAt: Number(f[2]) } : {}),
        ...(f[3] ? { version: f[3] } : {}),
      })
    }
  }
  return s
}

/**
 * One round trip: the package's version, hold and install time, and per process whether it runs,
 * when its main PID started (/proc/PID/stat field 22, in clock ticks since boot) and the version its
 * metrics name.
 */
export function aptRunStateFact(targets: ProcessTarget[]): Fact<AptRunState> {
  const procs = targets.map(
    (t) =>
      sh`u=${t.unit}; a=$(systemctl is-active "$u"); pid=$(systemctl show -p MainPID --value "$u"); st=; if [ "\${pid:-0}" -gt 0 ] && [ -r /proc/$pid/stat ]; then st=$(( btime + $(sed 's/^.*) //' /proc/$pid/stat | cut -d' ' -f20) / hz )); fi; ver=${t.metricsPort ? sh`$(curl -s --max-time 5 ${`http://127.0.0.1:${t.metricsPort}/_synapse/metrics`} 2>/dev/null | sed -n 's/^synapse_build_info{.*[{,]version="\\([^"]*\\)".*/\\1/p' | head -n1)` : sh``}; echo "proc $u $a \${st:--} $ver"; `,
  )
  return defineFact(
    `apt-run-state:${targets.map((t) => `${t.unit}@${t.metricsPort ?? ''}`).join(',')}`,
    sh`echo "pkg $(dpkg-query -W -f '\${Version} \${db:Status-Abbrev}' ${SYNAPSE_PACKAGE} 2>/dev/null)"; echo "listed $(stat -c %Y ${`/var/lib/dpkg/info/${SYNAPSE_PACKAGE}.list`} 2>/dev/null)"; btime=$(awk '/^btime/{print $2}' /proc/stat); hz=$(getconf CLK_TCK); ${procs}true`,
    (out) => parseAptRunState(out, targets),
  )
}

export interface VersionDrift {
  /** Upstream version of the installed package. */
  package: string
  /** The package is at another version than the inventory's: the release changes it, in the upgrade order. */
  packageDiffers: boolean
  notHeld: boolean
  /** Running processes whose code is not the inventory's version, with what they run. */
  stale: (RunningProcess & { runs: string })[]
  /**
   * Changed behind the tool's back: the hold is gone, or a process runs other code than the package
   * (a held package at another version with everything on it is only a pending inventory change).
   */
  drifted: boolean
  /** One line naming the package and every process's version. */
  text: string
}

/** What a running process runs: its metrics' version, else the package's unless it started before the package was last installed. */
function runs(p: RunningProcess, s: AptRunState): string {
  if (p.version) return p.version
  const at = s.pkg?.installedAt
  if (at !== undefined && p.startedAt !== undefined && p.startedAt < at)
    return `the code from before the package's last install (started ${new Date(p.startedAt * 1000).toISOString()}, package written ${new Date(at * 1000).toISOString()})`
  return upstreamOf(s.pkg!.version)
}

/** Undefined: no package yet, or the package (held) and every running process are on `upstream`. */
export function versionDrift(upstream: string, s: AptRunState): VersionDrift | undefined {
  if (!s.pkg) return undefined
  const pkg = upstreamOf(s.pkg.version)
  const running = s.processes.filter((p) => p.active).map((p) => ({ ...p, runs: runs(p, s) }))
  const stale = running.filter((p) => p.runs !== upstream)
  const packageDiffers = pkg !== upstream
  const notHeld = !s.pkg.held
  if (!packageDiffers && !notHeld && !stale.length) return undefined
  const drifted = notHeld || running.some((p) => p.runs !== pkg)
  const text = `the inventory says ${upstream}; package ${SYNAPSE_PACKAGE} ${s.pkg.version} (${s.pkg.held ? 'held' : 'not held: changed outside matrix-provision?'})${running.length ? `, ${running.map((p) => `${p.process} runs ${p.runs}`).join(', ')}` : ''}`
  return { package: pkg, packageDiffers, notHeld, stale, drifted, text }
}

/** In the plan: drift is said before anything changes (the release or the resource below converge it). */
export function aptDriftWarning(upstream: string, fact: Fact<AptRunState>): BeforeCheck {
  return {
    name: 'the package and every Synapse process on the inventory version (apt)',
    facts: [fact],
    evaluate(facts) {
      const d = versionDrift(upstream, facts.get(fact))
      return d?.drifted
        ? { ok: true, warning: true, detail: `Synapse versions drifted: ${d.text}; this run converges them in the upgrade order` }
        : { ok: true, detail: d ? `held at ${d.package}, every process on it` : `${upstream} everywhere, package held` }
    },
  }
}

/** `check` and every run: fails naming the versions until they agree. */
export function aptDriftCheck(upstream: string, targets: ProcessTarget[]): AfterCheck {
  const fact = aptRunStateFact(targets)
  return {
    name: `the package and every Synapse process on ${upstream} (apt)`,
    inventoryVersionOnly: true,
    async run(conn) {
      const r = await conn.run(fact.command, { what: 'reading the package and process versions' })
      const d = versionDrift(upstream, fact.parse(r.stdout, 0))
      if (!d) return { ok: true, detail: `${upstream}, package held` }
      const what = d.drifted ? 'Synapse versions drifted' : 'Synapse is not on the inventory version'
      return { ok: false, detail: `${what}: ${d.text}; run provision to converge them` }
    },
  }
}

/**
 * The package is at the inventory's version but a process runs other code, or the hold is gone:
 * in the upgrade order, restart what runs other code (main first, its workers stopped before it and
 * started once it answers /health; else only the stale workers) and hold the package again.
 */
export function aptConverge(spec: { version: string; targets: ProcessTarget[]; healthUrl: string }): Resource {
  const fact = aptRunStateFact(spec.targets)
  const id = `synapse-apt-drift:${SYNAPSE_PACKAGE}`
  return {
    id,
    facts: () => [fact],
    plan(ctx) {
      const d = versionDrift(spec.version, ctx.facts.get(fact))
      if (!d || d.packageDiffers) return Promise.resolve(null)
      const state = ctx.facts.get(fact)
      const mainStale = d.stale.some((p) => p.unit === SYNAPSE_UNIT)
      const workers = state.processes.filter((p) => p.unit !== SYNAPSE_UNIT && p.active)
      const restart = mainStale ? workers : workers.filter((w) => d.stale.some((s) => s.unit === w.unit))
      const steps: Step[] = [
        ...restart.map((w): Step => ({
          kind: 'stop',
          target: w.unit,
          summary: `stop ${w.unit} (runs ${runsOf(d, w.unit) ?? spec.version})`,
        })),
        ...(mainStale
          ? [
              {
                kind: 'start',
                target: SYNAPSE_UNIT,
                summary: `restart ${SYNAPSE_UNIT} on ${spec.version} (runs ${runsOf(d, SYNAPSE_UNIT)})`,
              },
              { kind: 'wait-health', target: spec.healthUrl, summary: `wait until main answers ${spec.healthUrl}` },
            ]
          : []),
        ...restart.map((w): Step => ({ kind: 'start', target: w.unit, summary: `start ${w.unit} on ${spec.version}` })),
        ...(d.notHeld ? [{ kind: 'hold', target: SYNAPSE_PACKAGE, summary: `apt-mark hold ${SYNAPSE_PACKAGE} (at ${spec.version})` }] : []),
      ]
      return Promise.resolve({
        resource: id,
        kind: 'service',
        action: 'update',
        summary: `converge Synapse on ${spec.version}: ${d.text}`,
        touches: [],
        backupPaths: [],
        reach: 'anything',
        steps,
      })
    },
    async apply(change, ctx) {
      const run = new StepRunner(ctx.conn, change)
      for (const step of change.steps ?? [])
        await run.step(step, async () => {
          if (step.kind === 'stop')
            await ctx.conn.run(sh`systemctl stop ${step.target}`, { timeoutMs: 300_000, what: `stopping ${step.target}` })
          else if (step.kind === 'start') await startUnit(ctx.conn, step.target)
          else if (step.kind === 'wait-health') {
            const r = await httpOnHost(ctx.conn, step.target, { waitS: 300, expect: /OK/ })
            if (!r.ok) throw new Error(r.detail)
          } else if (step.kind === 'hold') await ctx.conn.run(sh`apt-mark hold ${SYNAPSE_PACKAGE}`, { what: 'holding the package' })
          else throw new Error(`unknown step ${step.kind}`)
        })
    },
  }
}

const runsOf = (d: VersionDrift, unit: string) => d.stale.find((p) => p.unit === unit)?.runs
