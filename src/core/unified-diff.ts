import { maskSecrets, MASK } from './secret.js'

/**
 * Lines of `key: value` / `key = value` whose key names a secret, and Redis's `requirepass` / `masterauth`
 * directives (`name value`), get their value masked in sensitive files. The old side of a diff comes from
 * the host: a value the run does not know (e.g. the password before a rotation) is only caught here.
 */
const SECRET_KEY = /^(\s*[-\w."']*(?:password|secret|passwd|token|key)[\w."']*\s*[:=]\s*|\s*(?:requirepass|masterauth)\s+)(.+)$/i

export function maskSensitiveText(text: string): string {
  return maskSecrets(text)
    .split('\n')
    .map((line) => line.replace(SECRET_KEY, (_m, head: string) => `${head}${MASK}`))
    .join('\n')
}

/**
 * A unified diff (3 lines of context) of two texts, computed with an LCS table: config files are small,
 * so O(n*m) is fine and keeps this free of dependencies.
 */
export function unifiedDiff(oldText: string, newText: string, path: string, context = 3): string {
  const a = oldText === '' ? [] : oldText.replace(/\n$/, '').split('\n')
  const b = newText === '' ? [] : newText.replace(/\n$/, '').split('\n')
  const n = a.length
  const m = b.length
  if (n * m > 4_000_000) return `--- ${path}\n+++ ${path}\n@@ file too large for a line diff (${n} -> ${m} lines) @@\n`
  const lcs: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1))
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!)
  }
  type Op = { kind: ' ' | '-' | '+'; text: string; ai: number; bi: number }
  const ops: Op[] = []
  let i = 0
  let j = 0
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) ops.push({ kind: ' ', text: a[i]!, ai: i++, bi: j++ })
    else if (j < m && (i === n || lcs[i]![j + 1]! > lcs[i + 1]![j]!)) ops.push({ kind: '+', text: b[j]!, ai: i, bi: j++ })
    else ops.push({ kind: '-', text: a[i]!, ai: i++, bi: j })
  }
  const changed = ops.map((o, k) => (o.kind !== ' ' ? k : -1)).filter((k) => k >= 0)
  if (changed.length === 0) return ''
  const hunks: [number, number][] = []
  for (const k of changed) {
    const lo = Math.max(0, k - context)
    const hi = Math.min(ops.length - 1, k + context)
    const last = hunks[hunks.length - 1]
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi)
    else hunks.push([lo, hi])
  }
  const out = [`--- ${path}`, `+++ ${path}`]
  for (const [lo, hi] of hunks) {
    const slice = ops.slice(lo, hi + 1)
    const aStart = slice[0]!.ai
    const bStart = slice[0]!.bi
    const aLen = slice.filter((o) => o.kind !== '+').length
    const bLen = slice.filter((o) => o.kind !== '-').length
    out.push(`@@ -${aLen ? aStart + 1 : aStart},${aLen} +${bLen ? bStart + 1 : bStart},${bLen} @@`)
    for (const o of slice) out.push(`${o.kind}${o.text}`)
  }
  return out.join('\n') + '\n'
}
