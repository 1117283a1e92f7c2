import { readFileSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { cliOutput, runCli } from '../support/cli.js'

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }

/** The built launcher without any host: what a user sees before the first inventory. */
// Each case starts node (~0.3 s idle, seconds on a loaded 2-core machine): generous timeouts.
describe('bin/provision.js', { timeout: 30_000 }, () => {
  it('--help prints the usage with every subcommand and exits 0', async () => {
    const r = await runCli(['--help'])
    expect(r.code, cliOutput(r)).toBe(0)
    for (const word of ['apply', 'check', 'unlock', 'schema', 'sandbox', '--log-file', 'Exit codes']) expect(r.stdout).toContain(word)
    expect(r.stderr).toBe('')
  })

  it('--version prints the package version', async () => {
    const r = await runCli(['--version'])
    expect(r.code, cliOutput(r)).toBe(0)
    expect(r.stdout.trim()).toBe(pkg.version)
  })

  it('schema prints a JSON Schema', async () => {
    const r = await runCli(['schema'])
    expect(r.code, cliOutput(r)).toBe(0)
    expect(JSON.parse(r.stdout)).toMatchObject({ type: 'object' })
  })

  it('an unknown flag is bad usage: exit 2, one line, no stack trace', async () => {
    const r = await runCli(['--no-such-flag'])
    expect(r.code, cliOutput(r)).toBe(2)
    expect(r.stderr).toContain("Unknown option '--no-such-flag'")
    expect(r.stderr).not.toMatch(/\n\s+at /)
  })
})

/** --log-file through the bundle, without a host: the host cannot be reached (no key, closed port) and the log says so. */
describe('bin/provision.js --log-file', { timeout: 60_000 }, () => {
  it('writes JSON lines from start to finish, alone and with --json, --verbose, --dry-run', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mp-cli-log-'))
    const port = await closedPort()
    const inventory = join(dir, 'inventory.yaml')
    await writeFile(
      inventory,
      `defaults:\n  vars: { serverName: example.test }\nhosts:\n  gone:\n    address: 127.0.0.1\n    ssh: { port: ${port}, connectTimeout: 5 }\n    roles: [redis]\n`,
    )
    try {
      for (const extra of [[], ['--json'], ['--verbose'], ['--dry-run']]) {
        const log = join(dir, `run-${extra.join('') || 'plain'}.log`)
        const r = await runCli(['--inventory', inventory, '--log-file', log, ...extra])
        expect(r.code, cliOutput(r)).toBe(1)
        expect(r.stderr).not.toContain('destination')
        const lines = (await readFile(log, 'utf8'))
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { msg: string; hosts?: { error?: string }[] })
        expect(lines[0]).toMatchObject({ msg: 'run started', hosts: ['gone'] })
        const finished = lines.find((l) => l.msg === 'run finished')
        expect(lines.map((l) => l.msg)).toContain(`connecting to root@127.0.0.1:${port}`)
        expect(finished?.hosts?.[0]?.error, JSON.stringify(lines)).toMatch(/\S/)
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}
