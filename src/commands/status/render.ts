import type { ProcessStatus } from '../../synapse/metrics/process-status.js'
import { cacheMemoryGb } from '../../synapse/metrics/advice.js'
import type { HostStatus, StatusReport } from './read-status.js'

const mib = (bytes?: number) => (bytes === undefined ? '-' : `${Math.round(bytes / 1048576)} MiB`)
const pct = (n?: number) => (n === undefined ? '-' : `${n < 10 ? n.toFixed(1) : n.toFixed(0)}%`)
const ms = (n?: number) => (n === undefined ? '-' : `${n < 10 ? n.toFixed(1) : n.toFixed(0)} ms`)
const gb = (mibValue: number) => (mibValue / 1024).toFixed(1)

function row(p: ProcessStatus): string[] {
  if (!p.up) return [p.process, 'DOWN', p.error ?? '']
  const w = p.eventSend.window
  const send = w ?? p.eventSend.sinceStart
  const mark = w ? '' : send ? '*' : ''
  return [
    p.process,
    'up',
    pct(p.cpuPercent),
    mib(p.memoryBytes),
    send ? ms(send.p50Ms) + mark : '-',
    send ? ms(send.p95Ms) + mark : '-',
    String(send?.count ?? 0) + mark,
    p.cacheEvictionsPerSecond === undefined ? '-' : p.cacheEvictionsPerSecond.toFixed(1),
    p.topBlocks.length
      ? p.topBlocks
          .slice(0, 3)
          .map((b) => `${b.block} ${pct(b.cpuPercent)}`)
          .join(', ')
      : '-',
  ]
}

function table(rows: string[][]): string[] {
  const full = rows.filter((r) => r.length > 3)
  const widths = rows[0]!.map((_, i) => Math.max(...(i === 0 ? rows : full).map((r) => (r[i] ?? '').length)))
  return rows.map((r) =>
    (r.length > 3
      ? r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')
      : `${r[0]!.padEnd(widths[0]!)}  ${r[1]}  ${r[2]}`
    ).trimEnd(),
  )
}

function renderHost(h: HostStatus): string {
  if (h.error && h.processes.length === 0) return `${h.host}: not read: ${h.error}\n`
  const version = [...new Set(h.processes.map((p) => p.version).filter(Boolean))].join(', ') || 'unknown'
  const memory = h.memory ? `, ${gb(h.memory.availableMiB)} of ${gb(h.memory.totalMiB)} GB memory available` : ''
  const lines = [
    `${h.host}: Synapse ${version}, cacheFactor ${h.cacheFactor} (caches up to about ${cacheMemoryGb(h.cacheFactor)} GB)${memory}; figures over ${h.windowS} s`,
  ]
  if (h.longPolls)
    lines.push(
      `  proxy: ${h.longPolls.held} of at most ${h.longPolls.cap} long-polls held (/sync); other requests have threads of their own`,
    )
  const header = ['process', 'state', 'CPU', 'memory', 'send p50', 'send p95', 'sends', 'evictions/s', 'top blocks by CPU']
  lines.push(...table([header, ...h.processes.map(row)]).map((l) => `  ${l}`))
  if (h.processes.some((p) => p.up && !p.eventSend.window && p.eventSend.sinceStart))
    lines.push('  * no message sent in the window: send time since the process started')
  if (h.backgroundUpdates) lines.push(`  background updates: ${h.backgroundUpdates.ok ? '' : 'FAILING: '}${h.backgroundUpdates.detail}`)
  if (h.advice.length) {
    lines.push('  advice:')
    for (const a of h.advice) lines.push(`    ${a.level === 'warning' ? '!' : '-'} ${a.text}`)
  } else lines.push("  advice: none; every indicator is within the guide's ranges")
  return lines.join('\n') + '\n'
}

export function renderStatus(report: StatusReport): string {
  if (report.hosts.length === 0) return 'no host with the synapse role selected\n'
  return report.hosts.map(renderHost).join('\n') + `\nread in ${(report.durationMs / 1000).toFixed(1)} s\n`
}
