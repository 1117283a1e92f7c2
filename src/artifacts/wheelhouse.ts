import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { LocalCommandError, runLocal } from './local-command.js'

/**
 * A wheelhouse: a directory of wheels (never sdists: target hosts have no compiler) from which a host
 * installs Synapse offline into /opt/venvs/matrix-synapse with
 *   pip install --no-index --find-links <dir> --upgrade pip setuptools wheel
 *   pip install --no-index --find-links <dir> <requirements...>
 * Built on the controller with `pip download --only-binary=:all:` for the target's Python and glibc;
 * what PyPI has only as an sdist (psycopg2: PyPI has no Linux wheels of it) is built here with
 * `pip wheel`, which needs an interpreter of the target's Python version, pg_config and a C compiler.
 */

/**
 * Where the `postgres` extra's driver comes from. Synapse's extra requires the distribution `psycopg2`
 * (psycopg2cffi on PyPy), so `psycopg2-binary` never satisfies `matrix-synapse[postgres]`; Synapse
 * itself only does `import psycopg2`, so the binary build works when installed instead of the extra.
 * - source: psycopg2 built from its sdist on the controller, linked to the host's libpq5 (like the
 *   Debian package of Synapse). Needs `python<version>` on the controller.
 * - binary: psycopg2-binary from PyPI (bundles its own libpq and libssl); install without `[postgres]`.
 * - system: Debian's python3-psycopg2 through a venv made with --system-site-packages.
 */
export type PostgresDriver = 'source' | 'binary' | 'system'

export interface WheelhouseOptions {
  /** Pinned matrix-synapse version; unset means the latest release on PyPI. */
  synapseVersion?: string
  /** The target's Python, e.g. '3.11' (bookworm) or '3.13' (trixie). */
  pythonVersion: string
  cacheDir: string
  log?: (line: string) => void
  postgresDriver?: PostgresDriver
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
  /** What the host passes to `pip install --no-index --find-links <dir>` after upgrading pip itself. */
  requirements: string[]
  /** Debian packages the host needs for this wheelhouse (python3-venv, libpq5 or python3-psycopg2). */
  hostPackages: string[]
  /** The venv must be created with `python3 -m venv --system-site-packages` (driver 'system'). */
  systemSitePackages: boolean
  /** Wheels that were built on the controller from sdists. */
  builtFromSource: string[]
  /** True when an existing complete wheelhouse was used as it was. */
  reused: boolean
  /** Total size of the wheels in bytes. */
  bytes: number
}

export const WHEELHOUSE_MANIFEST = 'wheelhouse.json'
const MANIFEST_SCHEMA = 1

export interface WheelhouseManifest {
  schema: number
  synapseVersion: string
  pythonVersion: string
  glibc: string
  postgresDriver: PostgresDriver
  requirements: string[]
  hostPackages: string[]
  systemSitePackages: boolean
  builtFromSource: string[]
  files: { name: string; size: number; sha256: string }[]
}

/** glibc of the distribution that ships each Python as its python3 (bookworm, noble, trixie, jammy). */
const GLIBC_FOR_PYTHON: Record<string, string> = { '3.10': '2.35', '3.11': '2.36', '3.12': '2.39', '3.13': '2.41' }

