import { mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { controller$ } from './controller-shell.js'

/**
 * Runs `fill` holding an exclusive lock on `lockFile`, across the processes of this controller: two runs
 * filling the same cache entry at once (two provision commands, two test files) would otherwise remove or
 * overwrite each other's files, or hand out one build's signature with the other's key. flock(1) holds
 * the lock in a child whose stdin is ours: when this process ends, however it ends, the lock goes with it
 * (no stale lock file to break). The caller checks the cache again once it holds the lock.
 */
export async function withCacheLock<T>(lockFile: string, fill: () => Promise<T>): Promise<T> {
  await mkdir(dirname(lockFile), { recursive: true })
  const $ = await controller$()
  const holder = $`flock --exclusive ${lockFile} sh -c ${'echo locked; exec cat >/dev/null'}`
  try {
    await new Promise<void>((resolve, reject) => {
      let out = ''
      holder.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString()
        if (out.includes('locked')) resolve()
      })
      holder.then(
        () => reject(new Error(`flock ${lockFile} ended before it held the lock`)),
        (error: unknown) => reject(new Error(`flock ${lockFile} failed (flock is util-linux's): ${String(error)}`, { cause: error })),
      )
    })
    return await fill()
  } finally {
    holder.stdin.end()
    await holder.catch(() => undefined)
  }
}
