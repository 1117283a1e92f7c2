import { createHash } from 'node:crypto'
import { copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { wheelNameVersion } from '../synapse/lock/drift.js'
import { entriesFor, type LockEntry, type SynapseLock } from '../synapse/lock/lock-file.js'
import { targetEnvironment } from '../synapse/lock/markers.js'
import {
  WHEELHOUSE_MANIFEST,
  WHEELHOUSE_REQUIREMENTS,
  type WheelhouseManifest,
  wheelhouseRequirements,
} from '../synapse/lock/wheelhouse-manifest.js'
import { withCacheLock } from './cache-lock.js'
import { controller$, isCommandFailure } from './controller-shell.js'

/**
 * A wheelhouse: the wheels (never sdists: target hosts have no compiler) of exactly the locked set a
 * Synapse lock gives for one target Python, from which a host installs offline into its venv with
 *   pip install --no-index --find-links <dir> --no-deps --require-hashes -r <dir>/requirements.txt
 * Built on the controller with `pip download --no-deps --require-hashes --only-binary=:all:` of each
 * locked pin for the target's Python and glibc; what PyPI has only as an sdist (psycopg2: PyPI has no
 * Linux wheels of it) is downloaded hash-checked and built here with `pip wheel`, linked to the
 * host's libpq5 (like the Debian package of Synapse); that needs an interpreter of the target's
 * Python version, pg_config and a C compiler. requirements.txt pins every wheel by its own sha256.
 */

export interface WheelhouseOptions {
  /** The lock to build from: the wheelhouse holds exactly its lines for this Python. */
  lock: SynapseLock
  /** The target's Python, e.g. '3.11' (bookworm) or '3.13' (trixie); '3.9.2' gives pip the exact release (see pipPythonVersion). */
  pythonVersion: string
  cacheDir: string
  log?: (line: string) => void
  /** The target's glibc, e.g. '2.36'; defaults to the Debian/Ubuntu release that ships pythonVersion. */
  glibc?: string
  /** Interpreter to build sdists with; default: python<pythonVersion> from PATH, pyenv or /usr/bin. */
  python?: string
}

export interface Wheelhouse {
  dir: string
  synapseVersion: string
  /** Wheel file names in dir (sorted). */
  files: string[]
  /** Wheels that were built on the controller from sdists. */
  builtFromSource: string[]
  /** True when an existing complete wheelhouse was used as it was. */
  reused: boolean
  /** Total size of the wheels in bytes. */
  bytes: number
}

const MANIFEST_SCHEMA = 2

/** glibc of the distribution that ships each Python as its python3 (bullseye, jammy, bookworm, noble, trixie). */
const GLIBC_FOR_PYTHON: Record<string, string> = { '3.9': '2.31', '3.10': '2.35', '3.11': '2.36', '3.12': '2.39', '3.13': '2.41' }

/**
 * The Python release pip evaluates Requires-Python against. `--python-version 3.9` means 3.9.0, and
 * cryptography 46 says `!=3.9.0,!=3.9.1`: pip then finds no wheel and builds it from source. So 3.9
 * is Debian 11's 3.9.2; other minors stay as given (no pin excludes their .0).
 */
const PIP_PYTHON_FOR_MINOR: Record<string, string> = { '3.9': '3.9.2' }

/** '3.9.2' -> '3.9': the minor a wheelhouse, its markers and its directory are named by. */
export function pythonMinor(pythonVersion: string): string {
  const match = /^(\d+)\.(\d+)(?:\.\d+)?$/.exec(pythonVersion)
  if (!match) throw new Error(`a Python version looks like 3.11 or 3.9.2: ${pythonVersion}`)
  return `${match[1]}.${match[2]}`
}

export function pipPythonVersion(pythonVersion: string): string {
  return pythonVersion.split('.').length >= 3 ? pythonVersion : (PIP_PYTHON_FOR_MINOR[pythonVersion] ?? pythonVersion)
}

export function defaultGlibc(pythonVersion: string): string {
  const minor = pythonMinor(pythonVersion)
  const glibc = GLIBC_FOR_PYTHON[minor]
  if (!glibc) throw new Error(`no default glibc for Python ${minor} (known: ${Object.keys(GLIBC_FOR_PYTHON).join(', ')})`)
  return glibc
}

/**
 * pip's --platform takes exact tags and does not expand manylinux_2_X to older ones, so list every
 * manylinux tag a host with this glibc accepts (plus legacy aliases and linux_x86_64 for the wheels
 * built here). With only `manylinux2014_x86_64`, Synapse's own manylinux_2_28 wheel is not found.
 */
export function platformTags(glibc: string, arch = 'x86_64'): string[] {
  const match = /^2\.(\d+)$/.exec(glibc)
  if (!match) throw new Error(`glibc version must look like 2.NN: ${glibc}`)
  const minor = Number(match[1])
  const tags: string[] = []
  for (let m = minor; m >= 5; m--) tags.push(`manylinux_2_${m}_${arch}`)
  if (minor >= 17) tags.push(`manylinux2014_${arch}`)
  if (minor >= 12) tags.push(`manylinux2010_${arch}`)
  tags.push(`manylinux1_${arch}`, `linux_${arch}`)
  return tags
}

export function wheelhouseDirName(synapseVersion: string, pythonVersion: string, glibc: string, lockDigest: string): string {
  return `synapse-${synapseVersion}-cp${pythonVersion.replace('.', '')}-glibc${glibc}-lock${lockDigest.slice(0, 12)}`
}

/**
 * Is the manifest one for exactly this request, and does every wheel it lists exist with its size?
 * `present` maps file names in the directory to their sizes. Pure, for the reuse decision.
 */
export function checkWheelhouse(
  manifest: unknown,
  expected: { synapseVersion: string; pythonVersion: string; glibc: string; lockDigest: string },
  present: ReadonlyMap<string, number>,
): { complete: true } | { complete: false; reason: string } {
  if (!manifest || typeof manifest !== 'object') return { complete: false, reason: 'no manifest' }
  const m = manifest as Partial<WheelhouseManifest>
  if (m.schema !== MANIFEST_SCHEMA) return { complete: false, reason: `manifest schema ${String(m.schema)} is not ${MANIFEST_SCHEMA}` }
  for (const key of ['synapseVersion', 'pythonVersion', 'glibc', 'lockDigest'] as const) {
    if (m[key] !== expected[key]) return { complete: false, reason: `manifest ${key} is ${String(m[key])}, wanted ${expected[key]}` }
  }
  if (!Array.isArray(m.files) || m.files.length === 0) return { complete: false, reason: 'manifest lists no wheels' }
  if (!m.files.some((f) => f.name.startsWith(`matrix_synapse-${expected.synapseVersion}-`)))
    return { complete: false, reason: 'manifest lists no matrix-synapse wheel' }
  for (const file of [...m.files, { name: WHEELHOUSE_REQUIREMENTS, size: undefined }]) {
    if (file.name !== WHEELHOUSE_REQUIREMENTS && !file.name.endsWith('.whl'))
      return { complete: false, reason: `${file.name} is not a wheel` }
    const size = present.get(file.name)
    if (size === undefined) return { complete: false, reason: `${file.name} is missing` }
    if (file.size !== undefined && size !== file.size)
      return { complete: false, reason: `${file.name} has ${size} bytes, manifest says ${file.size}` }
  }
  return { complete: true }
}

/** The latest release of matrix-synapse according to PyPI's JSON API. */
export async function latestSynapseVersion(): Promise<string> {
  const response = await fetch('https://pypi.org/pypi/matrix-synapse/json', { signal: AbortSignal.timeout(30_000) })
  if (!response.ok) throw new Error(`PyPI answered ${response.status} for matrix-synapse`)
  const body = (await response.json()) as { info?: { version?: unknown } }
  const version = body.info?.version
  if (typeof version !== 'string' || !/^\d+\.\d+\.\d+$/.test(version))
    throw new Error(`PyPI gave no usable version for matrix-synapse: ${String(version)}`)
  return version
}

async function listSizes(dir: string): Promise<Map<string, number>> {
  const sizes = new Map<string, number>()
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const s = await stat(join(dir, name))
    if (s.isFile()) sizes.set(name, s.size)
  }
  return sizes
}

