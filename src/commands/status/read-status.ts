import { maskSecrets } from '../../core/secret.js'
import type { HostSpec } from '../../inventory/types.js'
import { advise, type Advice } from '../../synapse/metrics/advice.js'
import { parseExposition, type Sample } from '../../synapse/metrics/exposition.js'
import { downStatus, processStatus, STATUS_METRICS, type ProcessStatus } from '../../synapse/metrics/process-status.js'
import type { Connection } from '../../ssh/connection.js'
import { sh } from '../../core/shell.js'
import { metricsTargets, type MetricsTarget } from '../../../tasks/monitoring/targets.js'
import { backgroundUpdaterCheck } from '../../../tasks/synapse/background-updates.js'
import { SYNAPSE_CONFIG_DIR, SYNAPSE_UNIT, VENV_LINK } from '../../synapse/paths.js'
import type { CheckOutcome } from '../../engine/task.js'
import { mpmSizing } from '../../topology/proxy-capacity.js'

export interface HostStatus {
  host: string
  windowS: number
  cacheFactor: number
  memory?: { availableMiB: number; totalMiB: number }
  /** Long-polls Synapse holds (in flight at the second scrape, all processes) against the proxy's long-poll cap. */
  longPolls?: { held: number; cap: number }
  processes: ProcessStatus[]
  advice: Advice[]
  /** Main's background updater (tasks/synapse/background-updates.ts): pending, running or aborted, named. */
  backgroundUpdates?: CheckOutcome
  error?: string
}

export interface StatusReport {
  hosts: HostStatus[]
  durationMs: number
}

const MARK = '@@mp-status'

/**
 * One round trip per host: which units are active, a first scrape of every active process's metrics
 * (filtered on the host to what the status reads), `windowS` seconds of sleep, a second scrape, and
 * the memory figures. A process whose unit is inactive is reported down at once, never polled.
 */
export function statusScript(targets: MetricsTarget[], windowS: number) {
  const filter = `^(${STATUS_METRICS.join('|')})[{ ]`
  const scrape = (pass: number) =>
    targets.map(
      (t) =>
        sh`if [ "$(systemctl is-active ${t.unit})" = active ]; then printf '%s\\n' ${`${MARK} scrape ${pass} ${t.port}`}; if out=$(curl -sS --max-time 5 ${`http://127.0.0.1:${t.port}/_synapse/metrics`} 2>&1); then printf '%s\\n' "$out" | grep -E ${filter}; printf '%s\\n' ${`${MARK} ok`}; else printf '%s\\n' "$out" ${`${MARK} error`}; fi; else printf '%s\\n' ${`${MARK} inactive ${t.port}`}; fi`,
    )
  // Resident memory from /proc of the unit's main process: Synapse 1.163 exports no process_resident_memory_bytes.
  const rss = targets.map(
    (t) =>
      sh`pid=$(systemctl show -p MainPID --value ${t.unit}); [ "\${pid:-0}" -gt 0 ] && printf '%s %s\\n' ${`${MARK} rss ${t.port}`} "$(sed -n 's/^VmRSS:[[:space:]]*\\([0-9]*\\) kB/\\1/p' /proc/$pid/status)"; `,
  )
  return sh`${scrape(1).map((c) => sh`${c}; `)}sleep ${windowS}; ${scrape(2).map((c) => sh`${c}; `)}${rss}printf '%s\\n' ${`${MARK} meminfo`}; grep -E ${'^(MemTotal|MemAvailable):'} /proc/meminfo`
}

interface Scrape {
  state: 'ok' | 'error' | 'inactive'
  text: string
}

/** Split the script's output into scrapes by pass and port, and the meminfo lines. */
export function parseStatusOutput(out: string): {
  scrapes: Map<string, Scrape>
  inactive: Set<number>
  rssKiB: Map<number, number>
  meminfo: Record<string, number>
} {
  const scrapes = new Map<string, Scrape>()
  const rssKiB = new Map<number, number>()
  const inactive = new Set<number>()
  const meminfo: Record<string, number> = {}
  let current: { key: string; lines: string[] } | undefined
  let inMeminfo = false
  for (const line of out.split('\n')) {
    if (line.startsWith(MARK)) {
      const [, what, a, b] = line.split(' ')
      if (what === 'scrape') current = { key: `${a}:${b}`, lines: [] }
      else if ((what === 'ok' || what === 'error') && current) {
        scrapes.set(current.key, { state: what, text: current.lines.join('\n') })
        current = undefined
      } else if (what === 'inactive') inactive.add(Number(a))
      else if (what === 'rss' && /^\d+$/.test(b ?? '')) rssKiB.set(Number(a), Number(b))
      else if (what === 'meminfo') inMeminfo = true
      continue
    }
    if (inMeminfo) {
      const m = /^(\w+):\s+(\d+) kB/.exec(line)
      if (m) meminfo[m[1]!] = Math.round(Number(m[2]) / 1024)
    } else if (current) current.lines.push(line)
  }
  return { scrapes, inactive, rssKiB, meminfo }
}

