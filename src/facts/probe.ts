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
  /** Every fact in it is quick (Fact.quick): it runs in turn, not beside the others. */
  quick: boolean
}

/** The probe's sections, the quick ones first: their output comes first, in this order (see framed). */
function sections(facts: readonly Fact<unknown>[]): Section[] {
  const out: Section[] = []
  const batches = new Map<string, Section>()
  for (const fact of facts) {
    const batch = fact.batch?.with
    if (!batch) {
      out.push({ command: fact.command, facts: [fact], quick: fact.quick === true })
      continue
    }
    const section = batches.get(batch.id) ?? { command: null, facts: [], batch, quick: true }
    if (!batches.has(batch.id)) out.push(section)
    batches.set(batch.id, section)
    section.facts.push(fact)
    section.quick &&= fact.quick === true
  }
  for (const section of batches.values()) {
    if (section.facts.length === 1) {
      section.command = section.facts[0]!.command
      delete section.batch
    } else section.command = section.batch!.command(section.facts.map((f) => f.batch!.item))
  }
  return [...out.filter((s) => s.quick), ...out.filter((s) => !s.quick)]
}

/** The one shell script that gathers many facts: each command's output framed by markers, with its exit code. */
export function probeScript(facts: readonly Fact<unknown>[]): string {
  return framed(sections(facts))
}

/** The first and last lines `buffered` puts around a probe (a model of the host strips them: test/unit/fake-host.ts). */
export const BUFFERED_OPEN = 'mp_out=$('
export const BUFFERED_CLOSE = `printf .\n); mp_rc=$?\nprintf '%s' "\${mp_out%.}"; exit $mp_rc`

/**
 * The probe's output leaves the host in one write. Printed as they come, its ~100 small lines became as many SSH
 * packets, each read by sshd, encrypted, sent, then decrypted, parsed and handed on by the controller: a third of a
 * converged run's extra controller time per host (bench/README.md, "sixth pass"). The command substitution keeps the
 * output in the shell (the `.` keeps its trailing newlines); its exit code stays the script's. Output holds no NUL
 * byte (a shell variable cannot): facts print text, and base64 where a file may hold anything.
 */
function buffered(script: string): string {
  return `${BUFFERED_OPEN}\n${script}\n${BUFFERED_CLOSE}`
}

const frame = (command: ShellCommand, i: number) =>
  `printf '%s\\n' '${BEGIN} ${i}'; ( ${command.text} ) </dev/null 2>/dev/null; printf '\\n%s %s\\n' '${END} ${i}' "$?"`

/**
 * Quick commands (a few milliseconds, most of a probe) run one after another, each in a subshell, straight to
 * the output. The others (Synapse's schema and venv probes start Python, a second or more on a busy host; psql;
 * curl) start first, side by side in the background, each into a file of a private temporary directory printed
 * once all are done: a probe costs its slowest command plus the quick ones, not the sum. Running the quick ones
 * in turn costs one process each instead of three (a background job, a subshell and the temporary directory's
 * mktemp, cat and rm): a third of a converged run's probe CPU on the host (bench/README.md, "fifth pass").
 */
function framed(parts: readonly Section[]): string {
  const quick = parts.flatMap((p, i) => (p.quick ? [frame(p.command!, i)] : []))
  const slow = parts.flatMap((p, i) => (p.quick ? [] : [i]))
  if (slow.length === 0) return buffered(quick.join('\n'))
  return buffered(
    [
      `mp_probe=$(mktemp -d) || exit 1; trap 'rm -rf "$mp_probe"' EXIT`,
      ...slow.map((i) => `{ ${frame(parts[i]!.command!, i)}; } >"$mp_probe/${i}" &`),
      ...quick,
      `wait; cd "$mp_probe" && cat ${slow.join(' ')}`,
    ].join('\n'),
  )
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