async function readManifest(dir: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(join(dir, WHEELHOUSE_MANIFEST), 'utf8'))
  } catch {
    return undefined
  }
}

function fromManifest(dir: string, m: WheelhouseManifest, reused: boolean): Wheelhouse {
  return {
    dir,
    synapseVersion: m.synapseVersion,
    files: m.files.map((f) => f.name),
    builtFromSource: m.builtFromSource,
    reused,
    bytes: m.files.reduce((sum, f) => sum + f.size, 0),
  }
}

/** An interpreter of exactly `version` with pip, to build sdists for that Python. */
async function findPython(version: string, explicit?: string): Promise<string | undefined> {
  const pyenvRoot = process.env.PYENV_ROOT ?? join(homedir(), '.pyenv')
  const pyenvVersions = await readdir(join(pyenvRoot, 'versions')).catch(() => [] as string[])
  const candidates = [
    ...(explicit ? [explicit] : []),
    `python${version}`,
    ...pyenvVersions
      .filter((v) => v === version || v.startsWith(`${version}.`))
      .sort()
      .reverse()
      .map((v) => join(pyenvRoot, 'versions', v, 'bin', `python${version}`)),
    `/usr/bin/python${version}`,
    'python3',
  ]
  const $ = await controller$()
  for (const candidate of candidates) {
    try {
      const { stdout } = await $`${candidate} -c ${'import sys, pip; print("%d.%d" % sys.version_info[:2])'}`
      if (stdout.trim() === version) return candidate
    } catch {
      // not there, not this version, or without pip: try the next one
    }
  }
  return undefined
}

