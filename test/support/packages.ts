import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The real upstream artefacts the tests use (the matrix-synapse-py3 packages, Element Web, MAS), read where
 * they lie and never copied into the project. One setting: MP_PACKAGES_DIR; without it, the steering
 * checkout's `shared/packages` beside the repository (../shared/packages), then the workplace's
 * /work/shared/packages (a fresh clone in /tmp has no ../shared). Anyone with internet access points
 * MP_PACKAGES_DIR (or a per-artefact directory) at the files downloaded from upstream.
 */
const root = fileURLToPath(new URL('../../', import.meta.url))

export function packagesDir(env: NodeJS.ProcessEnv = process.env): string {
  const candidates = env.MP_PACKAGES_DIR ? [resolve(env.MP_PACKAGES_DIR)] : [join(root, '../shared/packages'), '/work/shared/packages']
  const found = candidates.find((d) => existsSync(d))
  if (!found)
    throw new Error(
      `the upstream artefacts are not at ${candidates.join(' or ')}: set MP_PACKAGES_DIR to the directory that holds matrix-synapse-py3/, element-web/ and matrix-authentication-service/`,
    )
  return found
}

/** One artefact's directory: its own override (e.g. SYNAPSE_DEB_DIR) or <packagesDir>/<name>. */
export function artefactDir(name: 'matrix-synapse-py3' | 'element-web' | 'matrix-authentication-service', override?: string): string {
  const dir = override ? resolve(override) : join(packagesDir(), name)
  if (!existsSync(dir))
    throw new Error(`${dir} does not exist: the tests need the real ${name} artefacts there (see test/support/packages.ts)`)
  return dir
}
