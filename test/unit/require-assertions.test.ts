/**
 * A test that asserts nothing fails: vitest.config.ts sets expect.requireAssertions for every project. Shown by
 * running vitest, with the repository's expect settings, on a temporary file holding one test without an expect.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import config from '../../vitest.config.js'

const root = fileURLToPath(new URL('../..', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'require-assertions-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('expect.requireAssertions', () => {
  it('is on for every project (set once at the top, inherited through extends: true)', () => {
    expect(config.test?.expect).toEqual({ requireAssertions: true })
    const projects = (config.test?.projects ?? []) as { extends?: boolean; test?: { expect?: unknown } }[]
    expect(projects.length).toBe(3)
    for (const p of projects) expect(p.extends === true && p.test?.expect === undefined, JSON.stringify(p.test)).toBe(true)
  })

  it('fails a test without an assertion and passes the same test with one', { timeout: 300_000 }, () => {
    // globals: the temporary directory has no node_modules to import vitest from.
    writeFileSync(
      join(dir, 'vitest.config.mjs'),
      `export default { test: { globals: true, include: ['*.test.mjs'], expect: ${JSON.stringify(config.test?.expect)} } }\n`,
    )
    writeFileSync(join(dir, 'silent.test.mjs'), `test('does something but checks nothing', () => { JSON.parse('{}') })\n`)
    writeFileSync(join(dir, 'checked.test.mjs'), `test('checks', () => { expect(JSON.parse('{}')).toEqual({}) })\n`)
    const vitest = (file: string) =>
      spawnSync(
        process.execPath,
        [join(root, 'node_modules/vitest/vitest.mjs'), 'run', '--root', dir, '--config', join(dir, 'vitest.config.mjs'), file],
        {
          encoding: 'utf8',
          env: { ...process.env, CI: '', NO_COLOR: '1' },
        },
      )
    const none = vitest('silent.test.mjs')
    expect(none.status, none.stdout + none.stderr).toBe(1)
    expect(none.stdout + none.stderr).toMatch(/expected any number of assertion, but got none/)
    const one = vitest('checked.test.mjs')
    expect(one.status, one.stdout + one.stderr).toBe(0)
  })
})