const BUILD_HINTS: Record<string, string> = {
  psycopg2:
    "psycopg2 builds need pg_config and libpq headers (Debian: libpq-dev), a C compiler (gcc) and the Python headers (python3-dev for Debian's python3; pyenv builds have their own)",
}

/** Name and version specifier of the requirement pip could not find as a wheel, if that is why it failed. */
export function unsatisfiedRequirement(pipOutput: string): string | undefined {
  const line = /No matching distribution found for (.+)$/m.exec(pipOutput)?.[1]
  return line?.split(';')[0]?.trim()
}

export async function buildWheelhouse(given: WheelhouseOptions): Promise<Wheelhouse> {
  const log = given.log ?? (() => undefined)
  const glibc = given.glibc ?? defaultGlibc(given.pythonVersion)
  // The minor names everything; pip alone gets the exact release (downloadWheels).
  const opts = { ...given, pythonVersion: pythonMinor(given.pythonVersion), pipPython: pipPythonVersion(given.pythonVersion) }
  const { lock } = opts
  const synapseVersion = lock.synapseVersion
  const expected = { synapseVersion, pythonVersion: opts.pythonVersion, glibc, lockDigest: lock.digest }
  const dir = join(opts.cacheDir, wheelhouseDirName(synapseVersion, opts.pythonVersion, glibc, lock.digest))

  const existing = await readManifest(dir)
  const check = checkWheelhouse(existing, expected, await listSizes(dir))
  if (check.complete) {
    log(`wheelhouse for matrix-synapse ${synapseVersion} (Python ${opts.pythonVersion}, ${lock.file}) is complete in ${dir}; reusing it`)
    return fromManifest(dir, existing as WheelhouseManifest, true)
  }
  // Another run may be filling the same directory: the first to hold the lock builds, the others reuse it.
  return withCacheLock(`${dir}.lock`, async () => {
    const theirs = await readManifest(dir)
    const now = checkWheelhouse(theirs, expected, await listSizes(dir))
    if (now.complete) {
      log(`wheelhouse for matrix-synapse ${synapseVersion} (Python ${opts.pythonVersion}) was built meanwhile in ${dir}; reusing it`)
      return fromManifest(dir, theirs as WheelhouseManifest, true)
    }
    if (theirs !== undefined) log(`wheelhouse in ${dir} is not reusable: ${now.reason}`)
    return fillWheelhouse(dir, opts, expected, log)
  })
}

