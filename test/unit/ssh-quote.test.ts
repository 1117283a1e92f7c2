import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { shellJoin, shellQuote } from '../../src/core/quote.js'
import { remoteCommand } from '../../src/ssh/remote-command.js'

const run = promisify(execFile)

const NASTY = [
  '',
  ' ',
  'plain',
  "it's",
  "''",
  '"double" quotes',
  '$(touch /tmp/mp-pwned)',
  '`touch /tmp/mp-pwned`',
  '${HOME} $HOME $1 $@ $$',
  'line one\nline two\n',
  '\ttab and trailing space ',
  'back\\slash\\',
  'glob * ? [a-z] ~ ~root',
  'semi; && || | > < & #comment',
  '-n',
  '--',
  'unicode: Grüße, 日本語, emoji 🙂, rtl ‏שלום',
  'mix: \'"$(`\\\n',
  '!history !!',
  '%s %d %%',
]

/** Print each argument NUL-terminated, so the round trip is exact (newlines, empty strings). */
async function roundTrip(shell: string, args: string[]): Promise<string[]> {
  const { stdout } = await run(shell, ['-c', `for a in ${shellJoin(args)}; do printf '%s\\0' "$a"; done`], { encoding: 'buffer' })
  const parts = stdout.toString('utf8').split('\0')
  parts.pop()
  return parts
}

describe('shellQuote', () => {
  for (const shell of ['sh', 'dash', 'bash']) {
    it(`round-trips nasty strings through a real ${shell} -c, one argument each`, async () => {
      expect(await roundTrip(shell, NASTY)).toEqual(NASTY)
    })
  }

  it('keeps the empty string as an argument', async () => {
    expect(shellQuote('')).toBe("''")
    expect(await roundTrip('sh', ['a', '', 'b'])).toEqual(['a', '', 'b'])
  })

  it("leaves safe words bare and never uses bash-only $'…'", () => {
    expect(shellQuote('/etc/matrix-synapse/homeserver.yaml')).toBe('/etc/matrix-synapse/homeserver.yaml')
    for (const s of NASTY) expect(shellQuote(s)).not.toMatch(/^\$'/)
  })

  it('the transport wrapper (sh -c <quoted>) runs a command with every nasty string intact', async () => {
    for (const s of NASTY) {
      const command = `printf '%s' ${shellQuote(s)}`
      // What the host's login shell receives for a root login, minus the exec.
      const wire = remoteCommand(command, 'root').replace(/^exec /, '')
      const { stdout } = await run('sh', ['-c', wire])
      expect(stdout).toBe(s)
    }
  })
})
