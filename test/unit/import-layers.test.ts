/**
 * The layer rule (docs/architecture.md, scripts/import-layers.mjs) holds for the repository, and the
 * checker catches what it is for: an upward import, a cycle, a sideways import, a file that grows.
 */
import { appendFileSync, cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { afterAll, describe, expect, it } from 'vitest'
import { BIG_CEILINGS, check, importsOf } from '../../scripts/import-layers.mjs'

const root = fileURLToPath(new URL('../..', import.meta.url))

/**
 * Violations other packages of issue 22 are removing right now, listed one by one: the test fails on a
 * new violation and also when one of these is fixed without being deleted here (the list must empty).
 */
const PENDING = {
  fileCycles: [],
  folderCycles: [],
  upward: [],
}

const copies: string[] = []
afterAll(() => {
  for (const dir of copies) rmSync(dir, { recursive: true, force: true })
})

/** src/ and tasks/ copied to a temporary directory, to break on purpose. */
function copyOfTree(): string {
  const dir = mkdtempSync(join(tmpdir(), 'import-layers-'))
  copies.push(dir)
  for (const top of ['src', 'tasks']) cpSync(join(root, top), join(dir, top), { recursive: true })
  return dir
}

describe('the layers of the repository', () => {
  const report = check(root)

  it('has no cycle, no upward or sideways import, no unranked file, no file over its ceiling (but the pending ones)', () => {
    expect(report.files).toBeGreaterThan(100)
    expect(report.fileCycles).toEqual(PENDING.fileCycles)
    expect(report.folderCycles).toEqual(PENDING.folderCycles)
    expect(report.upward).toEqual(PENDING.upward)
    expect(report.sideways).toEqual([])
    expect(report.unranked).toEqual([])
    expect(report.big).toEqual([])
  })

  it('finds every import TypeScript finds (import type, export … from, import()), in every file', () => {
    const files: string[] = []
    const walk = (d: string) => {
      for (const n of readdirSync(d)) {
        const p = join(d, n)
        if (statSync(p).isDirectory()) walk(p)
        else if (p.endsWith('.ts')) files.push(p)
      }
    }
    walk(join(root, 'src'))
    walk(join(root, 'tasks'))
    const differ: string[] = []
    for (const f of files) {
      const text = readFileSync(f, 'utf8')
      const ours = [...new Set(importsOf(text))].sort()
      const theirs = [
        ...new Set(
          ts
            .preProcessFile(text, true, true)
            .importedFiles.map((i) => i.fileName)
            .filter((s) => s.startsWith('.')),
        ),
      ].sort()
      if (JSON.stringify(ours) !== JSON.stringify(theirs))
        differ.push(`${relative(root, f)}: ${ours.join(' ')} | typescript: ${theirs.join(' ')}`)
    }
    expect(files.length).toBe(report.files)
    expect(differ).toEqual([])
  })
})

describe('the checker', () => {
  it('reports an upward import: the engine importing the tasks', () => {
    const dir = copyOfTree()
    appendFileSync(join(dir, 'src/engine/run.ts'), "\nimport '../../tasks/index.js'\n")
    const r = check(dir)
    expect(r.upward).toEqual([...PENDING.upward, 'src/engine/run.ts -> tasks/index.ts'].sort())
    // The tasks import the engine: a folder cycle as well.
    expect(r.folderCycles.some((c) => c.includes('src/engine') && c.includes('tasks/index.ts'))).toBe(true)
  })

  it('reports a file cycle, through a type import too', () => {
    const dir = copyOfTree()
    appendFileSync(join(dir, 'src/commands/io.ts'), "\nimport type {} from '../cli.js'\n")
    const r = check(dir)
    expect(r.fileCycles).toHaveLength(PENDING.fileCycles.length + 1)
    expect(r.fileCycles).toContainEqual(expect.arrayContaining(['src/cli.ts', 'src/commands/io.ts']))
    expect(r.upward).toContain('src/commands/io.ts -> src/cli.ts')
  })

  it('reports a sideways import: one verb importing another', () => {
    const dir = copyOfTree()
    appendFileSync(join(dir, 'src/commands/status/read-status.ts'), "\nexport type { Manifest } from '../backup/manifest.js'\n")
    const r = check(dir)
    expect(r.sideways).toEqual(['src/commands/status/read-status.ts -> src/commands/backup/manifest.ts'])
  })

  it('reports a file that grows past its ceiling, and a ceiling no file needs any more', () => {
    const dir = copyOfTree()
    // A small file made big: over the limit, then over a ceiling of its own.
    const file = 'src/core/quote.ts'
    expect(BIG_CEILINGS).not.toHaveProperty([file])
    appendFileSync(join(dir, file), '//\n'.repeat(400))
    const lines = readFileSync(join(dir, file), 'utf8').split('\n').length - 1
    expect(check(dir).big).toContain(`${file}: ${lines} lines (at most 400)`)
    appendFileSync(join(dir, file), '\n// two lines more than the ceiling allows\n')
    expect(check(dir, { ceilings: { ...BIG_CEILINGS, [file]: lines } }).big).toContain(`${file}: ${lines + 2} lines (at most ${lines})`)
    const stale = check(root, { ceilings: { ...BIG_CEILINGS, 'src/cli.ts': 5000 } })
    expect(stale.big).toEqual([expect.stringMatching(/^src\/cli\.ts: listed with a ceiling of 5000 lines but has \d+: delete its entry/)])
  })
})