async function fillWheelhouse(
  dir: string,
  opts: WheelhouseOptions & { pythonVersion: string; pipPython: string },
  expected: Pick<WheelhouseManifest, 'synapseVersion' | 'pythonVersion' | 'glibc' | 'lockDigest'>,
  log: (line: string) => void,
): Promise<Wheelhouse> {
  const { lock } = opts
  const entries = entriesFor(lock, targetEnvironment(opts.pipPython))
  await mkdir(opts.cacheDir, { recursive: true })
  const staging = await mkdtemp(join(opts.cacheDir, '.wheelhouse-'))
  try {
    const builtFromSource = await downloadWheels(staging, entries, { ...opts, glibc: expected.glibc, log })
    const files: WheelhouseManifest['files'] = []
    const found = new Set<string>()
    for (const name of (await readdir(staging)).sort()) {
      if (!name.endsWith('.whl')) continue
      const nv = wheelNameVersion(name)
      const entry = nv && entries.find((e) => e.name === nv.name && e.version === nv.version)
      if (!entry) throw new Error(`pip left ${name} in the wheelhouse, which ${lock.file} does not pin for Python ${opts.pythonVersion}`)
      found.add(entry.name)
      const content = await readFile(join(staging, name))
      files.push({ name, size: content.length, sha256: createHash('sha256').update(content).digest('hex') })
    }
    const missing = entries.filter((e) => !found.has(e.name))
    if (missing.length)
      throw new Error(
        `no wheel of ${missing.map((e) => `${e.name}==${e.version}`).join(', ')} for Python ${opts.pythonVersion} after pip download`,
      )
    const manifest: WheelhouseManifest = { schema: MANIFEST_SCHEMA, ...expected, lockFile: lock.file, builtFromSource, files }
    await writeFile(join(staging, WHEELHOUSE_REQUIREMENTS), wheelhouseRequirements(files))
    await writeFile(join(staging, WHEELHOUSE_MANIFEST), JSON.stringify(manifest, null, 2) + '\n')
    // Under the lock: what is there is a wheelhouse not reusable (an older manifest, a file missing).
    await rm(dir, { recursive: true, force: true })
    await rename(staging, dir)
    const result = fromManifest(dir, manifest, false)
    log(`wheelhouse ready: ${result.files.length} wheels, ${(result.bytes / 1e6).toFixed(1)} MB in ${dir}`)
    return result
  } finally {
    await rm(staging, { recursive: true, force: true })
  }
}

/** A requirements file of exact pins with their locked hashes (markers already evaluated for the target). */
function pinned(entries: LockEntry[]): string {
  return entries.map((e) => `${e.name}==${e.version} ${e.hashes.map((h) => `--hash=sha256:${h}`).join(' ')}\n`).join('')
}

/**
 * pip download of every locked pin, hash-checked, wheels only; a pin that exists only as an sdist is
 * downloaded hash-checked and built into a wheel here, while the download of the rest is retried
 * (the C build of psycopg2 takes most of a wheelhouse's time: it need not wait for 60 downloads).
 */
async function downloadWheels(
  dest: string,
  entries: LockEntry[],
  opts: WheelhouseOptions & { glibc: string; pipPython: string; log: (line: string) => void },
): Promise<string[]> {
  // Any local pip can download for another Python: --python-version and --platform pick the wheels.
  const host = 'python3'
  const $ = await controller$({ onLine: opts.log })
  const pip = async (python: string, args: string[]) => await $`${python} -m pip --disable-pip-version-check --no-input ${args}`
  const targetArgs = [
    '--only-binary=:all:',
    '--implementation',
    'cp',
    '--python-version',
    opts.pipPython,
    ...platformTags(opts.glibc).flatMap((tag) => ['--platform', tag]),
  ]
  const built: string[] = []
  /** Builds from sdists under way or done, by name: their wheels land in dest beside the downloads. */
  const building = new Map<string, Promise<void>>()
  const settled = async () => {
    const failed = (await Promise.allSettled(building.values())).find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed) throw failed.reason
  }
  for (let attempt = 0; attempt < 6; attempt++) {
    const requirements = join(dest, `.requirements-${attempt}.txt`)
    await writeFile(requirements, pinned(entries.filter((e) => !building.has(e.name))))
    try {
      await pip(host, ['download', '--no-deps', '--require-hashes', ...targetArgs, '--dest', dest, '-r', requirements])
      await settled()
      return built
    } catch (error) {
      const missing = isCommandFailure(error) ? unsatisfiedRequirement(error.stderr + error.stdout) : undefined
      const name = missing?.split(/[<>=!~ []/)[0]?.toLowerCase()
      const entry = entries.find((e) => e.name === name)
      if (!missing || !entry || entry.name === 'matrix-synapse' || building.has(entry.name)) {
        // Nothing may still write into dest (the caller removes it) when the error goes up.
        await settled()
        throw error
      }
      opts.log(
        `${entry.name}==${entry.version} has no wheel for Python ${opts.pythonVersion} on PyPI; building one from its sdist (hash-checked against the lock)`,
      )
      const build = buildFromSdist(dest, entry, opts, pip).then(() => void built.push(entry.name))
      build.catch(() => undefined) // awaited by settled(); never an unhandled rejection meanwhile
      building.set(entry.name, build)
    } finally {
      await rm(requirements, { force: true })
    }
  }
  await settled()
  throw new Error(`pip download kept failing for the lock's pins`)
}

