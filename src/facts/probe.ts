import type { Connection } from '../ssh/connection.js'
import { RemoteCommandError } from '../ssh/connection.js'
import { sh, type ShellCommand } from '../core/shell.js'
import { FactValues, type Fact, type FactBatch } from './fact.js'

const BEGIN = '@@MP-FACT'
const END = '@@MP-END'

/** One command of the probe: a fact alone, or the facts of a batch that were asked for together. */
interface Section {
  command: ShellCommand | null
  facts: Fact<unknown>[]
  batch?: FactBatch
}

function sections(facts: readonly Fact<unknown>[]): Section[] {
  const out: Section[] = []
  const batches = new Map<string, Section>()
  for (const fact of facts) {
    const batch = fact.batch?.with
    if (!batch) {
      out.push({ command: fact.command, facts: [fact] })
      continue
    }
    const section = batches.get(batch.id) ?? { command: null, facts: [], batch }
    if (!batches.has(batch.id)) out.push(section)
    batches.set(batch.id, section)
    section.facts.push(fact)
  }
  for (const section of batches.values()) {
    if (section.facts.length === 1) {
      section.command = section.facts[0]!.command
      delete section.batch
    } else section.command = section.batch!.command(section.facts.map((f) => f.batch!.item))
  }
  return out
}

/** The one shell script that gathers many facts: each command's output framed by markers, with its exit code. */
export function probeScript(facts: readonly Fact<unknown>[]): string {
  return framed(sections(facts))
}

/**
 * The commands run side by side, each into its own file of a private temporary directory, and are
 * printed in order once all are done: a probe costs its slowest command, not the sum (Synapse's
 * schema and venv probes each start Python, a second or more on a busy host).
 */
function framed(parts: readonly Section[]): string {
  const frames = parts.map(
    (p, i) =>
      `{ printf '%s\\n' '${BEGIN} ${i}'; ( ${p.command!.text} ) </dev/null 2>/dev/null; rc=$?; printf '\\n%s %s\\n' '${END} ${i}' "$rc"; } >"$mp_probe/${i}" &`,
  )
  return [
    `mp_probe=$(mktemp -d) || exit 1; trap 'rm -rf "$mp_probe"' EXIT`,
    ...frames,
    `wait; cd "$mp_probe" && cat ${parts.map((_, i) => i).join(' ')}`,
  ].join('\n')
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

/** A probe ready to send: its script, and how its output becomes fact values. */
export interface Probe {
  script: string
  /** How many facts it reads. */
  count: number
  /** Some fact reads a secret: the output must not be echoed, logged or quoted in an error. */
  sensitive: boolean
  /** Parse the probe's stdout into the FactValues the probe was prepared for. */
  read(stdout: string): FactValues
}

/** The probe of the facts not in `into` yet (deduplicated by id); undefined when there is nothing to ask. */
export function prepareProbe(facts: readonly Fact<unknown>[], into = new FactValues()): Probe | undefined {
  const unique = [...new Map(facts.filter((f) => !into.has(f)).map((f) => [f.id, f])).values()]
  if (unique.length === 0) return undefined
  const plan = sections(unique)
  return {
    script: framed(plan),
    count: unique.length,
    sensitive: unique.some((f) => f.sensitive),
    read(stdout) {
      const parts = parseProbeOutput(stdout, plan.length)
      plan.forEach((section, i) => {
        const part = parts[i]!
        const each = section.batch
          ? section.batch.split(
              part.stdout,
              part.code,
              section.facts.map((f) => f.batch!.item),
            )
          : [part]
        section.facts.forEach((fact, j) => into.set(fact.id, fact.parse(each[j]!.stdout, each[j]!.code)))
      })
      return into
    },
  }
}

/** Gather facts in ONE round trip (deduplicated by id). The script is read-only by contract. */
export async function gatherFacts(conn: Connection, facts: readonly Fact<unknown>[], into = new FactValues()): Promise<FactValues> {
  const probe = prepareProbe(facts, into)
  if (!probe) return into
  // The script travels on stdin: it can be long, and `sh -s` keeps it off the process list.
  const result = await conn.run(sh`sh -s`, { stdin: probe.script, secretOutput: probe.sensitive, allowFailure: true })
  if (result.code === null || result.timedOut)
    throw new RemoteCommandError(conn.host, { ...result, command: `fact probe (${probe.count} facts)` }, 'gathering facts')
  return probe.read(result.stdout)
}
