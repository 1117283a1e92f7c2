import { describe, expect, it } from 'vitest'
import type { Connection } from '../../src/ssh/connection.js'
import type { SynapseLock } from '../../src/synapse/lock/lock-file.js'
import { runningVenvHoldsLock } from '../../tasks/synapse/venv-lock-check.js'

const lock = { file: '/inv/synapse-lock/1.160.0.txt', synapseVersion: '1.160.0', entries: [] } as unknown as SynapseLock
const hostRunning = (stdout: string) => ({ run: () => Promise.resolve({ code: 0, stdout, stderr: '' }) }) as unknown as Connection
const ctx = { waitS: () => 0 } as never

describe('the running venv holds the lock', () => {
  it('judges only the inventory version: a rollback skips it, check fails naming both versions', async () => {
    const check = runningVenvHoldsLock(lock)
    expect(check.inventoryVersionOnly).toBe(true)
    const r = await check.run(hostRunning('/opt/venvs/matrix-synapse-1.158.0\npython 3.11.2\nmatrix-synapse 1.158.0\n'), ctx)
    expect(r).toMatchObject({ ok: false })
    expect(r.detail).toBe(
      "/opt/venvs/matrix-synapse-1.158.0 holds matrix-synapse 1.158.0, the inventory's lock synapse-lock/1.160.0.txt is for 1.160.0",
    )
  })
})
