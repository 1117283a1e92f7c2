import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { cliOutput, runCli } from '../support/cli.js'

const testRoot = fileURLToPath(new URL('..', import.meta.url))

/** Test files that run the built launcher: through test/support/cli.js (runCli, BIN), or bin/provision.js joined by hand. */
function binTestFiles(): { file: string; text: string }[] {
  const files: { file: string; text: string }[] = []
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.test.ts') && entry.name !== 'cli-coverage.test.ts') {
        const text = readFileSync(path, 'utf8')
        if (/support\/cli\.js|provision\.js'/.test(text)) files.push({ file: relative(testRoot, path), text })
      }
    }
  }
  walk(testRoot)
  return files
}

/**
 * A guard for "every documented flag and subcommand is exercised through bin/provision.js": each long
 * option and each subcommand that `--help` prints must appear, as a quoted argument, in a test file
 * that runs the bundle. A new flag without such a test fails here, naming it.
 */
describe('every flag and subcommand of --help is used by a test that runs bin/provision.js', { timeout: 30_000 }, () => {
  it('finds each one in an argument list of a bin test', async () => {
    const help = await runCli(['--help'])
    expect(help.code, cliOutput(help)).toBe(0)
    const flags = [...new Set(help.stdout.match(/(?<![\w-])--[a-z][a-z-]*/g) ?? [])]
    const subcommands = [...new Set([...help.stdout.matchAll(/^ {2}provision (?:\[(\w+)\]|(\w+))/gm)].map((m) => m[1] ?? m[2]!))]
    // What --help lists today; the guard must not pass by finding nothing.
    expect(flags).toEqual(
      expect.arrayContaining([
        '--inventory',
        '--dry-run',
        '--log-file',
        '--force',
        '--holder',
        '--encrypt-to',
        '--synapse-version',
        '--down',
      ]),
    )
    expect(subcommands).toEqual(
      expect.arrayContaining(['apply', 'check', 'adopt', 'unlock', 'status', 'lock', 'backup', 'restore', 'rollback', 'schema', 'sandbox']),
    )
    const files = binTestFiles()
    const usedIn = (word: string) => files.filter((f) => f.text.includes(`'${word}'`) || f.text.includes(`"${word}"`)).map((f) => f.file)
    const missing = [...flags, ...subcommands].filter((word) => usedIn(word).length === 0)
    expect(missing, `not exercised through bin/provision.js by any test: ${missing.join(', ')}`).toEqual([])
  })
})
