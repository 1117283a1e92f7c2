import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { withCacheLock } from '../../src/artifacts/cache-lock.js'
import { controller$ } from '../../src/artifacts/controller-shell.js'

describe('withCacheLock', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mp-cache-lock-'))
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('runs one filler at a time, and a filler that throws lets the next one in', async () => {
    const lock = join(dir, 'sub', 'entry.lock')
    const events: string[] = []
    const fill = (name: string, fail = false) =>
      withCacheLock(lock, async () => {
        events.push(`${name} in`)
        await new Promise((r) => setTimeout(r, 150))
        events.push(`${name} out`)
        if (fail) throw new Error(`${name} failed`)
        return name
      })
    const results = await Promise.allSettled([fill('a', true), fill('b'), fill('c')])
    expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'fulfilled'])
    // Never two inside: every "in" is followed by its own "out".
    for (let i = 0; i < events.length; i += 2) expect(events[i + 1]).toBe(events[i]!.replace(' in', ' out'))
    expect(events).toHaveLength(6)
  })

  it('holds the lock against another process (flock(1) on the same file) until the filler returns', async () => {
    const lock = join(dir, 'other.lock')
    const $ = await controller$()
    const seen = await withCacheLock(lock, async () => (await $`flock --nonblock ${lock} true`.nothrow()).exitCode)
    expect(seen).toBe(1)
    expect((await $`flock --nonblock ${lock} true`.nothrow()).exitCode).toBe(0)
  })
})
