import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cliOutput, runCli } from '../support/cli.js'
import { writeBackupDir } from './fixtures/backup-dir.js'
import { SPREAD_ENV, spreadInventoryYaml } from './fixtures/spread-inventory.js'

/** backup/restore flags through the built launcher, with no host reachable: what is refused before any connection. */
describe('bin/provision.js backup and restore without a host', { timeout: 60_000 }, () => {
  let dir: string
  let inventory: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mp-cli-backup-'))
    inventory = join(dir, 'inventory.yaml')
    // Port 9 on loopback: nothing listens; none of these cases may try to connect anyway.
    await writeFile(
      inventory,
      `defaults:\n  vars: { serverName: example.test }\nhosts:\n  hs:\n    address: 127.0.0.1\n    ssh: { port: 9, connectTimeout: 2 }\n    roles: [apt-keyring, postgres, redis, synapse]\n  db:\n    address: 127.0.0.2\n    ssh: { port: 9, connectTimeout: 2 }\n    roles: [redis]\n`,
    )
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

  it("a homeserver spread over hosts: backup takes the media from the media repository's host; restore of a backup whose key is not the inventory's synapse.signingKey is refused before any connection", async () => {
    const spread = join(dir, 'spread.yaml')
    await writeFile(spread, spreadInventoryYaml())
    const env = { ...process.env, ...SPREAD_ENV }
    const plan = await runCli(['backup', '--inventory', spread, '--to', join(dir, 'b'), '--dry-run'], { env })
    expect(plan.code, cliOutput(plan)).toBe(0)
    expect(plan.stdout).toContain(`hs: into ${join(dir, 'b')}/hs-<UTC time> (database dumped on hs, media from w1)`)
    // A backup of the same server signed with another key (its manifest is read before the files are checked).
    const backup = await writeBackupDir({
      in: dir,
      edit: (m) => {
        m.serverName = 'example.test'
        m.signingKey = { id: 'ed25519:a_other', publicKey: 'b3RoZXI' }
      },
    })
    const restore = await runCli(['restore', '--inventory', spread, '--limit', 'hs', '--from', backup], { env })
    expect(restore.code, cliOutput(restore)).toBe(2)
    expect(restore.stdout + restore.stderr).toMatch(
      /the inventory sets synapse\.signingKey to ed25519:a_x \S+, the backup's key is ed25519:a_other b3RoZXI: the server's identity belongs to its data; set synapse\.signingKey to the backup's key/,
    )
    expect(restore.stderr).not.toContain('connecting')
  })
})
