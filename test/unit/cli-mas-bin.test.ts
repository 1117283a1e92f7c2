import { chmod, mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { cliOutput, runCli } from '../support/cli.js'

describe('provision mas-user refuses before connecting', { timeout: 60_000 }, () => {
  it('without a user, with a name that is not a localpart, without a password file, with one others may read', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mp-mas-user-'))
    const open = join(dir, 'pw')
    await writeFile(open, 'secret-pw\n')
    await chmod(open, 0o644)
    for (const [args, message] of [
      [['mas-user', '--inventory', 'x.yaml'], /mas-user needs --user NAME/],
      [['mas-user', '--inventory', 'x.yaml', '--user', 'Boss'], /--user Boss: not a Matrix localpart/],
      [['mas-user', '--inventory', 'x.yaml', '--user', 'boss', '--admin'], /needs --password-file FILE \(mode 600\)/],
      [
        ['mas-user', '--inventory', 'x.yaml', '--user', 'boss', '--password-file', open],
        /may be read by others \(mode 644\): chmod 600 it/,
      ],
    ] as const) {
      const r = await runCli([...args])
      expect(r.code, cliOutput(r)).toBe(2)
      expect(r.stderr).toMatch(message)
      expect(r.stderr).not.toContain('secret-pw')
    }
  })
})
