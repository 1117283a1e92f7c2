import { relative, resolve } from 'node:path'
import { buildWheelhouse } from '../../artifacts/wheelhouse.js'
import type { Inventory } from '../../inventory/types.js'
import { DEFAULT_LOCK_DIR } from '../../synapse/lock/lock-file.js'
import { resolveLock } from '../../artifacts/lock-resolve.js'
import { toolCacheDir } from '../../artifacts/uv.js'

/** Bad input to `provision lock` (exit 2). */
export class LockUsageError extends Error {}

export interface LockCommandOptions {
  inventory: Inventory
  synapseVersion?: string
  /** Also build a wheelhouse from each lock into this directory, for this target Python. */
  wheelhouse?: string
  python?: string
  env: NodeJS.ProcessEnv
  out: (line: string) => void
}

const shown = (path: string) => {
  const rel = relative(process.cwd(), path)
  return rel && !rel.startsWith('..') ? rel : path
}

/** The (version, lock directory) pairs the inventory's pip hosts need, or the one asked for. */
export function lockTargets(inventory: Inventory, synapseVersion?: string): { version: string; lockDir: string }[] {
  const pip = inventory.hosts.filter((h) => h.roles.includes('synapse') && h.vars.synapse.install === 'pip')
  const fallbackDir = pip[0]?.vars.synapse.lockDir ?? resolve(inventory.file, '..', DEFAULT_LOCK_DIR)
  if (synapseVersion) return [{ version: synapseVersion, lockDir: fallbackDir }]
  const seen = new Map<string, { version: string; lockDir: string }>()
  for (const h of pip) {
    const version = h.vars.synapse.version
    if (version) seen.set(`${h.vars.synapse.lockDir}\0${version}`, { version, lockDir: h.vars.synapse.lockDir })
  }
  if (seen.size === 0) {
    throw new LockUsageError(
      pip.length === 0
        ? `${inventory.file}: no host installs Synapse with pip (synapse.install: pip); pass --synapse-version V to lock a version anyway`
        : `${inventory.file}: the pip hosts (${pip.map((h) => h.name).join(', ')}) set no synapse.version; set it, or pass --synapse-version V`,
    )
  }
  return [...seen.values()]
}

/** `provision lock`: resolve each needed version as of its release date and write <lockDir>/<version>.txt. */
export async function lockCommand(o: LockCommandOptions): Promise<void> {
  const cacheDir = toolCacheDir(o.env)
  for (const target of lockTargets(o.inventory, o.synapseVersion)) {
    let result
    try {
      result = await resolveLock({
        synapseVersion: target.version,
        lockDir: target.lockDir,
        inventoryFile: o.inventory.file,
        cacheDir,
        log: (l) => o.out(`  ${l}`),
      })
    } catch (error) {
      if (error instanceof Error && /is not on PyPI/.test(error.message)) throw new LockUsageError(error.message)
      throw error
    }
    const { lock } = result
    o.out(
      `${shown(result.file)}: ${result.changed ? 'written' : 'unchanged'} (matrix-synapse ${lock.synapseVersion}, ${lock.entries.length} pins, resolved as of ${lock.resolvedAsOf}, Python ${lock.python}; ${(result.durationMs / 1000).toFixed(1)} s)`,
    )
    if (o.wheelhouse) {
      const python = o.python ?? '3.11'
      const started = Date.now()
      const wh = await buildWheelhouse({ lock, pythonVersion: python, cacheDir: resolve(o.wheelhouse), log: (l) => o.out(`  ${l}`) })
      o.out(
        `${shown(wh.dir)}: wheelhouse for Python ${python}, ${wh.files.length} wheels, ${(wh.bytes / 1e6).toFixed(0)} MB, ${wh.reused ? 'reused' : 'built'} (${((Date.now() - started) / 1000).toFixed(1)} s); set synapse.wheelhouse to it`,
      )
    }
  }
}
