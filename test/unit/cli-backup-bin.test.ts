import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cliOutput, runCli } from '../support/cli.js'

/** backup/restore flags through the built launcher, with no host reachable: what is refused before any connection. */
describe('bin/provision.js backup and restore without a host', { timeout: 60_000 }, () => {
  let dir: string
  let inventory: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mp-cli-backup-'))
    inventory = join(dir, 'inventory.yaml')
    // Port 9 on loopback: nothing listens; none of these cases may try to connect anyway.
    await writeFile(inventory, `defaults:\n  vars: { serverName: example.test }\nhosts:\n  hs:\n    address: 127.0.0.1\n    ssh: { port: 9, connectTimeout: 2 }\n    roles: [postgres, redis, synapse]\n  db:\n    address: 127.0.0.2\n    ssh: { port: 9, connectTimeout: 2 }\n    roles: [redis]\n`)
  })
  afterAll(() => rm(dir, { recursive: true, force: true }))

  it('backup --dry-run lists what each homeserver backup takes, reads nothing and writes nothing', async () => {
    const r = await runCli(['backup', '--inventory', inventory, '--to', join(dir, 'b'), '--dry-run'])
    expect(r.code, cliOutput(r)).toBe(0)
    expect(r.stdout).toContain(`hs: into ${join(dir, 'b')}/hs-<UTC time> (database dumped on hs)`)
    for (const f of ['database.dump', 'media.tar', 'signing.key', 'secrets.tar', 'config.tar']) expect(r.stdout).toContain(f)
    expect(r.stdout).not.toContain('db:')
  })

  it('bad usage is exit 2 with what to do, before any connection', async () => {
    const cases: [string[], RegExp][] = [
      [['restore', '--inventory', inventory, '--limit', 'hs'], /restore needs --from DIR/],
      [['restore', '--inventory', inventory, '--from', dir], /restore needs --limit HOST naming one homeserver \(hs\)/],
      [['backup', '--inventory', inventory, '--from', dir], /backup takes --to and --encrypt-to/],
      [['backup', '--inventory', inventory, '--limit', 'db'], /backup: no host with the synapse role among db/],
      [['backup', '--inventory', inventory, '--encrypt-to', 'not-a-key'], /--encrypt-to not-a-key: not an age recipient/],
      [['restore', '--inventory', inventory, '--limit', 'hs', '--from', join(dir, 'missing')], /--from .*missing: no such directory/],
      [['restore', '--inventory', inventory, '--limit', 'hs', '--from', dir], /no manifest\.json here nor in a subdirectory/],
    ]
    for (const [args, message] of cases) {
      const r = await runCli(args)
      expect(r.code, `${args.join(' ')}: ${cliOutput(r)}`).toBe(2)
      expect(r.stdout + r.stderr, args.join(' ')).toMatch(message)
      expect(r.stderr).not.toMatch(/\n\s+at /)
      expect(r.stderr).not.toContain('connecting')
    }
  })
})
