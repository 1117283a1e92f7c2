/**
 * PEP 508 environment markers, as a universal lock writes them (`python_full_version >= '3.11'`,
 * `platform_python_implementation == 'PyPy'`, `and`/`or`, parentheses). Evaluated here on the
 * controller for a target host: pip's `download --python-version` evaluates markers against the
 * controller's own interpreter, and drift detection must know which locked lines apply to a venv.
 */

/** The marker variables of a target interpreter (CPython on Linux for every host we provision). */
export type MarkerEnvironment = Record<string, string>

/** A CPython on x86_64 Linux of this version ("3.11" or "3.11.2"). */
export function targetEnvironment(pythonVersion: string, machine = 'x86_64'): MarkerEnvironment {
  const parts = pythonVersion.split('.')
  const full = parts.length >= 3 ? pythonVersion : `${parts[0]}.${parts[1]}.0`
  return {
    python_version: `${parts[0]}.${parts[1]}`,
    python_full_version: full,
    implementation_version: full,
    implementation_name: 'cpython',
    platform_python_implementation: 'CPython',
    sys_platform: 'linux',
    os_name: 'posix',
    platform_system: 'Linux',
    platform_machine: machine,
    extra: '',
  }
}

export class MarkerError extends Error {
  constructor(marker: string, reason: string) {
    super(`cannot read the environment marker "${marker}": ${reason}`)
    this.name = 'MarkerError'
  }
}

type Token = { kind: 'var' | 'str' | 'op' | 'and' | 'or' | 'lp' | 'rp'; text: string }

const VARIABLES = new Set([
  'python_version',
  'python_full_version',
  'implementation_version',
  'implementation_name',
  'platform_python_implementation',
  'sys_platform',
  'os_name',
  'platform_system',
  'platform_machine',
  'platform_release',
  'platform_version',
  'extra',
])

function tokenize(marker: string): Token[] {
  const tokens: Token[] = []
  const re = /\s*(?:(\()|(\))|('[^']*'|"[^"]*")|(===|==|!=|<=|>=|~=|<|>|not\s+in\b|in\b)|(and\b)|(or\b)|([a-z_.]+))/y
  let at = 0
  while (at < marker.length) {
    if (/^\s*$/.test(marker.slice(at))) break
    re.lastIndex = at
    const m = re.exec(marker)
    if (!m) throw new MarkerError(marker, `unexpected text at "${marker.slice(at).trim()}"`)
    at = re.lastIndex
    if (m[1]) tokens.push({ kind: 'lp', text: '(' })
    else if (m[2]) tokens.push({ kind: 'rp', text: ')' })
    else if (m[3]) tokens.push({ kind: 'str', text: m[3].slice(1, -1) })
    else if (m[4]) tokens.push({ kind: 'op', text: m[4].replace(/\s+/, ' ') })
    else if (m[5]) tokens.push({ kind: 'and', text: 'and' })
    else if (m[6]) tokens.push({ kind: 'or', text: 'or' })
    else if (m[7]) {
      const name = m[7] === 'os.name' ? 'os_name' : m[7] === 'sys.platform' ? 'sys_platform' : m[7].replace(/^platform\./, 'platform_')
      if (!VARIABLES.has(name)) throw new MarkerError(marker, `unknown variable ${m[7]}`)
      tokens.push({ kind: 'var', text: name })
    }
  }
  return tokens
}

// Not compat.ts's compareVersions: that reads Synapse's major.minor[.patch]; PEP 440 pads any segment count ('4' is 4.0.0).
/** Release segments of a PEP 440 version, for the comparisons markers make on Python versions. */
function release(version: string): number[] {
  const m = /^v?(\d+(?:\.\d+)*)/.exec(version.trim())
  return m ? m[1]!.split('.').map(Number) : []
}

function compareVersions(a: string, b: string): number {
  const x = release(a)
  const y = release(b)
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0)
    if (d !== 0) return Math.sign(d)
  }
  return 0
}

const VERSION_VARIABLES = new Set(['python_version', 'python_full_version', 'implementation_version'])

function compare(left: string, op: string, right: string, versions: boolean): boolean {
  if (op === 'in') return right.includes(left)
  if (op === 'not in') return !right.includes(left)
  if (op === '===') return left === right
  if (!versions) {
    if (op === '==') return left === right
    if (op === '!=') return left !== right
  }
  const c = compareVersions(left, right)
  switch (op) {
    case '==':
      return right.endsWith('.*') ? release(left).slice(0, release(right).length).join('.') === release(right).join('.') : c === 0
    case '!=':
      return c !== 0
    case '<':
      return c < 0
    case '<=':
      return c <= 0
    case '>':
      return c > 0
    case '>=':
      return c >= 0
    case '~=': {
      const r = release(right)
      const prefix = r.slice(0, Math.max(1, r.length - 1))
      return c >= 0 && release(left).slice(0, prefix.length).join('.') === prefix.join('.')
    }
  }
  return false
}

/** Does the marker hold in this environment? An empty marker always does. Throws MarkerError on text it cannot read. */
export function evaluateMarker(marker: string | undefined, env: MarkerEnvironment): boolean {
  if (!marker || !marker.trim()) return true
  const tokens = tokenize(marker)
  let i = 0
  const peek = () => tokens[i]
  const value = (): { text: string; variable?: string } => {
    const t = tokens[i++]
    if (!t || (t.kind !== 'var' && t.kind !== 'str')) throw new MarkerError(marker, 'expected a variable or a quoted string')
    return t.kind === 'var' ? { text: env[t.text] ?? '', variable: t.text } : { text: t.text }
  }
  const atom = (): boolean => {
    if (peek()?.kind === 'lp') {
      i++
      const result = or()
      if (tokens[i++]?.kind !== 'rp') throw new MarkerError(marker, 'unbalanced parentheses')
      return result
    }
    const left = value()
    const op = tokens[i++]
    if (!op || op.kind !== 'op') throw new MarkerError(marker, 'expected a comparison operator')
    const right = value()
    const versions = [left.variable, right.variable].some((v) => v !== undefined && VERSION_VARIABLES.has(v))
    return compare(left.text, op.text, right.text, versions)
  }
  const and = (): boolean => {
    let result = atom()
    while (peek()?.kind === 'and') {
      i++
      result = atom() && result
    }
    return result
  }
  const or = (): boolean => {
    let result = and()
    while (peek()?.kind === 'or') {
      i++
      result = and() || result
    }
    return result
  }
  const result = or()
  if (i !== tokens.length) throw new MarkerError(marker, `unexpected "${tokens[i]!.text}"`)
  return result
}
