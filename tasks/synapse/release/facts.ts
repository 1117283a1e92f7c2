/** What the release reads of a host: the venvs and the link, the record of the last switch, the schemas of code and database. */
import { defineFact } from '../../../src/facts/fact.js'
import { sh } from '../../../src/core/shell.js'
import { HOMESERVER_YAML, SYNAPSE_CONF_D, SYNAPSE_PYTHON, VENV_LINK } from '../../../src/synapse/paths.js'
import type { DatabaseSchema } from '../schema-compat.js'
import { codeSchemaCommand, databaseSchemaCommand, parseCodeSchema, parseDatabaseSchema } from '../schema-probe.js'
import { RELEASE_STATE, type ReleaseRecord } from '../switch.js'

export interface ReleaseState {
  /** /opt/venvs/matrix-synapse: a symlink (to this name), a plain directory (the old layout), or nothing. */
  link: { kind: 'link'; target: string } | { kind: 'dir' } | { kind: 'none' }
  /** Version of the code behind /opt/venvs/matrix-synapse, if any. */
  active?: string
  /** Versioned venvs present, newest first (by mtime). */
  venvs: { path: string; mtime: number }[]
  record?: ReleaseRecord
  /** KiB free where backups go (the nearest existing directory). */
  backupFreeKiB: number
  /** Dumps already in the backup directory, newest first (names are never reused). */
  dumps: string[]
  /** Each dump's modification time (seconds), for pruning the oldest. */
  dumpTimes: Map<string, number>
}

export function parseReleaseState(out: string): ReleaseState {
  const s: ReleaseState = { link: { kind: 'none' }, venvs: [], backupFreeKiB: 0, dumps: [], dumpTimes: new Map() }
  for (const line of out.split('\n')) {
    const [key, ...rest] = line.split(' ')
    const value = rest.join(' ')
    if (key === 'link') s.link = { kind: 'link', target: value }
    else if (key === 'dir') s.link = { kind: 'dir' }
    else if (key === 'active' && value) s.active = value
    else if (key === 'venv') s.venvs.push({ mtime: Number(rest[0]), path: rest[1]! })
    else if (key === 'record') s.record = JSON.parse(value) as ReleaseRecord
    else if (key === 'free') s.backupFreeKiB = Number(value)
    else if (key === 'dump') {
      // "dump <mtime> <path>" (an older probe printed the path alone)
      const m = /^(\d+) (\/.*)$/.exec(value)
      s.dumps.push(m ? m[2]! : value)
      s.dumpTimes.set(m ? m[2]! : value, m ? Number(m[1]) : 0)
    }
  }
  s.venvs.sort((a, b) => b.mtime - a.mtime)
  s.dumps.sort((a, b) => s.dumpTimes.get(b)! - s.dumpTimes.get(a)!)
  return s
}

export function releaseStateFact(backupDir: string) {
  const v = VENV_LINK
  const b = backupDir
  return defineFact(
    `synapse-release:${backupDir}`,
    sh`if [ -L ${v} ]; then echo "link $(readlink ${v})"; elif [ -d ${v} ]; then echo dir; fi; for d in ${v}-*; do [ -d "$d" ] && [ ! -L "$d" ] && echo "venv $(stat -c %Y "$d") $d"; done; [ -x ${SYNAPSE_PYTHON} ] && echo "active $(${SYNAPSE_PYTHON} -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null)"; [ -f ${RELEASE_STATE} ] && echo "record $(tr -d '\\n' < ${RELEASE_STATE})"; d=${b}; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; echo "free $(df -Pk "$d" | awk 'NR==2{print $4}')"; for f in ${b}/*.dump; do [ -f "$f" ] && echo "dump $(stat -c %Y "$f") $f"; done; true`,
    (out) => parseReleaseState(out),
  )
}

/** The schema rules of the code in a venv (null when that venv does not exist). */
export function codeSchemaFact(venv: string) {
  const py = `${venv}/bin/python`
  return defineFact(`synapse-code-schema:${venv}`, sh`if [ -x ${py} ]; then ${codeSchemaCommand(py)}; else echo null; fi`, (out, code) => {
    if (code !== 0) return { error: out.trim().slice(-300) || `exit ${code}` }
    return out.trim() === 'null' ? null : parseCodeSchema(out)
  })
}

/** The database's schema state, read with the active venv and the live config (null: no schema yet). */
export const databaseSchemaFact = defineFact(
  'synapse-database-schema',
  sh`if [ -x ${SYNAPSE_PYTHON} ] && [ -f ${HOMESERVER_YAML} ]; then ${databaseSchemaCommand(SYNAPSE_PYTHON, HOMESERVER_YAML, SYNAPSE_CONF_D)} 2>&1; else echo null; fi`,
  (out, code): DatabaseSchema | null | { error: string } => {
    if (code !== 0) return { error: out.trim().split('\n').slice(-2).join(' ') || `exit ${code}` }
    try {
      return parseDatabaseSchema(out)
    } catch {
      return { error: out.trim().slice(-300) }
    }
  },
)

export const isError = (v: unknown): v is { error: string } => typeof v === 'object' && v !== null && 'error' in v

/**
 * The pre-upgrade dumps to remove after a version change: the oldest beyond `keep`, counting the one
 * this change writes (`planned`) as the newest. Never `protect` (the dump the switch record names for
 * rollback) nor anything but this tool's synapse-<from>-before-<to>[.N].dump.
 */
export function dumpsToPrune(
  s: Pick<ReleaseState, 'dumps' | 'dumpTimes'>,
  keep: number,
  planned: string | undefined,
  protect: (string | undefined)[],
): string[] {
  const ours = s.dumps
    .filter((d) => /\/synapse-[^/]+-before-[^/]+?(\.\d+)?\.dump$/.test(d) && d !== planned)
    .sort((a, b) => (s.dumpTimes.get(b) ?? 0) - (s.dumpTimes.get(a) ?? 0) || b.localeCompare(a))
  const kept = keep - (planned ? 1 : 0)
  return ours.slice(Math.max(0, kept)).filter((d) => !protect.includes(d))
}

/** Name of the dump before upgrading from -> to; never an existing one. */
export function dumpPath(backupDir: string, from: string, to: string, existing: string[]): string {
  const base = `${backupDir}/synapse-${from}-before-${to}`
  for (let n = 1; ; n++) {
    const p = n === 1 ? `${base}.dump` : `${base}.${n}.dump`
    if (!existing.includes(p)) return p
  }
}