/** One pin's wheel built here from its hash-checked sdist (or the one built before from the same sdist), into dest. */
async function buildFromSdist(
  dest: string,
  entry: LockEntry,
  opts: WheelhouseOptions & { log: (line: string) => void },
  pip: (python: string, args: string[]) => Promise<unknown>,
): Promise<void> {
  const python = await findPython(opts.pythonVersion, opts.python)
  if (!python) {
    throw new Error(
      `${entry.name}==${entry.version} exists on PyPI only as an sdist for Python ${opts.pythonVersion}, and no python${opts.pythonVersion} with pip was found on this controller to build a wheel. Install python${opts.pythonVersion} (with pip) or pass python.`,
    )
  }
  // A wheel built here before from the same locked sdist (same hashes) for the same Python is reused.
  const builtCache = join(
    opts.cacheDir,
    '.built',
    `${entry.name}-${entry.version}-cp${opts.pythonVersion.replace('.', '')}-${createHash('sha256').update(entry.hashes.join(',')).digest('hex').slice(0, 16)}`,
  )
  const cached = (await readdir(builtCache).catch(() => [] as string[])).find((f) => f.endsWith('.whl'))
  if (cached) {
    opts.log(`reusing ${cached}, built here before from the same sdist`)
    await copyFile(join(builtCache, cached), join(dest, cached))
    return
  }
  // Own directories per pin: another pin's build or the download of the rest runs meanwhile.
  const sdists = join(dest, `.sdists-${entry.name}`)
  const wheels = join(dest, `.built-${entry.name}`)
  const requirements = join(dest, `.requirements-${entry.name}.txt`)
  try {
    await writeFile(requirements, pinned([entry]))
    await pip(python, ['download', '--no-deps', '--require-hashes', '--no-binary=:all:', '--dest', sdists, '-r', requirements])
    const [sdist] = await readdir(sdists)
    if (!sdist) throw new Error(`pip downloaded no sdist for ${entry.name}==${entry.version}`)
    // --use-pep517: a python3.9 without the wheel package has no bdist_wheel for setup.py builds (psycopg2).
    await pip(python, ['wheel', '--no-deps', '--use-pep517', '--wheel-dir', wheels, join(sdists, sdist)])
    const [wheel] = (await readdir(wheels)).filter((f) => f.endsWith('.whl'))
    if (!wheel) throw new Error(`pip wheel built no wheel from ${sdist}`)
    // Copied under a temporary name, then renamed: another build never reuses a half-copied wheel.
    await mkdir(builtCache, { recursive: true })
    await copyFile(join(wheels, wheel), join(builtCache, `.${wheel}.${process.pid}`))
    await rename(join(builtCache, `.${wheel}.${process.pid}`), join(builtCache, wheel))
    await rename(join(wheels, wheel), join(dest, wheel))
  } catch (buildError) {
    const hint = BUILD_HINTS[entry.name]
    if (hint && buildError instanceof Error) buildError.message += `\n(${hint})`
    throw buildError
  } finally {
    await Promise.all([sdists, wheels, requirements].map((p) => rm(p, { recursive: true, force: true })))
  }
}
