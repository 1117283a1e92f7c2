import { entriesFor, normalizeName, type SynapseLock } from './lock-file.js'
import { targetEnvironment } from './markers.js'

/**
 * How a venv's installed distributions differ from a lock (pip-sync's view): locked ones missing or at
 * another version, and ones the lock does not have. The venv's own installer tooling is left alone,
 * as pip-sync leaves it.
 */
export const VENV_TOOLING = new Set(['pip', 'setuptools', 'wheel'])

export interface VenvContents {
  /** The venv interpreter's version, e.g. 3.11.2. */
  python: string
  /** Normalized distribution name -> installed version. */
  installed: Map<string, string>
}

export interface LockDrift {
  /** Locked but not installed. */
  missing: { name: string; version: string }[]
  /** Installed at another version than locked. */
  differ: { name: string; installed: string; locked: string }[]
  /** Installed but not in the lock (tooling excepted): removed to match it. */
  extra: { name: string; version: string }[]
}

export function lockDrift(lock: SynapseLock, venv: VenvContents): LockDrift {
  const wanted = entriesFor(lock, targetEnvironment(venv.python))
  const drift: LockDrift = { missing: [], differ: [], extra: [] }
  for (const entry of wanted) {
    const have = venv.installed.get(entry.name)
    if (have === undefined) drift.missing.push({ name: entry.name, version: entry.version })
    else if (have !== entry.version) drift.differ.push({ name: entry.name, installed: have, locked: entry.version })
  }
  const names = new Set(wanted.map((e) => e.name))
  for (const [name, version] of venv.installed) {
    if (!names.has(name) && !(VENV_TOOLING.has(name) && !lock.entries.some((e) => e.name === name))) drift.extra.push({ name, version })
  }
  for (const list of [drift.missing, drift.differ, drift.extra]) list.sort((a, b) => a.name.localeCompare(b.name))
  return drift
}

export function driftCount(d: LockDrift): number {
  return d.missing.length + d.differ.length + d.extra.length
}

/** One plan line's worth: the first few differences, then how many more. */
export function describeDrift(d: LockDrift, max = 4): string {
  const items = [
    ...d.differ.map((x) => `${x.name} ${x.installed} -> ${x.locked}`),
    ...d.missing.map((x) => `+${x.name} ${x.version}`),
    ...d.extra.map((x) => `-${x.name} ${x.version}`),
  ]
  const shown = items.slice(0, max).join(', ')
  return items.length > max ? `${shown} and ${items.length - max} more` : shown
}

/** A unified-diff-like listing of the installed set against the lock, for --diff. */
export function driftDiff(d: LockDrift, venvPath: string, lockFile: string): string {
  const lines = [`--- ${venvPath} (installed)`, `+++ ${lockFile}`]
  for (const x of d.differ) lines.push(`-${x.name}==${x.installed}`, `+${x.name}==${x.locked}`)
  for (const x of d.missing) lines.push(`+${x.name}==${x.version}`)
  for (const x of d.extra) lines.push(`-${x.name}==${x.version}`)
  return lines.join('\n') + '\n'
}

/**
 * The venv fact's output: `python X.Y.Z`, then `name version` per installed distribution (from
 * importlib.metadata: no pip start-up per run). Names are normalized; exit code != 0: no venv.
 */
export function parseVenvContents(stdout: string, exitCode: number): VenvContents | null {
  if (exitCode !== 0) return null
  const lines = stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
  const python = /^python (\d+\.\d+\.\d+)/.exec(lines[0] ?? '')?.[1]
  if (!python) return null
  const installed = new Map<string, string>()
  for (const line of lines.slice(1)) {
    const [name, version] = line.split(/\s+/)
    if (name && version) installed.set(normalizeName(name), version)
  }
  return { python, installed }
}

/** One line: the probe runs facts line by line. */
export const VENV_CONTENTS_SCRIPT =
  'import sys, importlib.metadata as m; print("python %d.%d.%d" % sys.version_info[:3]); [print(d.metadata["Name"], d.version) for d in m.distributions()]'

/** Normalized name of a wheel file and its version: `matrix_synapse-1.163.2-cp310-abi3-....whl`. */
export function wheelNameVersion(file: string): { name: string; version: string } | undefined {
  const m = /^([^-]+)-([^-]+)-.*\.whl$/.exec(file)
  return m ? { name: normalizeName(m[1]!), version: m[2]! } : undefined
}
