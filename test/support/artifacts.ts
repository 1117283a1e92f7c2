import { fileURLToPath } from 'node:url'
import { buildElementStandin } from '../../src/artifacts/element-standin.js'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { artefactDir } from './packages.js'
import { buildWheelhouse } from '../../src/artifacts/wheelhouse.js'
import { readLock } from '../../src/inventory/controller-files.js'
import { LockError, type SynapseLock } from '../../src/synapse/lock/lock-file.js'
import { resolveLock } from '../../src/artifacts/lock-resolve.js'
import { SANDBOX_SYNAPSE_VERSION } from '../../src/commands/sandbox/settings.js'

/** Built once per machine under .cache/ (CI builds them on a fresh clone: about 30 s). */
export const CACHE_DIR = fileURLToPath(new URL('../../.cache/', import.meta.url))
/** The Synapse the container tests install from PyPI (the sandbox's pin); override with SYNAPSE_VERSION. */
export const SYNAPSE_VERSION = process.env.SYNAPSE_VERSION || SANDBOX_SYNAPSE_VERSION
export const ELEMENT_VERSION = '1.11.90'

/** The committed Synapse locks the tests, the sandbox and the bench install from. */
export const LOCK_DIR = fileURLToPath(new URL('../../inventories/synapse-lock/', import.meta.url))

/**
 * The lock of a Synapse version from inventories/synapse-lock. A version without a committed lock
 * (SYNAPSE_VERSION=...) is resolved there as of its release date first, loudly: commit it to keep it.
 */
export async function synapseLock(version = SYNAPSE_VERSION): Promise<SynapseLock> {
  try {
    return await readLock(LOCK_DIR, version, 'inventories/sandbox.yaml')
  } catch (error) {
    if (!(error instanceof LockError) || existsSync(error.file)) throw error
  }
  console.warn(
    `[tests] no committed lock for Synapse ${version}: resolving ${LOCK_DIR}${version}.txt as of its release date (commit it to keep CI reproducible)`,
  )
  return (await resolveLock({ synapseVersion: version, lockDir: LOCK_DIR, inventoryFile: 'inventories/sandbox.yaml', cacheDir: CACHE_DIR }))
    .lock
}

export async function synapseWheelhouse(pythonVersion = '3.11', version = SYNAPSE_VERSION) {
  return buildWheelhouse({ lock: await synapseLock(version), pythonVersion, cacheDir: `${CACHE_DIR}wheelhouse` })
}

/** The inventory's synapse vars for a pip install from a wheelhouse built from the committed lock. */
export function pipSynapseVars(wheelhouse: { dir: string; synapseVersion: string }): Record<string, unknown> {
  return { install: 'pip', version: wheelhouse.synapseVersion, wheelhouse: wheelhouse.dir, lockDir: LOCK_DIR }
}

export async function elementRelease() {
  return buildElementStandin({ version: ELEMENT_VERSION, dir: `${CACHE_DIR}element` })
}

/** A file of an artefact directory (test/support/packages.ts) with the SHA-256 its SHA256SUMS gives. */
export function sharedPackage(name: Parameters<typeof artefactDir>[0], file: string): { file: string; sha256: string } {
  const dir = artefactDir(name)
  const line = readFileSync(join(dir, 'SHA256SUMS'), 'utf8')
    .split('\n')
    .find((l) => l.trim().endsWith(`  ${file}`))
  if (!line) throw new Error(`${dir}/SHA256SUMS has no line for ${file}`)
  return { file: join(dir, file), sha256: line.split(/\s+/)[0]! }
}

/** Element Web v1.12.7 built from its release commit (element-web/README.md): the real release, every file of it. */
export const REAL_ELEMENT_VERSION = '1.12.7'
export function realElementRelease() {
  return { version: REAL_ELEMENT_VERSION, ...sharedPackage('element-web', `element-v${REAL_ELEMENT_VERSION}.tar.gz`) }
}
