import { fileURLToPath } from 'node:url'
import { buildElementStandin } from '../../src/artifacts/element-standin.js'
import { buildWheelhouse } from '../../src/artifacts/wheelhouse.js'
import { SANDBOX_SYNAPSE_VERSION } from '../../src/sandbox/settings.js'

/** Built once per machine under .cache/ (CI builds them on a fresh clone: about 30 s). */
export const CACHE_DIR = fileURLToPath(new URL('../../.cache/', import.meta.url))
/** The Synapse the container tests install from PyPI (the sandbox's pin); override with SYNAPSE_VERSION. */
export const SYNAPSE_VERSION = process.env.SYNAPSE_VERSION || SANDBOX_SYNAPSE_VERSION
export const ELEMENT_VERSION = '1.11.90'

export async function synapseWheelhouse(pythonVersion = '3.11') {
  return buildWheelhouse({ synapseVersion: SYNAPSE_VERSION, pythonVersion, cacheDir: `${CACHE_DIR}wheelhouse` })
}

export async function elementRelease() {
  return buildElementStandin({ version: ELEMENT_VERSION, dir: `${CACHE_DIR}element` })
}
