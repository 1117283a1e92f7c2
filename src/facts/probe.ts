import type { Connection } from '../ssh/connection.js'
import { RemoteCommandError } from '../ssh/connection.js'
import { FactValues, type Fact } from './fact.js'

const BEGIN = '@@MP-FACT'
const END = '@@MP-END'

/** The one shell script that gathers many facts: each fact's output framed by markers, with its exit code. */
export function probeScript(facts: readonly Fact<unknown>[]): string {
  return facts
    .map((f, i) => `printf '%s\\n' '${BEGIN} ${i}'; ( ${f.command} ) </dev/null 2>/dev/null; rc=$?; printf '\\n%s %s\\n' '${END} ${i}' "$rc"`)
    .join('\n')
}

/** Split the probe's output back into each fact's stdout and exit code. */
export function parseProbeOutput(stdout: string, count: number): { stdout: string; code: number }[] {
  const out: { stdout: string; code: number }[] = []
  let pos = 0
  for (let i = 0; i < count; i++) {
    const begin = `${BEGIN} ${i}\n`
    const start = stdout.indexOf(begin, pos)
    if (start < 0) throw new Error(`fact probe output ended before fact ${i}`)
    const bodyStart = start + begin.length
    const endMarker = `\n${END} ${i} `
    const end = stdout.indexOf(endMarker, bodyStart)
    if (end < 0) throw new Error(`fact probe output is missing the end of fact ${i}`)
    const lineEnd = stdout.indexOf('\n', end + endMarker.length)
    const code = Number(stdout.slice(end + endMarker.length, lineEnd < 0 ? undefined : lineEnd))
    out.push({ stdout: stdout.slice(bodyStart, end), code })
    pos = lineEnd < 0 ? stdout.length : lineEnd
  }
  return out
}

/** Gather facts in ONE round trip (deduplicated by id). The script is read-only by contract. */
export async function gatherFacts(conn: Connection, facts: readonly Fact<unknown>[], into = new FactValues()): Promise<FactValues> {
  const unique = [...new Map(facts.filter((f) => !into.has(f)).map((f) => [f.id, f])).values()]
  if (unique.length === 0) return into
  // The script travels on stdin: it can be long, and `sh -s` keeps it off the process list.
  const result = await conn.run('sh -s', { stdin: probeScript(unique), secretOutput: unique.some((f) => f.sensitive) })
  if (result.code === null || result.timedOut) throw new RemoteCommandError(conn.host, { ...result, command: `fact probe (${unique.length} facts)` }, 'gathering facts')
  const parts = parseProbeOutput(result.stdout, unique.length)
  unique.forEach((fact, i) => into.set(fact.id, fact.parse(parts[i]!.stdout, parts[i]!.code)))
  return into
}
