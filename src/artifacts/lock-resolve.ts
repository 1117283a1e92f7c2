import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { controller$ } from './controller-shell.js'
import { lockCommand, lockPath, parseLock, renderLockHeader, SYNAPSE_EXTRAS, type SynapseLock } from '../synapse/lock/lock-file.js'
import { synapseRelease } from './release-date.js'
import { ensureUv, UV_VERSION } from './uv.js'

/**
 * The oldest Python a lock covers: Debian 11's 3.9, the oldest system a homeserver is moved away from
 * (`provision move`) or a stand-in runs; newer ones are covered by markers.
 */
export const LOCK_MIN_PYTHON = '3.9'

/**
 * The lock's Python lower bound: the release's own Requires-Python lower bound (1.141.0: `>=3.9.0`,
 * 1.142.0+: `>=3.10.0`), never below LOCK_MIN_PYTHON. Resolving for a lower bound than the release
 * allows fails; resolving for a higher one pins packages (pillow 12) the older Pythons cannot install.
 */
export function lockPythonFloor(requiresPython: string | undefined): string {
  const bound = /(?:^|,)\s*>=\s*(\d+)\.(\d+)/.exec(requiresPython ?? '')
  const [, major, minor] = bound ?? []
  const floor = LOCK_MIN_PYTHON.split('.').map(Number) as [number, number]
  if (major === undefined || minor === undefined) return LOCK_MIN_PYTHON
  return Number(major) > floor[0] || (Number(major) === floor[0] && Number(minor) > floor[1]) ? `${major}.${minor}` : LOCK_MIN_PYTHON
}
export const DEFAULT_INDEX = 'https://pypi.org/simple'

export interface ResolveOptions {
  synapseVersion: string
  lockDir: string
  /** For the header's regenerate line. */
  inventoryFile: string
  /** Controller tool cache (uv lives there). */
  cacheDir: string
  indexUrl?: string
  /** Override the cutoff (default: the release's last upload to PyPI). */
  asOf?: Date
  log?: (line: string) => void
}

export interface ResolveResult {
  file: string
  lock: SynapseLock
  /** False when the file already held exactly this resolution. */
  changed: boolean
  durationMs: number
}

/** An ISO timestamp rounded up to the second (uv's --exclude-newer takes RFC 3339). */
export function cutoffOf(date: Date): string {
  return new Date(Math.ceil(date.getTime() / 1000) * 1000).toISOString().replace('.000Z', 'Z')
}

/**
 * Resolve matrix-synapse[postgres,redis]==V and all its dependencies as they stood when V was
 * released (uv pip compile --universal --exclude-newer), with hashes, and write <lockDir>/<V>.txt.
 */
export async function resolveLock(opts: ResolveOptions): Promise<ResolveResult> {
  const started = Date.now()
  const log = opts.log ?? (() => undefined)
  const release = await synapseRelease(opts.synapseVersion)
  const asOf = cutoffOf(opts.asOf ?? release.time)
  const python = lockPythonFloor(release.requiresPython)
  const uv = await ensureUv(opts.cacheDir, log)
  const requirement = `matrix-synapse[${SYNAPSE_EXTRAS.join(',')}]==${opts.synapseVersion}`
  const index = opts.indexUrl ?? DEFAULT_INDEX
  const args = [
    'pip',
    'compile',
    '--universal',
    '--python-version',
    python,
    '--generate-hashes',
    '--exclude-newer',
    asOf,
    '--no-header',
    '--annotation-style',
    'line',
    '--no-config',
    '--no-python-downloads',
    '--index-url',
    index,
    '--quiet',
    '-',
  ]
  log(`resolving ${requirement} as of ${asOf} with uv ${UV_VERSION}`)
  const $ = await controller$({ input: requirement + '\n', env: { ...process.env, UV_NO_PROGRESS: '1' } })
  const { stdout } = await $`${uv} ${args}`
  const text =
    renderLockHeader({
      synapseVersion: opts.synapseVersion,
      requirement,
      resolvedAsOf: asOf,
      python: `>=${python}`,
      resolver: `uv ${UV_VERSION} pip compile --universal --python-version ${python} --generate-hashes --exclude-newer ${asOf}`,
      index,
      regenerate: lockCommand('INVENTORY', opts.synapseVersion),
    }) +
    stdout.replace(/\s+$/, '') +
    '\n'
  const file = lockPath(opts.lockDir, opts.synapseVersion)
  const lock = parseLock(text, file, opts.synapseVersion)
  const before = await readFile(file, 'utf8').catch(() => undefined)
  const changed = before !== text
  if (changed) {
    await mkdir(dirname(file), { recursive: true })
    await writeFile(`${file}.tmp`, text)
    await rename(`${file}.tmp`, file)
  }
  return { file, lock, changed, durationMs: Date.now() - started }
}
