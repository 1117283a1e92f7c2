/**
 * Files on the controller that the inventory names and the loader reads and validates: the Synapse
 * lock of a pip install and the manifest of an uploaded wheelhouse. Their formats are
 * src/synapse/lock/; reading them is the loader's (and the verbs' that build them).
 */
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { lockCommand, LockError, lockPath, parseLock, type SynapseLock } from '../synapse/lock/lock-file.js'
import { WHEELHOUSE_MANIFEST, type WheelhouseManifest } from '../synapse/lock/wheelhouse-manifest.js'
import type { HostEntry, LoadContext } from './context.js'
import type { MatrixSettings } from './types.js'

/** Read and validate `<lockDir>/<version>.txt`; a missing file says what to run. */
export async function readLock(lockDir: string, synapseVersion: string, inventoryFile: string): Promise<SynapseLock> {
  const file = lockPath(lockDir, synapseVersion)
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw new LockError(
      file,
      undefined,
      code === 'ENOENT'
        ? `no lock for Synapse ${synapseVersion}: pip installs only a locked dependency set`
        : `cannot read the lock (${code ?? String(error)})`,
      `run \`${lockCommand(inventoryFile, synapseVersion)}\` (resolves the dependencies as of the release's date with uv) and commit ${file}`,
    )
  }
  return parseLock(text, file, synapseVersion)
}

/** The manifest of a wheelhouse directory, if it has a readable one (sync: the inventory loader reads it). */
export function readWheelhouseManifest(dir: string): WheelhouseManifest | undefined {
  try {
    const m = JSON.parse(readFileSync(join(dir, WHEELHOUSE_MANIFEST), 'utf8')) as WheelhouseManifest
    return typeof m === 'object' && m !== null && typeof m.synapseVersion === 'string' ? m : undefined
  } catch {
    return undefined
  }
}

/**
 * The pip method installs a locked set: read <lockDir>/<version>.txt (once per file) into
 * settings.synapse.lock, and hold an uploaded wheelhouse to the lock it must have been built from.
 */
export async function synapseLock(ctx: LoadContext, host: HostEntry, settings: MatrixSettings): Promise<void> {
  const synapse = settings.synapse
  if (ctx.options.locks === false || synapse.install !== 'pip' || !host.roles.includes('synapse')) return
  const manifest = synapse.wheelhouse ? readWheelhouseManifest(synapse.wheelhouse) : undefined
  if (synapse.wheelhouse && !manifest) {
    ctx.addForVar(
      host.name,
      ['synapse', 'wheelhouse'],
      `${synapse.wheelhouse} is not a wheelhouse built by matrix-provision (no readable ${WHEELHOUSE_MANIFEST})`,
      'build it from the lock (provision lock --wheelhouse DIR --python X.Y), or leave synapse.wheelhouse out to install from the index',
    )
    return
  }
  const version = synapse.version ?? manifest?.synapseVersion
  if (!version) {
    ctx.addForVar(
      host.name,
      ['synapse', 'install'],
      'synapse.install pip needs synapse.version (or a wheelhouse, whose version is used)',
      'set synapse.version, e.g. "1.163.2"',
    )
    return
  }
  synapse.version = version
  const key = `${synapse.lockDir}\0${version}`
  let pending = ctx.lockCache.get(key)
  if (!pending) {
    pending = readLock(synapse.lockDir, version, ctx.file).catch((error: unknown) => {
      if (error instanceof LockError) return error
      throw error
    })
    ctx.lockCache.set(key, pending)
  }
  const lock = await pending
  const where = ctx.varsOrigin(host.name, ['synapse', 'lockDir'])
    ? ['synapse', 'lockDir']
    : ctx.varsOrigin(host.name, ['synapse', 'version'])
      ? ['synapse', 'version']
      : ['synapse', 'install']
  if (lock instanceof LockError) {
    ctx.addForVar(host.name, where, `${lock.file}${lock.line ? `:${lock.line}` : ''}: ${lock.problem}`, lock.hint)
    return
  }
  if (manifest && manifest.lockDigest !== lock.digest) {
    ctx.addForVar(
      host.name,
      ['synapse', 'wheelhouse'],
      `the wheelhouse ${synapse.wheelhouse} was not built from ${lock.file} (it holds Synapse ${manifest.synapseVersion}${manifest.lockDigest ? ' from another lock' : ' without a lock'})`,
      'build the wheelhouse again from this lock (provision lock --wheelhouse DIR --python X.Y)',
    )
    return
  }
  synapse.lock = lock
}