export function defaultGlibc(pythonVersion: string): string {
  const glibc = GLIBC_FOR_PYTHON[pythonVersion]
  if (!glibc) throw new Error(`no default glibc for Python ${pythonVersion}; pass glibc explicitly`)
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

/** What to download, what the host installs, and which Debian packages it needs, per driver. */
export function wheelhousePlan(synapseVersion: string, driver: PostgresDriver): Pick<WheelhouseManifest, 'requirements' | 'hostPackages' | 'systemSitePackages'> & { download: string[] } {
  const synapse = (extras: string) => `matrix-synapse[${extras}]==${synapseVersion}`
  const tools = ['pip', 'setuptools', 'wheel']
  switch (driver) {
    case 'source':
      return { download: [synapse('postgres,redis'), ...tools], requirements: [synapse('postgres,redis')], hostPackages: ['python3-venv', 'libpq5'], systemSitePackages: false }
    case 'binary':
      return { download: [synapse('redis'), 'psycopg2-binary', ...tools], requirements: [synapse('redis'), 'psycopg2-binary'], hostPackages: ['python3-venv'], systemSitePackages: false }
    case 'system':
      // The venv sees Debian's psycopg2, which satisfies the extra; nothing to download for it.
      return { download: [synapse('redis'), ...tools], requirements: [synapse('postgres,redis')], hostPackages: ['python3-venv', 'python3-psycopg2'], systemSitePackages: true }
  }
}

export function wheelhouseDirName(synapseVersion: string, pythonVersion: string, glibc: string, driver: PostgresDriver): string {
  return `synapse-${synapseVersion}-cp${pythonVersion.replace('.', '')}-glibc${glibc}-${driver}`
}

/**
 * Is the manifest one for exactly this request, and does every wheel it lists exist with its size?
 * `present` maps file names in the directory to their sizes. Pure, for the reuse decision.
 */
export function checkWheelhouse(
  manifest: unknown,
  expected: { synapseVersion: string; pythonVersion: string; glibc: string; postgresDriver: PostgresDriver },
  present: ReadonlyMap<string, number>,
): { complete: true } | { complete: false; reason: string } {
  if (!manifest || typeof manifest !== 'object') return { complete: false, reason: 'no manifest' }
  const m = manifest as Partial<WheelhouseManifest>
  if (m.schema !== MANIFEST_SCHEMA) return { complete: false, reason: `manifest schema ${String(m.schema)} is not ${MANIFEST_SCHEMA}` }
  for (const key of ['synapseVersion', 'pythonVersion', 'glibc', 'postgresDriver'] as const) {
    if (m[key] !== expected[key]) return { complete: false, reason: `manifest ${key} is ${String(m[key])}, wanted ${expected[key]}` }
  }
  if (!Array.isArray(m.files) || m.files.length === 0) return { complete: false, reason: 'manifest lists no wheels' }
  if (!m.files.some((f) => f.name.startsWith(`matrix_synapse-${expected.synapseVersion}-`))) return { complete: false, reason: 'manifest lists no matrix-synapse wheel' }
  for (const file of m.files) {
    if (!file.name.endsWith('.whl')) return { complete: false, reason: `${file.name} is not a wheel` }
    const size = present.get(file.name)
    if (size === undefined) return { complete: false, reason: `${file.name} is missing` }
    if (size !== file.size) return { complete: false, reason: `${file.name} has ${size} bytes, manifest says ${file.size}` }
  }
  return { complete: true }
}

/** The latest release of matrix-synapse according to PyPI's JSON API. */
export async function latestSynapseVersion(): Promise<string> {
  const response = await fetch('https://pypi.org/pypi/matrix-synapse/json', { signal: AbortSignal.timeout(30_000) })
  if (!response.ok) throw new Error(`PyPI answered ${response.status} for matrix-synapse`)
  const body = (await response.json()) as { info?: { version?: unknown } }
  const version = body.info?.version
  if (typeof version !== 'string' || !/^\d+\.\d+\.\d+$/.test(version)) throw new Error(`PyPI gave no usable version for matrix-synapse: ${String(version)}`)
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
    requirements: m.requirements,
    hostPackages: m.hostPackages,
    systemSitePackages: m.systemSitePackages,
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
    ...pyenvVersions.filter((v) => v === version || v.startsWith(`${version}.`)).sort().reverse().map((v) => join(pyenvRoot, 'versions', v, 'bin', `python${version}`)),
    `/usr/bin/python${version}`,
    'python3',
  ]
  for (const candidate of candidates) {
    try {
      const { stdout } = await runLocal(candidate, ['-c', 'import sys, pip; print("%d.%d" % sys.version_info[:2])'])
      if (stdout.trim() === version) return candidate
    } catch {
      // not there, not this version, or without pip: try the next one
    }
  }
  return undefined
}

const BUILD_HINTS: Record<string, string> = {
  psycopg2: 'psycopg2 builds need pg_config and libpq headers (Debian: libpq-dev), a C compiler (gcc) and the Python headers (python3-dev for Debian\'s python3; pyenv builds have their own)',
}

/** Name and version specifier of the requirement pip could not find as a wheel, if that is why it failed. */
export function unsatisfiedRequirement(pipOutput: string): string | undefined {
  const line = /No matching distribution found for (.+)$/m.exec(pipOutput)?.[1]
  return line?.split(';')[0]?.trim()
}

