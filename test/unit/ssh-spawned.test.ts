import { EventEmitter } from 'node:events'
import type { ClientChannel } from 'ssh2'
import { describe, expect, it } from 'vitest'
import { SpawnedProcess } from '../../src/ssh/spawned.js'

/** Just enough of an ssh2 channel: output events and a stderr emitter. */
function fakeChannel() {
  const channel = Object.assign(new EventEmitter(), {
    stderr: new EventEmitter(),
    write: () => true,
    end: () => undefined,
    close: () => undefined,
  })
  return channel
}

function spawned() {
  const proc = new SpawnedProcess('test command')
  const channel = fakeChannel()
  proc.attach(channel as unknown as ClientChannel)
  return {
    proc,
    out: (s: string) => channel.emit('data', Buffer.from(s)),
    err: (s: string) => channel.stderr.emit('data', Buffer.from(s)),
    channel,
  }
}

describe('SpawnedProcess.waitForOutput', () => {
  it('finds a line split across chunks, and resolves with all the output so far', async () => {
    const { proc, out } = spawned()
    const waiting = proc.waitForOutput(/@@MP-PROBED 2 (\d+)\n/, 5_000)
    out('MP-LOCKED\n@@MP-PROBED 1 0\nfacts of the second')
    out(' probe\n@@MP-PROB')
    out('ED 2')
    out(' 0\nafter')
    await expect(waiting).resolves.toBe('MP-LOCKED\n@@MP-PROBED 1 0\nfacts of the second probe\n@@MP-PROBED 2 0\nafter')
  })

  it('does not match a line only in part: the pattern must reach its newline', async () => {
    const { proc, out } = spawned()
    let settled = false
    const waiting = proc.waitForOutput(/@@MP-PROBED 1 (\d+)\n/, 5_000).then((text) => ((settled = true), text))
    out('@@MP-PROBED 1 1')
    await new Promise((r) => setTimeout(r, 10))
    expect(settled).toBe(false) // "1 1" could still be "1 12"
    out('2\n')
    await expect(waiting).resolves.toBe('@@MP-PROBED 1 12\n')
  })

  it('finds output that arrived before the wait began, and on stderr', async () => {
    const { proc, out, err } = spawned()
    out('MP-LOCKED\n')
    await expect(proc.waitForOutput(/MP-(LOCKED|BUSY)[^\n]*\n/, 5_000)).resolves.toBe('MP-LOCKED\n')
    err('warn: x\nMP-MARK\n')
    await expect(proc.waitForOutput(/MP-MARK/, 5_000)).resolves.toContain('MP-MARK')
  })

  it('rejects with the last lines when the process ends first', async () => {
    const { proc, out, channel } = spawned()
    const waiting = proc.waitForOutput(/never/, 5_000)
    out('one\ntwo\n')
    channel.emit('exit', 3)
    channel.emit('close')
    await expect(waiting).rejects.toThrow(/test command ended \(exit code 3\) before printing \/never\/:\none\ntwo/)
  })
})
