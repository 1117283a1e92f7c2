import type { ProcessStatus } from './process-status.js'

/**
 * The guide's monitoring section as rules ("Matrix Synapse auf Ubuntu Server manuell installieren",
 * Monitoring): a process at its CPU limit, event send time far above its normal ~100 ms, and a cache
 * eviction rate that says the cache factor is too small — where factor 4 needs up to about 3 GB of
 * memory and 2 to 10 worked well in practice.
 */
export const THRESHOLDS = {
  /** Share of one core: a Synapse process does its work on one core, so near 100% it is saturated. */
  cpuSaturatedPercent: 90,
  /** The guide: normally around 100 ms. Synapse's Grafana dashboard marks 1 s as warning, 2 s critical. */
  eventSendP95Ms: 1000,
  /** Entries evicted because a cache was full, per second, sustained. */
  cacheEvictionsPerSecond: 10,
  /** Long-polls held, as a share of the proxy's long-poll cap: past the cap Apache answers /sync with 503. */
  longPollsNearCapPercent: 80,
} as const

/** The guide's figure: cache factor 4 needs at most about 3 GB, i.e. about 0.75 GB per unit of the factor. */
export const CACHE_GB_PER_FACTOR = 0.75
export const MAX_CACHE_FACTOR = 10

export function cacheMemoryGb(factor: number): number {
  return factor * CACHE_GB_PER_FACTOR
}

export interface Advice {
  process?: string
  level: 'warning' | 'info'
  text: string
}

export interface HostFigures {
  cacheFactor: number
  memAvailableMiB?: number
  memTotalMiB?: number
  /** Long-polls the proxy holds at most (src/topology/proxy-capacity.ts), and apache.maxClients it is sized from. */
  longPollCap?: { cap: number; maxClients: number }
  /** The inventory's synapse.version (unset: not pinned; the processes are then only compared with each other). */
  version?: string
}

const gb = (n: number) => (n >= 10 ? n.toFixed(0) : n.toFixed(1).replace(/\.0$/, ''))

export function advise(host: HostFigures, processes: ProcessStatus[]): Advice[] {
  const out: Advice[] = []
  // First: workers on other code than main (a hand apt-get upgrade restarts main alone) or another version than pinned.
  const versions = processes.filter((p) => p.up && p.version)
  if (new Set(versions.map((p) => p.version)).size > 1 || (host.version && versions.some((p) => p.version !== host.version)))
    out.push({
      level: 'warning',
      text: `Synapse processes run ${new Set(versions.map((p) => p.version)).size > 1 ? 'mixed versions' : 'another version than the inventory'}: ${versions.map((p) => `${p.process} ${p.version}`).join(', ')}${host.version ? ` (the inventory says ${host.version})` : ''}: run provision to converge them`,
    })
  for (const p of processes) {
    if (!p.up) {
      out.push({
        process: p.process,
        level: 'warning',
        text: `${p.process} is down (${p.error}): systemctl status ${p.unit}; journalctl -u ${p.unit}`,
      })
      continue
    }
    if (p.cpuPercent !== undefined && p.cpuPercent >= THRESHOLDS.cpuSaturatedPercent) {
      const top = p.topBlocks[0] ? `; most CPU goes to ${p.topBlocks[0].block}` : ''
      const what =
        p.process === 'main'
          ? 'move work off the main process to workers'
          : `add another ${p.process.replace(/\d+$/, '')} worker to share the load`
      out.push({
        process: p.process,
        level: 'warning',
        text: `${p.process} is at its CPU limit (${p.cpuPercent.toFixed(0)}% of one core)${top}: ${what}`,
      })
    }
    const send = p.eventSend.window ?? p.eventSend.sinceStart
    if (send && send.p95Ms >= THRESHOLDS.eventSendP95Ms) {
      out.push({
        process: p.process,
        level: 'warning',
        text: `event send time on ${p.process} is high: p95 ${send.p95Ms.toFixed(0)} ms (normally around 100 ms); look at the top blocks by CPU and the database`,
      })
    }
    if (p.cacheEvictionsPerSecond !== undefined && p.cacheEvictionsPerSecond >= THRESHOLDS.cacheEvictionsPerSecond) {
      out.push({ process: p.process, level: 'warning', text: cacheAdvice(p, host) })
    }
  }
  const held = processes.reduce((n, p) => n + (p.longPolls ?? 0), 0)
  if (host.longPollCap && held >= (host.longPollCap.cap * THRESHOLDS.longPollsNearCapPercent) / 100) {
    out.push({
      level: 'warning',
      text: `the proxy is near its limit: ${held} long-polls (/sync) held of at most ${host.longPollCap.cap}; past that Apache answers /sync with 503 (plain requests keep their reserved threads): raise apache.maxClients (now ${host.longPollCap.maxClients}) if the host has the memory`,
    })
  }
  return out
}

function cacheAdvice(p: ProcessStatus, host: HostFigures): string {
  const head = `cache evictions high on ${p.process} (${p.cacheEvictionsPerSecond!.toFixed(0)}/s${p.topEvictingCaches[0] ? `, most in ${p.topEvictingCaches[0].cache}` : ''})`
  if (host.cacheFactor >= MAX_CACHE_FACTOR)
    return `${head}: cacheFactor is already ${host.cacheFactor}; look at which caches evict rather than raising it further`
  const next = Math.min(MAX_CACHE_FACTOR, host.cacheFactor * 2)
  const need = cacheMemoryGb(next)
  const free = host.memAvailableMiB !== undefined ? host.memAvailableMiB / 1024 + cacheMemoryGb(host.cacheFactor) : undefined
  const fits =
    free === undefined
      ? ''
      : free >= need
        ? `; the host has ${gb(host.memAvailableMiB! / 1024)} GB available`
        : `; the host has only ${gb(host.memAvailableMiB! / 1024)} GB available: add memory first`
  return `${head}: cacheFactor ${host.cacheFactor} -> ${next} would need about ${gb(need)} GB${fits}`
}
