import { existsSync } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { withCacheLock } from './cache-lock.js'
import { controller$ } from './controller-shell.js'

/**
 * uv, the resolver behind `provision lock`, installed from PyPI into a venv of the controller's
 * tool cache the first time (pinned: the same uv resolves the same way). Needs python3 with venv.
 */
export const UV_VERSION = '0.13.9'

/** The controller's cache for tools and artifacts: $XDG_CACHE_HOME/matrix-provision or ~/.cache/matrix-provision. */
export function toolCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'matrix-provision')
}

/** Path of the uv binary, installing it first when missing. */
export async function ensureUv(cacheDir: string, log: (line: string) => void = () => undefined): Promise<string> {
  const dir = join(cacheDir, `uv-${UV_VERSION}`)
  const uv = join(dir, 'bin', 'uv')
  const done = join(dir, '.installed')
  const installed = () => existsSync(done) && existsSync(uv)
  if (installed()) return uv
  // Another run may be installing it: the rm below would pull the venv from under it.
  return withCacheLock(`${dir}.lock`, async () => {
    if (installed()) return uv
    log(`installing uv ${UV_VERSION} from PyPI into ${dir} (once)`)
    await rm(dir, { recursive: true, force: true })
    await mkdir(cacheDir, { recursive: true })
    const $ = await controller$()
    await $`python3 -m venv ${dir}`
    await $`${join(dir, 'bin', 'python')} -m pip install --disable-pip-version-check --no-input -q ${`uv==${UV_VERSION}`}`
    await writeFile(done, `${UV_VERSION}\n`)
    return uv
  })
}
