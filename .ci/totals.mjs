// Reads vitest's JUnit report and prints the closing lines of .ci/run: "skipped: N" and
// "N passed, N failed[, N skipped]". Exits 1 when a test failed or was skipped (CI runs every test:
// a skipped test is one that did not prove anything), 2 when the report is missing or unreadable.
//   node .ci/totals.mjs reports/junit.xml
import { readFileSync } from 'node:fs'

const file = process.argv[2] ?? 'reports/junit.xml'
let xml
try {
  xml = readFileSync(file, 'utf8')
} catch (error) {
  console.log(`no test report at ${file} (${error.code ?? error.message})`)
  console.log('0 passed, 1 failed')
  process.exit(2)
}
const head = xml.match(/<testsuites\b[^>]*>/)?.[0]
if (!head) {
  console.log(`${file} has no <testsuites> element`)
  console.log('0 passed, 1 failed')
  process.exit(2)
}
const attr = (tag, name) => Number(tag.match(new RegExp(`\\b${name}="(\\d+)"`))?.[1] ?? 0)
const [tests, failures, errors] = ['tests', 'failures', 'errors'].map((name) => attr(head, name))
// vitest puts `skipped` on each <testsuite>, not on <testsuites>: sum those, and count the <skipped/>
// test cases too, whichever is larger (reading only <testsuites> counted skipped tests as passed).
const suites = [...xml.matchAll(/<testsuite\b[^>]*>/g)].reduce((n, m) => n + attr(m[0], 'skipped'), 0)
const cases = [...xml.matchAll(/<testcase\b[^>]*>\s*<skipped\b/g)].length
const skipped = Math.max(suites, cases)
const failed = failures + errors
const passed = tests - failed - skipped
if (skipped > 0) {
  // Name them, so the log says what did not run.
  const names = [...xml.matchAll(/<testcase\b[^>]*\bname="([^"]*)"[^>]*>\s*<skipped\b/g)].map((m) => m[1])
  console.log(`FAILED: ${skipped} test(s) skipped; in CI every test must run:`)
  for (const n of names.slice(0, 20)) console.log(`  skipped: ${n}`)
}
console.log(`skipped: ${skipped}`)
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)
process.exit(failed > 0 || skipped > 0 || tests === 0 ? 1 : 0)
