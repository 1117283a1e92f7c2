import { existsSync, readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, isAbsolute, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

/** A sandbox failure with its exit code: 2 for the environment (no Docker, busy port), 1 otherwise. */
export class SandboxError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 1,
  ) {
    super(message)
    this.name = 'SandboxError'
  }
}

/** The Synapse the sandbox installs unless SYNAPSE_VERSION says otherwise (the same pin as the container tests). */
export const SANDBOX_SYNAPSE_VERSION = '1.163.2'
export const PYTHON_VERSION = '3.11'
export const SUITE = 'bookworm'

export interface SandboxSettings {
  /** The package (a checkout or node_modules/matrix-provision): docker/ and inventories/ live here. */
  root: string
  /** SANDBOX_DIR (default .sandbox in a checkout, else in the working directory): key, known_hosts, generated inventory, CA, password. */
  dir: string
  /** SANDBOX_CACHE_DIR (default .cache in a checkout, else ~/.cache/matrix-provision), kept by --down: the wheelhouse and the Element release. */
  cacheDir: string
  /** Container name (SANDBOX_NAME). */
  name: string
  sshPort: number
  httpsPort: number
  synapseVersion: string
  baseImage: string
  targetImage: string
  /** The committed template and the inventory generated from it. */
  template: string
  inventory: string
  /** The committed Synapse locks beside the template. */
  lockDir: string
}

/**
 * Where the package is: the nearest directory above this module with our package.json (src/, dist/src/
 * and the bundle in dist/cli/ alike, in a checkout or in node_modules). It holds docker/ and inventories/.
 */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const pkg = join(dir, 'package.json')
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'matrix-provision') return dir
    const up = dirname(dir)
    if (up === dir) throw new SandboxError('cannot find the matrix-provision package (docker/ and inventories/) above this module', 2)
    dir = up
  }
}

function port(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < 1 || value > 65535)
    throw new SandboxError(`${name} must be a port number (1-65535), got "${raw}"`, 2)
  return value
}

export function sandboxSettings(env: NodeJS.ProcessEnv): SandboxSettings {
  const root = packageRoot()
  for (const asset of ['docker/Dockerfile', 'inventories/sandbox.yaml'])
    if (!existsSync(join(root, asset)))
      throw new SandboxError(
        `${join(root, asset)} is missing: the sandbox needs the package's docker/ and inventories/ (reinstall matrix-provision)`,
        2,
      )
  // A checkout keeps .sandbox/ and .cache/ in the repository (as the README shows); an installed package
  // (node_modules, maybe read-only) keeps .sandbox/ in the working directory and the cache in ~/.cache.
  const checkout = existsSync(join(root, '.git'))
  const base = checkout ? root : process.cwd()
  const name = env.SANDBOX_NAME || 'matrix-provision-sandbox'
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(name))
    throw new SandboxError(`SANDBOX_NAME must be a container name (letters, digits, _ . -), got "${name}"`, 2)
  const dir = resolve(base, env.SANDBOX_DIR || '.sandbox')
  if (dir === root || dir === base || dir === dirname(dir))
    throw new SandboxError(`SANDBOX_DIR must be a directory of its own, not ${dir}`, 2)
  const cacheDir = env.SANDBOX_CACHE_DIR
    ? resolve(base, env.SANDBOX_CACHE_DIR)
    : checkout
      ? join(root, '.cache')
      : join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'matrix-provision')
  const sshPort = port(env, 'SANDBOX_SSH_PORT', 2222)
  const httpsPort = port(env, 'SANDBOX_HTTPS_PORT', 8443)
  if (sshPort === httpsPort) throw new SandboxError(`SANDBOX_SSH_PORT and SANDBOX_HTTPS_PORT are both ${sshPort}`, 2)
  return {
    root,
    dir,
    cacheDir,
    name,
    sshPort,
    httpsPort,
    synapseVersion: env.SYNAPSE_VERSION || SANDBOX_SYNAPSE_VERSION,
    baseImage: `matrix-provision/debian-systemd:${SUITE}`,
    targetImage: `matrix-provision/target:${SUITE}`,
    template: join(root, 'inventories', 'sandbox.yaml'),
    inventory: join(dir, 'inventory.yaml'),
    lockDir: join(root, 'inventories', 'synapse-lock'),
  }
}

/** A path as the user should type it: relative to the working directory when inside it. */
export function shown(path: string): string {
  const rel = relative(process.cwd(), path)
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : path
}
