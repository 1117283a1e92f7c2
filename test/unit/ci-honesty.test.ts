import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { skipReasonWithoutChromium } from '../support/browser.js'
import { isCI, skipReasonWithoutDocker } from '../support/ci.js'

const run = promisify(execFile)
const totals = fileURLToPath(new URL('../../.ci/totals.mjs', import.meta.url))

describe('what counts as CI (test setup and vitest.config.ts share isCI)', () => {
  it('CI=true, CI=1 or any other value is CI; unset, empty and "false" are not', () => {
    for (const v of ['true', '1', 'yes', 'TRUE']) expect(isCI({ CI: v }), v).toBe(true)
    for (const v of [undefined, '', 'false', 'False']) expect(isCI({ CI: v }), String(v)).toBe(false)
  })

  it('without Docker, container tests fail the run under CI=1 (they skipped quietly before) and skip with a reason outside CI', () => {
    expect(() => skipReasonWithoutDocker({ CI: '1' })).toThrow(/CI=1 and no Docker engine answers.*must run in CI/)
    expect(() => skipReasonWithoutDocker({ CI: 'true' })).toThrow(/must run in CI/)
    expect(skipReasonWithoutDocker({})).toMatch(/no Docker engine answers/)
  })

  it('without chromium, the browser tests fail the run under CI and skip with a reason outside CI; CHROMIUM names another path', () => {
    const none = () => false
    expect(() => skipReasonWithoutChromium({ CI: 'true' }, none)).toThrow(/CI=true and no chromium at \/usr\/bin\/chromium.*must run in CI/)
    expect(skipReasonWithoutChromium({}, none)).toMatch(/no chromium at \/usr\/bin\/chromium \(apt-get install chromium/)
    expect(skipReasonWithoutChromium({ CI: 'true', CHROMIUM: '/opt/c' }, (p) => p === '/opt/c')).toBeUndefined()
    expect(() => skipReasonWithoutChromium({ CI: '1', CHROMIUM: '/opt/c' }, (p) => p === '/usr/bin/chromium')).toThrow(
      /no chromium at \/opt\/c/,
    )
  })
})

describe('.ci/totals.mjs (the closing lines of .ci/run)', () => {
  let dir: string
  beforeAll(async () => void (dir = await mkdtemp(join(tmpdir(), 'mp-totals-'))))
  afterAll(async () => rm(dir, { recursive: true, force: true }))

  // The shape vitest 4 writes: `skipped` only on each <testsuite>, never on <testsuites>.
  const junit = (tests: number, failures: number, skipped: number, body = '') =>
    `<?xml version="1.0" encoding="UTF-8" ?>\n<testsuites name="vitest tests" tests="${tests}" failures="${failures}" errors="0" time="1.0">\n` +
    `<testsuite name="test/x.test.ts" tests="${tests}" failures="${failures}" errors="0" skipped="${skipped}" time="1.0">\n${body}</testsuite>\n</testsuites>\n`
  async function totalsOf(xml: string | undefined): Promise<{ code: number; stdout: string }> {
    const file = join(dir, `junit-${Math.random().toString(36).slice(2)}.xml`)
    if (xml !== undefined) await writeFile(file, xml)
    return run(process.execPath, [totals, file]).then(
      (r) => ({ code: 0, stdout: r.stdout }),
      (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
    )
  }

  it('all passed: exit 0 and the plain closing line', async () => {
    const r = await totalsOf(junit(12, 0, 0))
    expect(r.code).toBe(0)
    expect(r.stdout.trim().split('\n').at(-1)).toBe('12 passed, 0 failed')
  })

  it('a skipped test fails the run and is named', async () => {
    const body = '<testcase classname="test/e2e/x.test.ts" name="runs on a host" time="0">\n  <skipped/>\n</testcase>\n'
    const r = await totalsOf(junit(12, 0, 1, body))
    expect(r.code).toBe(1)
    expect(r.stdout).toContain('skipped: runs on a host')
    expect(r.stdout.trim().split('\n').at(-1)).toBe('11 passed, 0 failed, 1 skipped')
  })

  it('a failed test fails the run', async () => {
    const r = await totalsOf(junit(12, 2, 0))
    expect(r.code).toBe(1)
    expect(r.stdout.trim().split('\n').at(-1)).toBe('10 passed, 2 failed')
  })

  it('no report, or no test at all, fails the run', async () => {
    expect((await totalsOf(undefined)).code).toBe(2)
    expect((await totalsOf(junit(0, 0, 0))).code).toBe(1)
  })
})
