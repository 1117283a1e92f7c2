import type { Change } from '../resources/resource.js'
import { maskJson, maskSecrets } from '../core/secret.js'
import type { HostReport, RunReport, TaskReport } from '../engine/report-types.js'

export interface TextOptions {
  color: boolean
  /** Show unified diffs of files (always masked). */
  diffs: boolean
}

const SYMBOL: Record<Change['action'], string> = {
  create: '+',
  install: '+',
  update: '~',
  enable: '~',
  start: '~',
  run: '~',
  delete: '-',
  restart: '↻',
  reload: '↻',
}

function paint(on: boolean) {
  const c = (code: string) => (s: string) => (on ? `\x1b[${code}m${s}\x1b[0m` : s)
  return { green: c('32'), yellow: c('33'), red: c('31'), cyan: c('36'), dim: c('2'), bold: c('1') }
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`

/** An ordered procedure: numbered as planned, or as done (with each outcome) after apply. */
export function renderSteps(c: Change, p: ReturnType<typeof paint>): string[] {
  if (c.performed?.length) {
    const mark = { done: p.green('✓'), skipped: p.dim('-'), failed: p.red('✗') }
    return c.performed.map(
      (s, i) =>
        `        ${String(i + 1).padStart(2)}. ${mark[s.status]} ${s.rollback ? p.yellow('rollback: ') : ''}${s.summary}${s.detail ? p.dim(` (${s.detail.split('\n')[0]})`) : ''} ${p.dim(`${(s.durationMs / 1000).toFixed(1)} s`)}`,
    )
  }
  return (c.steps ?? []).map(
    (s, i) => `        ${String(i + 1).padStart(2)}. ${s.summary}${s.uncertain ? p.dim(`  (may change: ${s.uncertain})`) : ''}`,
  )
}

function renderTask(t: TaskReport, mode: RunReport['mode'], o: TextOptions, p: ReturnType<typeof paint>): string[] {
  const lines: string[] = []
  // `check` exists to show the checks: every one, with its result. Elsewhere only failures and warnings.
  for (const c of t.checks) {
    if (!c.ok || c.warning) lines.push(`    ${c.ok ? p.yellow('!') : p.red('✗')} ${c.phase} check ${c.name}: ${c.detail}`)
    else if (mode === 'check') lines.push(`    ${p.green('✓')} ${c.phase} check ${c.name}: ${c.detail}`)
  }
  for (const c of t.changes) {
    const sym = SYMBOL[c.action]
    const color = sym === '+' ? p.green : sym === '-' ? p.red : p.yellow
    lines.push(`    ${color(sym)} ${c.summary}${c.uncertain ? p.dim(`  (may change: ${c.uncertain})`) : ''}`)
    lines.push(...renderSteps(c, p))
    if (o.diffs && c.diff) {
      for (const d of c.diff.trimEnd().split('\n')) {
        const dc = d.startsWith('+') && !d.startsWith('+++') ? p.green : d.startsWith('-') && !d.startsWith('---') ? p.red : p.dim
        lines.push(`        ${dc(d)}`)
      }
    }
  }
  for (const r of t.restarts)
    lines.push(`    ${p.cyan('↻')} ${r.done ? `${r.action}ed` : r.action} ${r.unit} ${p.dim(`(because: ${r.reason})`)}`)
  if (t.error) lines.push(`    ${p.red('✗')} ${t.error.split('\n').join('\n      ')}`)
  return lines
}

/** The adoption's reading of a hand-built server, one line per setting: what it becomes. */
function renderAdoption(h: HostReport, p: ReturnType<typeof paint>): string[] {
  const a = h.adoption
  if (!a) return []
  const width = Math.max(...a.notes.map((n) => n.kind.length))
  const out = [`${p.bold(h.host)}: adopting a Synapse built by hand (its files are copied to ${a.backupDir}/ first)`]
  for (const n of a.notes) {
    const tag = n.kind.padEnd(width)
    const color =
      n.kind === 'not mapped' ? p.yellow : n.kind === 'changes' || n.kind === 'retired' || n.kind === 'replaced' ? p.cyan : p.green
    out.push(`  ${color(tag)}  ${n.found}  ${p.dim('->')} ${n.becomes}`)
  }
  return out
}

function renderHost(h: HostReport, mode: RunReport['mode'], o: TextOptions, p: ReturnType<typeof paint>): string[] {
  const out: string[] = renderAdoption(h, p)
  const changes = h.tasks.reduce((n, t) => n + t.changes.length + t.restarts.length, 0)
  for (const w of h.warnings) out.push(`${p.yellow('!')} ${h.host}: ${w}`)
  if (h.status !== 'failed' && changes === 0 && mode !== 'check') {
    out.push(
      `${p.bold(h.host)}: ${mode === 'apply' ? 'no changes; the host matched the inventory.' : 'no changes; the host matches the inventory.'}`,
    )
    return out
  }
  out.push(`${p.bold(h.host)}${h.status === 'failed' ? p.red(' FAILED') : ''}`)
  for (const t of h.tasks) {
    const body = renderTask(t, mode, o, p)
    if (body.length) out.push(`  ${t.task}${t.status === 'skipped' ? p.dim(' (skipped)') : ''}`, ...body)
    else if (t.status === 'skipped') out.push(`  ${t.task}${p.dim(' (skipped)')}`)
  }
  if (h.error && !h.tasks.some((t) => t.error)) out.push(`  ${p.red('✗')} ${h.error.split('\n').join('\n    ')}`)
  return out
}

/** The human view of a run: Terraform-like plan lines, then a summary; one object, as --json prints it. */
export function renderReport(report: RunReport, options: TextOptions): string {
  const p = paint(options.color)
  const lines: string[] = []
  for (const h of report.hosts) lines.push(...renderHost(h, report.mode, options, p), '')
  const t = report.totals
  if (report.mode === 'dry-run') {
    lines.push(
      t.add + t.change + t.restart === 0 && t.failedHosts === 0
        ? 'Plan: no changes. Every host matches the inventory.'
        : `Plan: ${t.add} to add, ${t.change} to change, ${t.restart} to restart${t.uncertain ? ` (${t.uncertain} decided only during apply)` : ''}${t.failedHosts ? `; ${t.failedHosts} host(s) failed` : ''}.`,
    )
  } else {
    lines.push('Recap:')
    for (const h of report.hosts) {
      const count = (s: TaskReport['status']) => h.tasks.filter((x) => x.status === s).length
      const status = h.status === 'failed' ? p.red('failed') : h.status === 'changed' ? p.yellow('changed') : p.green('ok')
      lines.push(
        `  ${h.host.padEnd(20)} ${status.padEnd(options.color ? 16 : 7)} ok=${count('ok')} changed=${count('changed')} failed=${count('failed')} skipped=${count('skipped')}  ${seconds(h.durationMs)}`,
      )
    }
    if (report.mode === 'apply')
      lines.push(
        `Applied: ${t.add} added, ${t.change} changed, ${t.restart} restarted${t.failedHosts ? `; ${t.failedHosts} host(s) failed` : ''}.`,
      )
    if (report.mode === 'check') {
      const checks = report.hosts.flatMap((h) => h.tasks.flatMap((x) => x.checks))
      const failed = checks.filter((c) => !c.ok && !c.warning).length
      const warned = checks.filter((c) => c.warning).length
      lines.push(
        `Checks: ${checks.length - failed - warned} passed, ${failed} failed${warned ? `, ${warned} warning(s)` : ''}${t.failedHosts ? `; ${t.failedHosts} host(s) failed` : ''}.`,
      )
    }
  }
  lines.push(`Finished in ${seconds(report.durationMs)}.`)
  return maskSecrets(lines.join('\n')) + '\n'
}

/** --json: the same report object, secrets masked (Secret.toJSON prints the mask; text is scanned too). */
export function renderJson(report: RunReport): string {
  // Masked before serialising: JSON escapes a secret with a quote or backslash beyond maskSecrets' reach.
  return maskJson(report, 2) + '\n'
}

/** `provision rollback`: what was decided, and the steps done in order. */
export function renderRollback(r: { host: string; ok: boolean; message: string; change?: Change }, options: { color: boolean }): string {
  const p = paint(options.color)
  const lines = [`${p.bold(r.host)}: ${r.ok ? p.green(r.message) : p.red(r.message)}`]
  if (r.change) lines.push(...renderSteps(r.change, p))
  return maskSecrets(lines.join('\n')) + '\n'
}
