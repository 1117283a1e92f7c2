/**
 * ESLint (eslint.config.js: typescript-eslint's type-checked rules) and Prettier (.prettierrc.json) hold for the
 * repository, in the unit project so that `npm test` and .ci/run enforce them; and each catches what it is for.
 */
import { fileURLToPath } from 'node:url'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { ESLint } from 'eslint'
import * as prettier from 'prettier'
import { describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('../..', import.meta.url))

/**
 * Problems found when the rules came in (issue 22 P5), listed by file and rule with their count, left for the package
 * that is rewriting the file at the same time. The test fails on any other problem and also when one of these is fixed
 * without being deleted here: the list only shrinks, and must empty.
 */
const PENDING: Record<string, Record<string, number>> = {}

type Counts = Record<string, Record<string, number>>

function countsOf(results: ESLint.LintResult[]): { counts: Counts; lines: string[] } {
  const counts: Counts = {}
  const lines: string[] = []
  for (const r of results) {
    const file = r.filePath.slice(root.length)
    for (const m of r.messages) {
      const rule = m.ruleId ?? 'parse-error'
      const byRule = (counts[file] ??= {})
      byRule[rule] = (byRule[rule] ?? 0) + 1
      lines.push(`${file}:${m.line}:${m.column} ${rule}: ${m.message}`)
    }
  }
  return { counts, lines }
}

describe('ESLint', () => {
  // Type-aware linting reads the whole program: ~20 s on a quiet machine, over a minute on the shared 2 cores.
  it('finds no problem in the repository but the pending ones', { timeout: 600_000 }, async () => {
    const eslint = new ESLint({ cwd: root })
    const results = await eslint.lintFiles(['.'])
    expect(results.length).toBeGreaterThan(200)
    const { counts, lines } = countsOf(results)
    // On a difference the message names it (file, rule, found against pending) and lists that file's problems.
    const differences: string[] = []
    for (const file of new Set([...Object.keys(counts), ...Object.keys(PENDING)])) {
      for (const rule of new Set([...Object.keys(counts[file] ?? {}), ...Object.keys(PENDING[file] ?? {})])) {
        const found = counts[file]?.[rule] ?? 0
        const pending = PENDING[file]?.[rule] ?? 0
        if (found !== pending) {
          differences.push(
            `${file} ${rule}: found ${found}, pending ${pending}${found < pending ? ' (fixed: lower or delete its PENDING entry)' : ''}`,
          )
          differences.push(...lines.filter((l) => l.startsWith(`${file}:`) && l.includes(` ${rule}: `)).map((l) => `  ${l}`))
        }
      }
    }
    expect(differences.join('\n')).toBe('')
    expect(counts).toEqual(PENDING)
  })

  it('fails on a floating promise in a task file', { timeout: 600_000 }, async () => {
    const eslint = new ESLint({ cwd: root })
    const file = join(root, 'src/core/quote.ts')
    const code = `${readFileSync(file, 'utf8')}\nexport function later(): Promise<void> {\n  return Promise.resolve()\n}\nexport function forgets(): void {\n  later()\n}\n`
    const [result] = await eslint.lintText(code, { filePath: file })
    expect(result?.messages.map((m) => m.ruleId)).toEqual(['@typescript-eslint/no-floating-promises'])
  })
})

/** The code Prettier formats (package.json's format script): .ts/.js/.mjs under these folders, minus .prettierignore's. */
const FORMATTED = ['src', 'tasks', 'test', 'bench', 'scripts']
const NOT_FORMATTED = ['test/fixtures/', 'bench/results/', 'bench/.work/']

function codeFiles(dir: string, found: string[] = []): string[] {
  for (const name of readdirSync(join(root, dir))) {
    const path = `${dir}/${name}`
    if (name.startsWith('.') || name === 'node_modules' || NOT_FORMATTED.some((p) => `${path}/`.startsWith(p))) continue
    if (statSync(join(root, path)).isDirectory()) codeFiles(path, found)
    else if (/\.(ts|js|mjs)$/.test(name)) found.push(path)
  }
  return found
}

describe('Prettier', () => {
  it('finds every code file formatted (npm run format writes them)', { timeout: 300_000 }, async () => {
    const files = FORMATTED.flatMap((d) => codeFiles(d))
    expect(files.length).toBeGreaterThan(200)
    const unformatted: string[] = []
    for (const file of files) {
      const options = await prettier.resolveConfig(join(root, file))
      if (!(await prettier.check(readFileSync(join(root, file), 'utf8'), { ...options, filepath: join(root, file) })))
        unformatted.push(file)
    }
    expect(unformatted).toEqual([])
  })

  it("uses the repository's style and reports code that differs from it", async () => {
    const filepath = join(root, 'src/core/quote.ts')
    const options = await prettier.resolveConfig(filepath)
    expect(options).toMatchObject({ semi: false, singleQuote: true, trailingComma: 'all', printWidth: 140 })
    expect(await prettier.check("export const a = 'x'\n", { ...options, filepath })).toBe(true)
    expect(await prettier.check('export const a = "x";\n', { ...options, filepath })).toBe(false)
  })
})