export async function buildWheelhouse(opts: WheelhouseOptions): Promise<Wheelhouse> {
  const log = opts.log ?? (() => undefined)
  const driver = opts.postgresDriver ?? 'source'
  const glibc = opts.glibc ?? defaultGlibc(opts.pythonVersion)
  const synapseVersion = opts.synapseVersion ?? (await latestSynapseVersion())
  const expected = { synapseVersion, pythonVersion: opts.pythonVersion, glibc, postgresDriver: driver }
  const dir = join(opts.cacheDir, wheelhouseDirName(synapseVersion, opts.pythonVersion, glibc, driver))

  const existing = await readManifest(dir)
  const check = checkWheelhouse(existing, expected, await listSizes(dir))
  if (check.complete) {
    log(`wheelhouse for matrix-synapse ${synapseVersion} (Python ${opts.pythonVersion}) is complete in ${dir}; reusing it`)
    return fromManifest(dir, existing as WheelhouseManifest, true)
  }
  if (existing !== undefined) log(`wheelhouse in ${dir} is not reusable: ${check.reason}`)

  await mkdir(opts.cacheDir, { recursive: true })
  const staging = await mkdtemp(join(opts.cacheDir, '.wheelhouse-'))
  try {
    const { download, ...install } = wheelhousePlan(synapseVersion, driver)
    const builtFromSource = await downloadWheels(staging, download, { ...opts, glibc, log })
    const files: WheelhouseManifest['files'] = []
    for (const name of (await readdir(staging)).sort()) {
      if (!name.endsWith('.whl')) continue
      const content = await readFile(join(staging, name))
      files.push({ name, size: content.length, sha256: createHash('sha256').update(content).digest('hex') })
    }
    const manifest: WheelhouseManifest = { schema: MANIFEST_SCHEMA, ...expected, ...install, builtFromSource, files }
    await writeFile(join(staging, WHEELHOUSE_MANIFEST), JSON.stringify(manifest, null, 2) + '\n')
    await rm(dir, { recursive: true, force: true })
    try {
      await rename(staging, dir)
    } catch (error) {
      // Another build finished first: use its result if it is complete.
      const theirs = await readManifest(dir)
      if (checkWheelhouse(theirs, expected, await listSizes(dir)).complete) return fromManifest(dir, theirs as WheelhouseManifest, true)
      throw error
    }
    const result = fromManifest(dir, manifest, false)
    log(`wheelhouse ready: ${result.files.length} wheels, ${(result.bytes / 1e6).toFixed(1)} MB in ${dir}`)
    return result
  } finally {
    await rm(staging, { recursive: true, force: true })
  }
}

/** pip download, wheels only; each requirement that exists only as an sdist is built here and the download retried. */
async function downloadWheels(dest: string, requirements: string[], opts: WheelhouseOptions & { glibc: string; log: (line: string) => void }): Promise<string[]> {
  // Any local pip can download for another Python: --python-version and --platform pick the wheels.
  const host = 'python3'
  const pip = (python: string, args: string[]) => runLocal(python, ['-m', 'pip', '--disable-pip-version-check', '--no-input', ...args], { onLine: opts.log })
  const targetArgs = [
    '--only-binary=:all:',
    '--implementation', 'cp',
    '--python-version', opts.pythonVersion,
    ...platformTags(opts.glibc).flatMap((tag) => ['--platform', tag]),
  ]
  const built: string[] = []
  for (let attempt = 0; attempt < 6; attempt++) {
    try {
      await pip(host, ['download', ...targetArgs, '--find-links', dest, '--dest', dest, ...requirements])
      return built
    } catch (error) {
      if (!(error instanceof LocalCommandError)) throw error
      const missing = unsatisfiedRequirement(error.stderr + error.stdout)
      const name = missing?.split(/[<>=!~ \[]/)[0]?.toLowerCase()
      if (!missing || !name || name === 'matrix-synapse' || built.includes(name)) throw error
      opts.log(`${missing} has no wheel for Python ${opts.pythonVersion} on PyPI; building one from its sdist`)
      const python = await findPython(opts.pythonVersion, opts.python)
      if (!python) {
        throw new Error(
          `${missing} exists on PyPI only as an sdist for Python ${opts.pythonVersion}, and no python${opts.pythonVersion} with pip was found on this controller to build a wheel. ` +
            (name === 'psycopg2' ? `Use postgresDriver 'system' (Debian's python3-psycopg2 in a --system-site-packages venv) or 'binary' (psycopg2-binary), or pass python.` : 'Pass python.'),
        )
      }
      const sdists = join(dest, '.sdists')
      try {
        await pip(python, ['download', '--no-deps', '--no-binary=:all:', '--dest', sdists, missing])
        const [sdist] = await readdir(sdists)
        if (!sdist) throw new Error(`pip downloaded no sdist for ${missing}`)
        await pip(python, ['wheel', '--no-deps', '--wheel-dir', dest, join(sdists, sdist)])
      } catch (buildError) {
        const hint = BUILD_HINTS[name]
        if (hint && buildError instanceof Error) buildError.message += `\n(${hint})`
        throw buildError
      } finally {
        await rm(sdists, { recursive: true, force: true })
      }
      built.push(name)
    }
  }
  throw new Error(`pip download kept failing for ${requirements.join(' ')}`)
}