export async function readHostStatus(host: HostSpec, conn: Connection, windowS: number): Promise<HostStatus> {
  const targets = metricsTargets(host.vars, host.name)
  const status: HostStatus = { host: host.name, windowS, cacheFactor: host.vars.synapse.cacheFactor, processes: [], advice: [] }
  if (targets.length === 0) {
    status.error = host.vars.monitoring.enableMetrics
      ? 'no Synapse process on this host'
      : 'monitoring.enableMetrics is false: Synapse exposes no metrics'
    return status
  }
  // Read while the window's sleep runs: the same connection, another channel.
  const updater = backgroundUpdaterCheck(VENV_LINK, SYNAPSE_CONFIG_DIR, SYNAPSE_UNIT)
    .run(conn, { waitS: () => 0 })
    .catch((e: Error) => ({ ok: false, detail: e.message }))
  const r = await conn.run(statusScript(targets, windowS), { timeoutMs: (windowS + 30 + targets.length * 20) * 1000 })
  status.backgroundUpdates = await updater
  const { scrapes, inactive, rssKiB, meminfo } = parseStatusOutput(r.stdout)
  if (meminfo.MemAvailable !== undefined && meminfo.MemTotal !== undefined)
    status.memory = { availableMiB: meminfo.MemAvailable, totalMiB: meminfo.MemTotal }
  for (const t of targets) {
    const first = scrapes.get(`1:${t.port}`)
    const second = scrapes.get(`2:${t.port}`)
    if (inactive.has(t.port)) {
      status.processes.push(downStatus(t, `${t.unit} is not active`))
    } else if (first?.state !== 'ok' || second?.state !== 'ok') {
      const why = [first, second].find((s) => s && s.state !== 'ok')
      status.processes.push(
        downStatus(t, `metrics on 127.0.0.1:${t.port} did not answer${why?.text ? `: ${why.text.trim().slice(0, 200)}` : ''}`),
      )
    } else {
      let before: Sample[], after: Sample[]
      try {
        before = parseExposition(first.text)
        after = parseExposition(second.text)
      } catch (e) {
        status.processes.push(downStatus(t, (e as Error).message))
        continue
      }
      const rss = rssKiB.get(t.port)
      status.processes.push(processStatus(t, before, after, windowS, rss === undefined ? undefined : rss * 1024))
    }
  }
  const cap = mpmSizing(host.vars.apache.maxClients).longPolls
  if (status.processes.some((p) => p.longPolls !== undefined))
    status.longPolls = { held: status.processes.reduce((n, p) => n + (p.longPolls ?? 0), 0), cap }
  status.advice = advise(
    {
      cacheFactor: status.cacheFactor,
      memAvailableMiB: status.memory?.availableMiB,
      memTotalMiB: status.memory?.totalMiB,
      longPollCap: { cap, maxClients: host.vars.apache.maxClients },
      ...(host.vars.synapse.version ? { version: host.vars.synapse.version } : {}),
    },
    status.processes,
  )
  return status
}

/** Every Synapse host at once, each over its own connection; a host that cannot be reached is reported, not thrown. */
export async function readStatus(hosts: HostSpec[], connect: (h: HostSpec) => Promise<Connection>, windowS: number): Promise<StatusReport> {
  const t0 = Date.now()
  const synapseHosts = hosts.filter((h) => h.roles.includes('synapse'))
  const results = await Promise.all(
    synapseHosts.map(async (host): Promise<HostStatus> => {
      let conn: Connection | undefined
      try {
        conn = await connect(host)
        return await readHostStatus(host, conn, windowS)
      } catch (e) {
        return {
          host: host.name,
          windowS,
          cacheFactor: host.vars.synapse.cacheFactor,
          processes: [],
          advice: [],
          error: maskSecrets((e as Error).message),
        }
      } finally {
        await conn?.close().catch(() => undefined)
      }
    }),
  )
  return { hosts: results, durationMs: Date.now() - t0 }
}

/** Not healthy: a host not read, a process down, or main's background updater aborted (or about to). */
export function statusFailed(report: StatusReport): boolean {
  return report.hosts.some((h) => h.error !== undefined || h.processes.some((p) => !p.up) || h.backgroundUpdates?.ok === false)
}
