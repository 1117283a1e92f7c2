import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { cliOutput, runCli } from '../support/cli.js'

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }

/** The built launcher without any host: what a user sees before the first inventory. */
describe('bin/provision.js', () => {
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
