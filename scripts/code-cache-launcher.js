// Runs the CommonJS bundle beside it (__MP_BUNDLE__, written by scripts/bundle.js) with a V8 code cache: V8
// then reads the compiled code of the bundle's functions instead of parsing and compiling 2 MB of source on
// every run. The cache lives in the user's cache directory, under a name made of the bundle's SHA-256 and
// Node's version and architecture, so a changed bundle or another Node never reads an old cache (V8 checks its
// own version, flags and the source's length on top, and compiles from source when the cache does not fit).
// Anything wrong with the cache (unreadable, unwritable, rejected) costs only the time it would have saved.
import { isAscii } from 'node:buffer'
import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Script, constants } from 'node:vm'

const file = fileURLToPath(new URL('./__MP_BUNDLE__', import.meta.url))
const bytes = readFileSync(file)
// An ASCII source becomes a one-byte string, which V8 hashes, reads and scans faster (scripts/bundle.js escapes what it can).
const source = isAscii(bytes) ? bytes.toString('latin1') : bytes.toString('utf8')
// One cache per verb (the first argument when it is a word; options first mean the default verb), and one for
// --help and --version: each holds the code its runs compiled.
const args = process.argv.slice(2)
const variant = args.some((a) => a === '--help' || a === '-h' || a === '--version')
  ? 'help'
  : /^[a-z][a-z-]{0,30}$/.test(args[0] ?? '')
    ? args[0]
    : 'default'
const hash = createHash('sha256').update(bytes).update(`\0${process.version}\0${process.arch}`).digest('hex').slice(0, 40)
const cacheFile = join(
  process.env.XDG_CACHE_HOME || join(homedir(), '.cache'),
  'matrix-provision',
  'code-cache',
  `__MP_BUNDLE__-${variant}-${hash}.bin`,
)
let cachedData
try {
  cachedData = readFileSync(cacheFile)
} catch {
  cachedData = undefined // none yet (or unreadable): compile from source, and write one at exit
}
const script = new Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {
  filename: file,
  cachedData,
  importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
})
if (cachedData === undefined || script.cachedDataRejected)
  // At exit, so the cache holds every function the run compiled, not only the top level.
  process.once('exit', () => {
    try {
      mkdirSync(dirname(cacheFile), { recursive: true })
      const tmp = `${cacheFile}.${process.pid}.tmp`
      writeFileSync(tmp, script.createCachedData())
      renameSync(tmp, cacheFile) // atomic: a concurrent run reads a whole cache or none
      // Each rebuild names a new cache: keep this one and the three newest of other builds (other checkouts).
      const dir = dirname(cacheFile)
      const prefix = `__MP_BUNDLE__-${variant}-`
      readdirSync(dir)
        .filter((f) => f.startsWith(prefix) && f.endsWith('.bin') && join(dir, f) !== cacheFile)
        .map((f) => ({ f, t: statSync(join(dir, f)).mtimeMs }))
        .sort((a, b) => b.t - a.t)
        .slice(3)
        .forEach(({ f }) => rmSync(join(dir, f), { force: true }))
    } catch {
      // a read-only or full cache directory: the next run compiles from source again
    }
  })
const module = { exports: {} }
script.runInThisContext()(module.exports, createRequire(file), module, file, dirname(file))
export default module.exports
