/**
 * What a wheelhouse directory holds besides its wheels: the manifest that ties it to the lock it was
 * built from (the inventory loader checks that), and the requirements file the host's pip installs.
 */
import { wheelNameVersion } from './drift.js'

export const WHEELHOUSE_MANIFEST = 'wheelhouse.json'
/** The host's pip reads this: one `name==version --hash=sha256:<the wheel's digest>` per wheel. */
export const WHEELHOUSE_REQUIREMENTS = 'requirements.txt'

export interface WheelhouseManifest {
  schema: number
  synapseVersion: string
  pythonVersion: string
  glibc: string
  /** The lock file it was built from and its sha256: the inventory holds a wheelhouse to its lock. */
  lockFile: string
  lockDigest: string
  builtFromSource: string[]
  files: { name: string; size: number; sha256: string }[]
}

/** requirements.txt of a wheelhouse: each wheel pinned by its own digest. */
export function wheelhouseRequirements(files: WheelhouseManifest['files']): string {
  return files
    .map((f) => {
      const nv = wheelNameVersion(f.name)
      if (!nv) throw new Error(`${f.name} is not a wheel file name`)
      return `${nv.name}==${nv.version} --hash=sha256:${f.sha256}\n`
    })
    .join('')
}
