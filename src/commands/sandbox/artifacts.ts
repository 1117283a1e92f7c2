import { createHash } from 'node:crypto'
import { createReadStream, existsSync } from 'node:fs'
import { mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises'
import { basename, join, resolve } from 'node:path'
import { buildElementStandin, normalizeElementVersion } from '../../artifacts/element-standin.js'
import { controller$, isCommandFailure } from '../../artifacts/controller-shell.js'
import { buildWheelhouse } from '../../artifacts/wheelhouse.js'
import { readLock } from '../../inventory/controller-files.js'
import { LockError, lockPath, type SynapseLock } from '../../synapse/lock/lock-file.js'
import { resolveLock } from '../../artifacts/lock-resolve.js'
import { PYTHON_VERSION, SandboxError, shown, type SandboxSettings } from './settings.js'

type Say = (line: string) => void

/** What the controller uploads: the Synapse wheelhouse and an Element release, linked into the sandbox directory. */

/** Point `link` at `target`, replacing whatever was there. */
async function link(target: string, path: string): Promise<void> {
  await rm(path, { force: true, recursive: false })
  await symlink(target, path)
}

/**
 * The lock of the sandbox's Synapse from inventories/synapse-lock; a version without a committed lock
 * (SYNAPSE_VERSION=...) is resolved there first, with a note to commit it.
 */
async function sandboxLock(s: SandboxSettings, say: Say, verbose: boolean): Promise<SynapseLock> {
  try {
    return await readLock(s.lockDir, s.synapseVersion, s.template)
  } catch (error) {
    if (!(error instanceof LockError) || existsSync(error.file))
      throw new SandboxError(error instanceof Error ? error.message : String(error), 2)
  }
  say(
    `lock: no committed lock for Synapse ${s.synapseVersion}; resolving it as of its release date into ${shown(lockPath(s.lockDir, s.synapseVersion))} (review and commit it to keep it)`,
  )
  const result = await resolveLock({
    synapseVersion: s.synapseVersion,
    lockDir: s.lockDir,
    inventoryFile: s.template,
    cacheDir: s.cacheDir,
    log: verbose ? (l) => say(`  ${l}`) : undefined,
  }).catch((error: unknown) => {
    throw new SandboxError(
      `resolving the lock failed (PyPI must be reachable): ${(error as Error).message.split('\n').slice(-1)[0]}`,
      /is not on PyPI/.test(String(error)) ? 2 : 1,
    )
  })
  say(`lock: ${result.lock.entries.length} pins resolved as of ${result.lock.resolvedAsOf} in ${(result.durationMs / 1000).toFixed(1)} s`)
  return result.lock
}

/** The Synapse wheelhouse for the container's Python, built from the lock into .cache/wheelhouse, linked as <dir>/wheelhouse. */
export async function prepareWheelhouse(s: SandboxSettings, say: Say, verbose: boolean): Promise<void> {
  const lock = await sandboxLock(s, say, verbose)
  const cacheDir = join(s.cacheDir, 'wheelhouse')
  if (!verbose)
    say(
      `wheelhouse: matrix-synapse ${s.synapseVersion} for Python ${PYTHON_VERSION} from ${shown(lock.file)} (pip download into ${shown(cacheDir)} the first time, about 30 s)`,
    )
  const wh = await buildWheelhouse({
    lock,
    pythonVersion: PYTHON_VERSION,
    cacheDir,
    log: verbose ? (l) => say(`  ${l}`) : undefined,
  }).catch((error: unknown) => {
    throw new SandboxError(
      `building the wheelhouse failed (PyPI must be reachable the first time): ${(error as Error).message.split('\n').slice(-1)[0]}`,
    )
  })
  await link(wh.dir, join(s.dir, 'wheelhouse'))
  say(`wheelhouse: ${wh.files.length} wheels, ${(wh.bytes / 1e6).toFixed(0)} MB, ${wh.reused ? 'reused' : 'built'}`)
}

export interface ElementChoice {
  version: string
  /** Set for a release given with --element: computed here, from the file itself. */
  sha256?: string
  /** The stand-in is verified by its GPG signature instead. */
  signed: boolean
}

export const STANDIN_VERSION = '1.11.90'

/**
 * The Element release as <dir>/element.tar.gz: a tarball given with --element (a path, or a URL
 * downloaded here on the controller), else the local stand-in (signature and key beside it).
 */
export async function prepareElement(s: SandboxSettings, source: string | undefined, say: Say): Promise<ElementChoice> {
  const tarball = join(s.dir, 'element.tar.gz')
  const signature = `${tarball}.asc`
  const releaseKey = join(s.dir, 'element-release-key.asc')
  if (!source) {
    const release = await buildElementStandin({ version: STANDIN_VERSION, dir: join(s.cacheDir, 'element') })
    await link(release.tarball, tarball)
    await link(release.signature, signature)
    await link(release.releaseKey, releaseKey)
    say(`element: a local STAND-IN for Element ${STANDIN_VERSION} (a placeholder page, not the real client): GitHub is unreachable here.`)
    say(`element: for the real client pass --element PATH_OR_URL of an element-vX.Y.Z.tar.gz release`)
    return { version: STANDIN_VERSION, signed: true }
  }

  const file = /^https?:\/\//.test(source) ? await download(source, join(s.cacheDir, 'element', 'downloads'), say) : resolve(source)
  if (!existsSync(file)) throw new SandboxError(`--element: no such file ${source}`, 2)
  const version = await releaseVersion(file)
  await link(file, tarball)
  await rm(signature, { force: true })
  await rm(releaseKey, { force: true })
  const sha256 = await sha256File(file)
  say(`element: ${shown(file)} (Element ${version})`)
  say(
    `element: SHA-256 ${sha256} was COMPUTED LOCALLY from that file, not taken from a published checksum: it only guards the upload to the sandbox`,
  )
  return { version, sha256, signed: false }
}

/** The version from the tarball's top directory element-vX.Y.Z/ (the element task unpacks exactly that). */
async function releaseVersion(file: string): Promise<string> {
  let listing: string
  try {
    const $ = await controller$()
    listing = (await $`tar -tzf ${file}`).stdout
  } catch (error) {
    throw new SandboxError(
      `--element: ${file} is not a readable .tar.gz (${isCommandFailure(error) ? error.stderr.trim().split('\n')[0] : String(error)})`,
      2,
    )
  }
  const top = /^(?:\.\/)?element-(v[^/\n]+)\//m.exec(listing)?.[1]
  try {
    if (top) return normalizeElementVersion(top)
  } catch {
    // not a version: fall through to the message
  }
  throw new SandboxError(`--element: ${file} is not an Element Web release (expected a top directory element-vX.Y.Z/ with index.html)`, 2)
}

async function download(url: string, dir: string, say: Say): Promise<string> {
  const name = basename(new URL(url).pathname) || 'element.tar.gz'
  const file = join(dir, name)
  if (existsSync(file)) {
    say(`element: ${url} was downloaded before: using ${shown(file)}`)
    return file
  }
  say(`element: downloading ${url}`)
  await mkdir(dir, { recursive: true })
  let response: Response
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(300_000) })
  } catch (error) {
    throw new SandboxError(
      `--element: downloading ${url} failed: ${(error as Error).cause instanceof Error ? ((error as Error).cause as Error).message : (error as Error).message}`,
    )
  }
  if (!response.ok) throw new SandboxError(`--element: ${url} answered HTTP ${response.status}`)
  const partial = `${file}.part`
  await writeFile(partial, Buffer.from(await response.arrayBuffer()))
  await rename(partial, file)
  return file
}

function sha256File(file: string): Promise<string> {
  return new Promise((done, fail) => {
    const hash = createHash('sha256')
    createReadStream(file)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => done(hash.digest('hex')))
      .on('error', fail)
  })
}
