import { maskSecrets } from '../../core/secret.js'
import { renderReport } from '../../report/text.js'
import type { BackupReport } from './take-backup.js'
import type { RestoreReport } from './restore.js'
import { formatBytes } from './transfer-progress.js'

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`

/** The text view of a backup run: per host its directory, files, sizes and hashes, or why it failed. */
export function renderBackupReport(report: BackupReport): string {
  const lines: string[] = []
  for (const h of report.hosts) {
    if (h.status === 'failed') {
      lines.push(`${h.host}: backup FAILED after ${seconds(h.durationMs)}: ${h.error}`)
      continue
    }
    const m = h.manifest!
    lines.push(
      `${h.host}: ${m.serverName}, Synapse ${m.synapse.version} (schema ${m.synapse.schemaVersion}), signing key ${m.signingKey.id}${m.encryption ? `, encrypted with age to ${m.encryption.recipients.length} recipient(s)` : ''}`,
    )
    lines.push(`  ${h.dir}`)
    for (const f of m.files) lines.push(`    ${f.name.padEnd(18)} ${formatBytes(f.bytes).padStart(10)}  sha256 ${f.sha256}`)
  }
  const failed = report.hosts.filter((h) => h.status === 'failed').length
  lines.push(`\nBackup: ${report.hosts.length - failed} of ${report.hosts.length} homeserver(s) in ${seconds(report.durationMs)}.`)
  return maskSecrets(lines.join('\n')) + '\n'
}

/** The text view of a restore: what it replaces, its steps (planned or done), the apply's recap. */
export function renderRestoreReport(report: RestoreReport, color: boolean): string {
  const lines: string[] = []
  const m = report.manifest
  lines.push(`${report.host}: restore ${report.status === 'planned' ? '(dry run) ' : ''}from ${report.from}`)
  if (m)
    lines.push(
      `  backup of ${m.serverName} (host ${m.host}) taken ${m.createdAt}, Synapse ${m.synapse.version}, schema ${m.synapse.schemaVersion}, signing key ${m.signingKey.id}`,
    )
  if (report.route)
    lines.push(`  route: restored onto Synapse ${report.route.from} (the backup's), then upgraded to ${report.route.to} (the inventory's)`)
  if (report.replaces.length) {
    lines.push('  replaces:')
    for (const r of report.replaces) lines.push(`    - ${r}`)
  }
  if (report.steps.length) {
    lines.push('  steps:')
    report.steps.forEach((s, i) => {
      lines.push(
        `    ${i + 1}. ${s.done ? '✓' : report.status === 'planned' ? ' ' : '✗'} ${s.summary}${s.durationMs !== undefined ? ` (${seconds(s.durationMs)})` : ''}`,
      )
      s.details?.forEach((d, j) => lines.push(`         ${String.fromCharCode(97 + j)}. ${d}`))
    })
  }
  for (const r of [...(report.older ?? []), ...(report.apply ? [report.apply] : [])])
    lines.push('', renderReport(r, { color, diffs: false }).trimEnd())
  if (report.error)
    lines.push(`  ${report.status === 'refused' ? 'REFUSED, nothing was changed' : 'FAILED'}: ${report.error.split('\n').join('\n  ')}`)
  else if (report.status === 'restored') lines.push(`\nRestored ${report.host} in ${seconds(report.durationMs)}.`)
  else if (report.status === 'planned') lines.push(`\nPlan: ${report.steps.length} steps; nothing was changed.`)
  return maskSecrets(lines.join('\n')) + '\n'
}
