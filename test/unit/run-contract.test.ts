/**
 * Connection.run fails loudly: a non-zero exit, a timeout or a cut-off command throws RemoteCommandError
 * (carrying the result) unless the caller says the failure is data with `allowFailure`. The fake host
 * follows the same contract as SshConnection (test/integration/ssh-transport.test.ts proves the real one).
 */
import { describe, expect, it } from 'vitest'
import { Secret } from '../../src/core/secret.js'
import { sh } from '../../src/core/shell.js'
import { checked, RemoteCommandError, type CommandResult } from '../../src/ssh/connection.js'
import { FakeHost } from './fake-host.js'
import { DEBIAN_12 } from './fixtures/hosts/distros.js'

const result = (over: Partial<CommandResult>): CommandResult => ({
  command: 'cat /nope',
  code: 0,
  signal: null,
  stdout: '',
  stderr: '',
  durationMs: 1,
  timedOut: false,
  ...over,
})

describe('checked (the contract of Connection.run)', () => {
  it('passes an exit 0 through', () => {
    const ok = result({ stdout: 'x\n' })
    expect(checked('h1', ok)).toBe(ok)
  })

  it('throws on a non-zero exit, a timeout and a cut-off command, with the result and the stderr tail', () => {
    const failed = result({ code: 1, stderr: Array.from({ length: 12 }, (_, i) => `line ${i}`).join('\n') })
    const error = (() => {
      try {
        checked('h1', failed)
      } catch (e) {
        return e
      }
    })()
    expect(error).toBeInstanceOf(RemoteCommandError)
    expect((error as RemoteCommandError).result).toBe(failed)
    expect((error as RemoteCommandError).host).toBe('h1')
    // The last 8 lines of stderr, not all of it.
    expect((error as Error).message).toBe(
      `command on h1 failed with exit code 1: cat /nope\n${Array.from({ length: 8 }, (_, i) => `line ${i + 4}`).join('\n')}`,
    )
    expect(() => checked('h1', result({ code: null, timedOut: true }))).toThrow(/on h1 timed out: cat \/nope/)
    expect(() => checked('h1', result({ code: null, stderr: 'connection to h1 lost\n' }))).toThrow(
      /on h1 was cut off \(connection lost\?\): cat \/nope\nconnection to h1 lost/,
    )
  })

  it('names what the command was for when the caller says (`what`)', () => {
    expect(() => checked('h1', result({ code: 2, stderr: 'psql: error\n' }), { what: 'creating role synapse' })).toThrow(
      /^creating role synapse on h1 failed with exit code 2: cat \/nope\npsql: error$/,
    )
  })

  it('returns any result with allowFailure', () => {
    const failed = result({ code: 3, stdout: 'inactive\n' })
    expect(checked('h1', failed, { allowFailure: true })).toBe(failed)
    expect(checked('h1', result({ code: null, timedOut: true }), { allowFailure: true }).timedOut).toBe(true)
  })
})

describe('the fake host follows the contract', () => {
  it('throws on a failing command unless allowFailure, and the message shows the command masked', async () => {
    const host = new FakeHost(DEBIAN_12)
    const password = new Secret('s3cret-value-for-the-test', 'test')
    const cmd = sh`cat ${`/etc/${password.reveal()}`}`
    const error = await host.run(cmd).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(RemoteCommandError)
    expect((error as RemoteCommandError).result.code).toBe(1)
    expect((error as Error).message).toContain('No such file or directory')
    expect((error as Error).message).not.toContain(password.reveal())
    expect((await host.run(cmd, { allowFailure: true })).code).toBe(1)
  })
})
