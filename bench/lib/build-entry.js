// The matrix-provision bench entry: compiled by tsc (bench/tsconfig.json), then bundled as
// `npm run build` bundles the CLI (scripts/bundle.js), so the bench measures what users run.
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { bundle } from '../../scripts/bundle.js'

/** Returns the bundled entry's path: <work>/bundle/provision-bench.js */
export async function buildBenchEntry(root, work, say = () => undefined) {
  try {
    execFileSync(join(root, 'node_modules/.bin/tsc'), ['-p', join(root, 'bench/tsconfig.json')], { stdio: 'inherit' })
  } catch {
    // Type errors elsewhere in src/ (work in progress) still emit JavaScript: measure what was emitted.
    if (!existsSync(join(work, 'build/bench/mp/provision-bench.js'))) throw new Error('the bench entry did not compile')
    say('tsc reported errors (above); the emitted JavaScript is used')
  }
  await bundle(join(work, 'build/bench/mp/provision-bench.js'), join(work, 'bundle'))
  return join(work, 'bundle/provision-bench.js')
}
