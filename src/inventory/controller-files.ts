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
      code === 'ENOENT' ? `no lock for Synapse ${synapseVersion}: pip installs only a locked dependency set` : `cannot read the lock (${code ?? String(error)})`,
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
