/**
 * Prometheus text exposition format (version 0.0.4), as Synapse's metrics listener serves it: one
 * sample a line, `name{label="value",...} value [timestamp]`; `#` lines are HELP/TYPE comments.
 */
export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/

/** Parse an exposition; lines that are not samples are skipped, a malformed sample line throws with its number. */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim()
    if (line === '' || line.startsWith('#')) continue
    const sample = parseSampleLine(line)
    if (!sample) throw new Error(`metrics line ${i + 1} is not a Prometheus sample: ${line.slice(0, 120)}`)
    samples.push(sample)
  }
  return samples
}

function parseSampleLine(line: string): Sample | undefined {
  const name = NAME.exec(line)?.[0]
  if (!name) return undefined
  let pos = name.length
  const labels: Record<string, string> = {}
  if (line[pos] === '{') {
    pos++
    while (line[pos] !== '}') {
      if (pos >= line.length) return undefined
      const key = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"/.exec(line.slice(pos))
      if (!key) return undefined
      pos += key[0].length
      let value = ''
      for (;;) {
        const c = line[pos++]
        if (c === undefined) return undefined
        if (c === '"') break
        if (c === '\\') {
          const e = line[pos++]
          value += e === 'n' ? '\n' : (e ?? '')
        } else value += c
      }
      labels[key[1]!] = value
      const sep = /^\s*,?\s*/.exec(line.slice(pos))!
      pos += sep[0].length
    }
    pos++
  }
  const rest = line.slice(pos).trim().split(/\s+/)
  const value = parseValue(rest[0] ?? '')
  if (value === undefined) return undefined
  return { name, labels, value }
}

function parseValue(text: string): number | undefined {
  if (text === '+Inf') return Infinity
  if (text === '-Inf') return -Infinity
  if (text === 'NaN') return NaN
  if (text === '' || !/^[-+0-9.eE]+$/.test(text)) return undefined
  const n = Number(text)
  return Number.isNaN(n) ? undefined : n
}

/** Samples of one metric whose labels include all of `match` (a RegExp matches the label's whole value). */
export function select(samples: Sample[], name: string, match: Record<string, string | RegExp> = {}): Sample[] {
  return samples.filter(
    (s) =>
      s.name === name &&
      Object.entries(match).every(([k, want]) => {
        const have = s.labels[k]
        if (have === undefined) return false
        return typeof want === 'string' ? have === want : new RegExp(`^(?:${want.source})$`).test(have)
      }),
  )
}

export function sum(samples: Sample[]): number {
  return samples.reduce((a, s) => a + s.value, 0)
}
