import { select, sum, type Sample } from './exposition.js'
import { bucketsDelta, bucketsOf, observations, quantile } from './histogram.js'

/** The guide's indicators of one Synapse process, from two scrapes `windowS` seconds apart. */
export interface ProcessStatus {
  process: string
  unit: string
  port: number
  up: boolean
  /** Why it is not up: unit inactive, listener not answering. */
  error?: string
  version?: string
  /** Share of one core over the window (Synapse runs one Python thread of work per process: 100% is its limit). */
  cpuPercent?: number
  memoryBytes?: number
  /** Time to send a message (RoomSendEventRestServlet, 2xx): over the window, and since the process started. */
  eventSend: { window?: Latency; sinceStart?: Latency }
  /** Code blocks by CPU over the window (user + system), highest first. */
  topBlocks: { block: string; cpuPercent: number }[]
  /** Cache entries evicted because a cache was full (reason "size"), per second over the window. */
  cacheEvictionsPerSecond?: number
  topEvictingCaches: { cache: string; perSecond: number }[]
  /** Long-polls (/sync and its kin) in flight at the second scrape: what the proxy's long-poll cap counts. */
  longPolls?: number
}

export interface Latency {
  count: number
  p50Ms: number
  p95Ms: number
}

/** What is read from each process's /_synapse/metrics (the host filters the exposition to these, to keep the transfer small). */
export const STATUS_METRICS = [
  'synapse_build_info',
  // Synapse's own CPU collector (1.163 serves only these); process_* of prometheus_client on older releases.
  'process_cpu_user_seconds_total',
  'process_cpu_system_seconds_total',
  'process_cpu_seconds_total',
  'process_resident_memory_bytes',
  'synapse_http_server_response_time_seconds_bucket',
  'synapse_util_metrics_block_ru_utime_seconds_total',
  'synapse_util_metrics_block_ru_stime_seconds_total',
  'synapse_util_caches_cache_evicted_size',
  'synapse_http_server_in_flight_requests_count',
] as const

/** Synapse's servlets behind the long-poll routes (src/synapse/routes.ts, sync): their in-flight requests are the long-polls the proxy holds. */
export const LONG_POLL_SERVLETS = [
  'SyncRestServlet',
  'EventStreamRestServlet',
  'InitialSyncRestServlet',
  'RoomInitialSyncRestServlet',
] as const

const SEND_EVENT = { servlet: 'RoomSendEventRestServlet', code: /2\d\d/ }
const TOP = 5

function latency(buckets: Map<number, number>): Latency | undefined {
  const count = observations(buckets)
  if (!count) return undefined
  return { count, p50Ms: quantile(0.5, buckets)! * 1000, p95Ms: quantile(0.95, buckets)! * 1000 }
}

/** A counter's increase per second, or undefined when the process restarted in between (the counter went down). */
function rate(before: number, after: number, windowS: number): number | undefined {
  return after >= before ? (after - before) / windowS : undefined
}

function byLabel(samples: Sample[], label: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const s of samples) out.set(s.labels[label] ?? '', (out.get(s.labels[label] ?? '') ?? 0) + s.value)
  return out
}

function topRates(before: Map<string, number>, after: Map<string, number>, windowS: number): { key: string; perSecond: number }[] {
  return [...after]
    .map(([key, v]) => ({ key, perSecond: rate(before.get(key) ?? 0, v, windowS) ?? 0 }))
    .filter((x) => x.perSecond > 0)
    .sort((a, b) => b.perSecond - a.perSecond)
}

/** `rssBytes`: the process's resident memory as the host sees it (/proc), since Synapse 1.163 no longer exports it. */
export function processStatus(
  target: { process: string; unit: string; port: number },
  before: Sample[],
  after: Sample[],
  windowS: number,
  rssBytes?: number,
): ProcessStatus {
  const status: ProcessStatus = { ...target, up: true, eventSend: {}, topBlocks: [], topEvictingCaches: [] }
  status.version = select(after, 'synapse_build_info')[0]?.labels.version
  const cpu = (s: Sample[]) => {
    const split = [...select(s, 'process_cpu_user_seconds_total'), ...select(s, 'process_cpu_system_seconds_total')]
    return split.length ? sum(split) : sum(select(s, 'process_cpu_seconds_total'))
  }
  const cpuRate = rate(cpu(before), cpu(after), windowS)
  if (cpuRate !== undefined) status.cpuPercent = cpuRate * 100
  const mem = select(after, 'process_resident_memory_bytes')[0]
  if (mem) status.memoryBytes = mem.value
  if (rssBytes !== undefined) status.memoryBytes = rssBytes

  const sendAfter = bucketsOf(select(after, 'synapse_http_server_response_time_seconds_bucket', SEND_EVENT))
  const sendBefore = bucketsOf(select(before, 'synapse_http_server_response_time_seconds_bucket', SEND_EVENT))
  status.eventSend = { window: latency(bucketsDelta(sendBefore, sendAfter)), sinceStart: latency(sendAfter) }

  const blockCpu = (s: Sample[]) => {
    const u = byLabel(select(s, 'synapse_util_metrics_block_ru_utime_seconds_total'), 'block_name')
    for (const [k, v] of byLabel(select(s, 'synapse_util_metrics_block_ru_stime_seconds_total'), 'block_name'))
      u.set(k, (u.get(k) ?? 0) + v)
    return u
  }
  status.topBlocks = topRates(blockCpu(before), blockCpu(after), windowS)
    .slice(0, TOP)
    .map((x) => ({ block: x.key, cpuPercent: x.perSecond * 100 }))

  const evictions = (s: Sample[]) => byLabel(select(s, 'synapse_util_caches_cache_evicted_size', { reason: 'size' }), 'name')
  const [evBefore, evAfter] = [evictions(before), evictions(after)]
  const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0)
  const evictionRate = rate(total(evBefore), total(evAfter), windowS)
  if (evictionRate !== undefined) status.cacheEvictionsPerSecond = evictionRate
  status.topEvictingCaches = topRates(evBefore, evAfter, windowS)
    .slice(0, TOP)
    .map((x) => ({ cache: x.key, perSecond: x.perSecond }))
  const inFlight = select(after, 'synapse_http_server_in_flight_requests_count').filter((s) =>
    (LONG_POLL_SERVLETS as readonly string[]).includes(s.labels.servlet ?? ''),
  )
  status.longPolls = sum(inFlight)
  return status
}

export function downStatus(target: { process: string; unit: string; port: number }, error: string): ProcessStatus {
  return { ...target, up: false, error, eventSend: {}, topBlocks: [], topEvictingCaches: [] }
}
