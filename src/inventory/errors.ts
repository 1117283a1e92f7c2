/** One problem found in an inventory, positioned at the YAML node that causes it (1-based line and column). */
export interface InventoryIssue {
  /** Inventory file as given to the loader. */
  file: string
  line: number
  col: number
  /** Dotted path of the offending value, e.g. `hosts.matrix1.ssh.port` (empty for file-level problems). */
  path: string
  /** What is wrong and what is allowed. */
  message: string
  /** How to fix it, when there is more to say than the message. */
  hint?: string
}

/** Every bad inventory ends in this error; `issues` holds all problems found, sorted by position. */
export class InventoryError extends Error {
  readonly issues: InventoryIssue[]

  constructor(issues: InventoryIssue[]) {
    const sorted = sortIssues(issues)
    super(formatIssues(sorted))
    this.name = 'InventoryError'
    this.issues = sorted
  }
}

export function isInventoryError(value: unknown): value is InventoryError {
  return value instanceof InventoryError
}

function sortIssues(issues: InventoryIssue[]): InventoryIssue[] {
  const seen = new Set<string>()
  const unique: InventoryIssue[] = []
  for (const issue of issues) {
    const key = `${issue.file}\u0000${issue.line}\u0000${issue.col}\u0000${issue.path}\u0000${issue.message}`
    if (seen.has(key)) continue
    seen.add(key)
    unique.push(issue)
  }
  return unique.sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line || a.col - b.col)
}

/**
 * Compiler-style text, one issue per line, each followed by its hint:
 *
 *     prod.yaml:12:5: hosts.matrix1.ssh.port: expected an integer between 1 and 65535, got "abc"
 *       hint: ...
 */
export function formatIssues(issues: readonly InventoryIssue[]): string {
  return issues
    .map((issue) => {
      const where = `${issue.file}:${issue.line}:${issue.col}`
      const head = issue.path ? `${where}: ${issue.path}: ${issue.message}` : `${where}: ${issue.message}`
      return issue.hint ? `${head}\n  hint: ${issue.hint}` : head
    })
    .join('\n')
}

/** Dotted path: `hosts.matrix1.roles[2]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = ''
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`
    else out += out ? `.${String(segment)}` : String(segment)
  }
  return out
}

/** Edit distance (insertions, deletions, substitutions, adjacent transpositions). */
export function levenshtein(a: string, b: string): number {
  const rows = a.length + 1
  const cols = b.length + 1
  const d: number[][] = Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)))
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      const row = d[i]!
      const prev = d[i - 1]!
      let best = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1)
      row[j] = best
    }
  }
  return d[a.length]![b.length]!
}

/**
 * The closest allowed word: edit distance <= 2 (case-insensitive), or one word is a prefix of the
 * other (at least 3 characters shared). Undefined when nothing is close.
 */
export function closestMatch(word: string, candidates: readonly string[]): string | undefined {
  const lower = word.toLowerCase()
  let best: { candidate: string; score: number } | undefined
  for (const candidate of candidates) {
    const other = candidate.toLowerCase()
    let score = levenshtein(lower, other)
    if (score > 2) {
      const shared = Math.min(lower.length, other.length)
      if (shared >= 3 && (other.startsWith(lower) || lower.startsWith(other))) score = 3
      else continue
    }
    if (!best || score < best.score) best = { candidate, score }
  }
  return best?.candidate
}

/** `did you mean "address"?` or `allowed: a, b, c` */
export function suggestion(word: string, candidates: readonly string[], allowedLabel = 'allowed'): string {
  const close = closestMatch(word, candidates)
  if (close !== undefined) return `did you mean "${close}"?`
  return `${allowedLabel}: ${candidates.join(', ')}`
}

/** A value as it appears in messages: strings quoted (newlines escaped), long ones cut. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing'
  if (value === null) return 'null (an empty value)'
  if (typeof value === 'string') {
    const shown = value.length > 80 ? `${value.slice(0, 77)}...` : value
    return JSON.stringify(shown)
  }
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value)
  if (Array.isArray(value)) return value.length === 0 ? 'an empty list' : 'a list'
  if (typeof value === 'object') return Object.keys(value).length === 0 ? 'an empty mapping' : 'a mapping'
  return typeof value
}

/** Schema messages carry their hint after this separator; the loader splits them apart. */
const HINT_SEPARATOR = '\u0000hint\u0000'

export function withHint(message: string, hint: string): string {
  return `${message}${HINT_SEPARATOR}${hint}`
}

export function splitHint(text: string): { message: string; hint?: string } {
  const at = text.indexOf(HINT_SEPARATOR)
  if (at < 0) return { message: text }
  return { message: text.slice(0, at), hint: text.slice(at + HINT_SEPARATOR.length) }
}
