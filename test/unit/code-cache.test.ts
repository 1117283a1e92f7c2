/**
 * The bundle's launcher (scripts/code-cache-launcher.js): a V8 code cache may speed a run up, never change it.
 * V8 itself accepts a cache made for another source of the same length, so the launcher names the cache after the
 * bundle's SHA-256: an edited bundle compiles from its source.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

const launcher = readFileSync(new URL('../../scripts/code-cache-launcher.js', import.meta.url), 'utf8')

describe('the code cache launcher', () => {
  it('writes a cache, reuses it, and never runs a changed bundle from the old one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mp-code-cache-'))
    const cacheDir = join(dir, 'cache/matrix-provision/code-cache')
    writeFileSync(join(dir, 'run.mjs'), launcher.replaceAll('__MP_BUNDLE__', 'b.cjs'))
    const bundle = (word: string) =>
      writeFileSync(join(dir, 'b.cjs'), `function say() { return '${word}' }\nmodule.exports.said = say()\nprocess.stdout.write(say())\n`)
    const run = (...args: string[]) =>
      execFileSync(process.execPath, [join(dir, 'run.mjs'), ...args], {
        encoding: 'utf8',
        env: { ...process.env, XDG_CACHE_HOME: join(dir, 'cache') },
      })

    bundle('aaaa')
    expect(run('apply')).toBe('aaaa')
    const [first] = readdirSync(cacheDir)
    expect(first).toMatch(/^b\.cjs-apply-[0-9a-f]{40}\.bin$/)
    const written = statSync(join(cacheDir, first!)).mtimeMs
    expect(run('apply')).toBe('aaaa')
    expect(statSync(join(cacheDir, first!)).mtimeMs).toBe(written) // accepted: not written again

    bundle('bbbb') // the same length, another program
    expect(run('apply')).toBe('bbbb')
    expect(readdirSync(cacheDir)).toHaveLength(2)
    // Each verb, and --help, keeps its own cache; options first mean the default verb.
    run('--help')
    run('-i', 'x.yaml')
    expect(
      readdirSync(cacheDir)
        .map((f) => f.split('-')[1])
        .sort(),
    ).toEqual(['apply', 'apply', 'default', 'help'])
  })

  it('runs the bundle when the cache directory cannot be written', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mp-code-cache-'))
    writeFileSync(join(dir, 'run.mjs'), launcher.replaceAll('__MP_BUNDLE__', 'b.cjs'))
    writeFileSync(join(dir, 'b.cjs'), `process.stdout.write('ran')\n`)
    writeFileSync(join(dir, 'not-a-dir'), '')
    const out = execFileSync(process.execPath, [join(dir, 'run.mjs')], {
      encoding: 'utf8',
      env: { ...process.env, XDG_CACHE_HOME: join(dir, 'not-a-dir') },
    })
    expect(out).toBe('ran')
  })
})
