/**
 * The corpus of malformed inventories: test/fixtures/bad-inventories/*.yaml. Each file starts with
 *
 *   # expect: <part of the message of an issue>
 *   # at: <line>:<col of that issue>
 *
 * and must be refused with an InventoryError that has such an issue, formatted as file:line:col
 * without any stack trace.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { formatIssues, InventoryError } from '../../src/inventory/errors.js'
import { loadInventory } from '../../src/inventory/load.js'

const corpus = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'bad-inventories')
const files = readdirSync(corpus)
  .filter((name) => name.endsWith('.yaml'))
  .sort()

function header(file: string): { fragment: string; line: number; col: number } {
  const [first = '', second = ''] = readFileSync(join(corpus, file), 'utf8').split('\n')
  const expectMatch = /^# expect: (.+)$/.exec(first)
  const atMatch = /^# at: (\d+):(\d+)$/.exec(second)
  if (!expectMatch || !atMatch) throw new Error(`${file}: the first two lines must be "# expect: ..." and "# at: line:col"`)
  return { fragment: expectMatch[1]!, line: Number(atMatch[1]), col: Number(atMatch[2]) }
}

describe('bad inventories corpus', () => {
  it('has at least 45 cases', () => {
    expect(files.length).toBeGreaterThanOrEqual(45)
  })

  it.each(files)('%s is refused with a positioned message', async (file) => {
    const { fragment, line, col } = header(file)
    const path = join(corpus, file)
    // An empty environment: no secret variable is set by accident.
    const error = await loadInventory(path, { HOME: '/home/tester' }).then(
      () => undefined,
      (thrown: unknown) => thrown,
    )
    expect(error, 'the inventory was accepted').toBeInstanceOf(InventoryError)
    const issues = (error as InventoryError).issues
    expect(issues.length).toBeGreaterThan(0)
    const matching = issues.filter((issue) => issue.message.includes(fragment))
    expect(
      matching.map((issue) => issue.message),
      `no issue says "${fragment}"`,
    ).not.toHaveLength(0)
    expect(
      matching.map((issue) => `${issue.line}:${issue.col}`),
      `issues saying "${fragment}" are not at ${line}:${col}`,
    ).toContain(`${line}:${col}`)

    const text = formatIssues(issues)
    expect(text).toContain(`${path}:${line}:${col}: `)
    expect(text).not.toContain('    at ')
    expect((error as Error).message).not.toContain('    at ')
    for (const issue of issues) {
      expect(issue.file).toBe(path)
      expect(issue.line).toBeGreaterThanOrEqual(1)
      expect(issue.col).toBeGreaterThanOrEqual(1)
      expect(issue.message.length).toBeGreaterThan(10)
    }
  })
})
