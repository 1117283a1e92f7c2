import { execFile } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)
const root = fileURLToPath(new URL('../../', import.meta.url))
const bundle = join(root, 'dist/cli/cli.js')
/** What the bundle is built from (scripts/bundle.js, tsconfig.build.json). */
const inputs = [
  'src',
  'tasks',
  'scripts/bundle.js',
  'scripts/code-cache-launcher.js',
  'tsconfig.json',
  'tsconfig.build.json',
  'package.json',
  'package-lock.json',
]

function newestMtime(path: string): number {
  const st = statSync(path, { throwIfNoEntry: false })
  if (!st) return 0
  if (!st.isDirectory()) return st.mtimeMs
  return Math.max(0, ...readdirSync(path).map((e) => newestMtime(join(path, e))))
}

/**
 * Global setup of every test project: tests run bin/provision.js, which loads the bundle in dist/cli/, so
 * a bundle older than its sources would test yesterday's code. Rebuild it then (`npm run build`, ~15 s).
 */
export default async function setup(): Promise<void> {
  const built = statSync(bundle, { throwIfNoEntry: false })?.mtimeMs ?? 0
  const source = Math.max(...inputs.map((p) => newestMtime(join(root, p))))
  if (built >= source) return
  console.warn(
    built
      ? '\nbin/provision.js: dist/cli/ is older than its sources; rebuilding (npm run build)'
      : '\nbin/provision.js: dist/cli/ missing; building (npm run build)',
  )
  try {
    await run('npm', ['run', 'build'], { cwd: root, maxBuffer: 1 << 24 })
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; message: string }
    throw new Error(`npm run build failed, so bin/provision.js cannot be tested:\n${e.stdout ?? ''}${e.stderr ?? e.message}`, {
      cause: error,
    })
  }
}
